"""Generate text from a decoder workdir with the KV-cache decoder of lm/sampling.py.

  python -m lm.generate --workdir=workdirs/gpt_tiny --prompt="def parse(" --max_new_tokens=64 \
      --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0

Several --prompt flags, or --prompt_file (one prompt per line; or a .jsonl file of {"prompt": ...} rows for prompts
with newlines), decode as one batch; each row gives the tokens it would give alone. One prompt streams its tokens as
they come (--nostream to print at the end). Same seed, same text. --temperature=0 is greedy.
"""
import json
import os
import sys
import time

from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a decoder run (lm.main or lm.convert).', required=True)
_PROMPT = flags.DEFINE_multi_string('prompt', [], 'Prompt text; repeat the flag for a batch.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'File of prompts: one per line, or .jsonl {"prompt": ...}.')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 64, 'Tokens generated per prompt at most (EOS stops earlier).')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely tokens only (0 = no limit).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling: the smallest set with this probability mass (1 = all).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed: the same seed gives the same text.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_BEST = flags.DEFINE_bool('best', False, 'Use the best checkpoint (<workdir>/best, see config.best_metric).')
_MESH = flags.DEFINE_string('mesh', '', 'data,fsdp,tensor mesh for the parameters, e.g. 1,1,8 (default: replicated).')
_STREAM = flags.DEFINE_bool('stream', True, 'With one prompt, print tokens as they are decoded.')
_CACHE = flags.DEFINE_bool('cache', True, 'Use the KV cache (--nocache re-runs the full sequence per token).')


def read_prompts(prompts: list[str], prompt_file: str | None) -> list[str]:
  """The --prompt texts followed by those of --prompt_file; ConfigError if there are none or the file is missing."""
  from lm.config import ConfigError
  out = list(prompts)
  if prompt_file:
    if not os.path.isfile(prompt_file):
      raise ConfigError(f'--prompt_file={prompt_file}: no such file')
    with open(prompt_file, encoding='utf-8') as f:
      lines = [line.rstrip('\n') for line in f if line.strip()]
    if prompt_file.endswith('.jsonl'):
      try:
        lines = [json.loads(line)['prompt'] for line in lines]
      except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f'--prompt_file={prompt_file}: each line must be {{"prompt": "..."}} ({e})') from e
    out += lines
  if not out:
    raise ConfigError('give --prompt=TEXT (repeatable) or --prompt_file=FILE')
  return out


def _stream_one(run, ids: list[int], sampling, out) -> int:
  """Prints the prompt, then its continuation piece by piece as tokens arrive; returns the number of new tokens."""
  from lm import sampling as sampling_lib
  tok = run.tokenizer
  tokens = sampling_lib.stream(run.model, run.params, ids, max_new_tokens=_MAX_NEW.value, eos_id=tok.eos_id,
                               pad_id=tok.pad_id, sampling=sampling, seed=_SEED.value,
                               batch_multiple=_data_parallel(run), rules=_rules(run))
  printed = tok.decode(ids)
  out.write(printed)
  out.flush()
  new = []
  for token in tokens:
    new.append(token)
    text = tok.decode(ids + new).rstrip('\ufffd')  # an incomplete UTF-8 sequence waits for its next bytes
    if text.startswith(printed):
      out.write(text[len(printed):])
      out.flush()
      printed = text
  out.write(tok.decode(ids + new)[len(printed):] + '\n')
  return len(new)


def _data_parallel(run) -> int:
  from lm import sharding
  return sharding.data_parallel_size(run.mesh)


def _rules(run) -> tuple:
  from lm import sharding
  return sharding.logical_rules(run.config.mesh)


def generate_texts(run, prompts: list[str], sampling, use_cache: bool = True) -> tuple[list[str], int]:
  """(each prompt + continuation as text, number of new tokens) for a batch of text prompts."""
  from lm import sampling as sampling_lib
  tok = run.tokenizer
  ids = [tok.encode_default(p) for p in prompts]
  new = sampling_lib.generate(run.model, run.params, ids, max_new_tokens=_MAX_NEW.value, eos_id=tok.eos_id,
                              pad_id=tok.pad_id, sampling=sampling, seed=_SEED.value, use_cache=use_cache,
                              batch_multiple=_data_parallel(run), rules=_rules(run))
  return [tok.decode(p + n) for p, n in zip(ids, new)], sum(len(n) for n in new)


def load_decoder(workdir: str, step, best: bool, mesh: str):
  """workdir.load, refusing an encoder with one line."""
  from lm import models, workdir as workdir_lib
  from lm.config import ConfigError
  run = workdir_lib.load(workdir, step, best=best, mesh=mesh)
  if not models.CAUSAL[run.config.model.type]:
    raise ConfigError(f'--workdir={workdir}: model.type={run.config.model.type!r} is an encoder and does not '
                      'generate text; use lm.fill_mask or lm.evaluate with it')
  return run


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax
  from lm import sampling as sampling_lib
  from lm.config import ConfigError
  from lm.data.errors import DataError
  try:
    prompts = read_prompts(_PROMPT.value, _PROMPT_FILE.value)
    sampling = sampling_lib.Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value).check()
    run = load_decoder(_WORKDIR.value, _STEP.value, _BEST.value, _MESH.value)
    start = time.perf_counter()
    with jax.set_mesh(run.mesh):
      if len(prompts) == 1 and _STREAM.value and _CACHE.value:
        count = _stream_one(run, run.tokenizer.encode_default(prompts[0]), sampling, sys.stdout)
      else:
        texts, count = generate_texts(run, prompts, sampling, use_cache=_CACHE.value)
        for index, text in enumerate(texts):
          print(f'--- prompt {index} ---\n{text}' if len(texts) > 1 else text, flush=True)
  except (ConfigError, DataError) as e:
    cli.fail(e)
  seconds = time.perf_counter() - start
  print(f'[{count} new tokens in {seconds:.1f}s (compile included), step {run.step} of {_WORKDIR.value}]',
        file=sys.stderr, flush=True)


if __name__ == '__main__':
  app.run(main)
