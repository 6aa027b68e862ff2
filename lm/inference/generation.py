"""Text in, text out for a loaded decoder run (lm.generate): prompts from flags or a file, a batch decoded together
(sampled, greedy or by beam search), or one prompt streamed piece by piece (not with beams)."""
import json
import os

from lm.data import seq2seq
from lm.errors import UsageError
from lm.inference import sampling as sampling_lib, seq2seq_decoding
from lm.models import registry
from lm.parallel import sharding
from lm.store import workdir as workdir_lib


def read_prompts(prompts: list[str], prompt_file: str | None) -> list[str]:
  """The given prompts followed by those of `prompt_file` (one per line, or a .jsonl of {"prompt": ...} rows);
  UsageError if there are none or the file is missing."""
  out = list(prompts)
  if prompt_file:
    if not os.path.isfile(prompt_file):
      raise UsageError(f'--prompt_file={prompt_file}: no such file')
    with open(prompt_file, encoding='utf-8') as f:
      lines = [line.rstrip('\n') for line in f if line.strip()]
    if prompt_file.endswith('.jsonl'):
      try:
        lines = [json.loads(line)['prompt'] for line in lines]
      except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f'--prompt_file={prompt_file}: each line must be {{"prompt": "..."}} ({e})') from e
    out += lines
  if not out:
    raise UsageError('give --prompt=TEXT (repeatable) or --prompt_file=FILE')
  return out


def load_decoder(workdir: str, step: int | None = None, best: bool = False, mesh: str = ''):
  """workdir.load, refusing an encoder-only model with one line."""
  run = workdir_lib.load(workdir, step, best=best, mesh=mesh)
  family = registry.get(run.config.model.type)
  if not family.causal and not family.encoder_decoder:
    raise UsageError(f'--workdir={workdir}: model.type={run.config.model.type!r} is an encoder and does not '
                     'generate text; use lm.fill_mask or lm.evaluate with it')
  return run


def _decoding_args(run, max_new_tokens: int, sampling, seed: int) -> dict:
  tok = run.tokenizer
  return dict(max_new_tokens=max_new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id, sampling=sampling, seed=seed,
              batch_multiple=sharding.data_parallel_size(run.mesh), rules=sharding.logical_rules(run.config.mesh))


def generate_texts(run, prompts: list[str], sampling, *, max_new_tokens: int, seed: int = 0, use_cache: bool = True,
                   num_beams: int = 1, length_penalty: float = 1.0) -> tuple[list[str], int]:
  """(each prompt + continuation as text, number of new tokens) for a batch of text prompts; num_beams > 1 is beam
  search (sampling.temperature must be 0). Call it under `jax.set_mesh(run.mesh)`."""
  tok = run.tokenizer
  if is_seq2seq(run):  # the prompt is the source (as the run's encoder read sources); the text is the output alone
    sources = [tok.encode(seq2seq.encoder_text(run.config.data, p)) + [tok.eos_id] for p in prompts]
    new = seq2seq_decoding.generate(run.model, run.params, sources, use_cache=use_cache, num_beams=num_beams,
                                    length_penalty=length_penalty,
                                    **_decoding_args(run, max_new_tokens, sampling, seed))
    return [tok.decode(n) for n in new], sum(len(n) for n in new)
  ids = [tok.encode_default(p) for p in prompts]
  new = sampling_lib.generate(run.model, run.params, ids, use_cache=use_cache, num_beams=num_beams,
                              length_penalty=length_penalty, **_decoding_args(run, max_new_tokens, sampling, seed))
  return [tok.decode(p + n) for p, n in zip(ids, new)], sum(len(n) for n in new)


def is_seq2seq(run) -> bool:
  """True for an encoder-decoder run: its prompts are sources and its output is a new text (no streaming)."""
  return registry.get(run.config.model.type).encoder_decoder


def stream_text(run, prompt: str, sampling, out, *, max_new_tokens: int, seed: int = 0) -> int:
  """Writes the prompt, then its continuation to `out` piece by piece as tokens arrive; returns the number of new
  tokens. Call it under `jax.set_mesh(run.mesh)`."""
  tok = run.tokenizer
  ids = tok.encode_default(prompt)
  tokens = sampling_lib.stream(run.model, run.params, ids, **_decoding_args(run, max_new_tokens, sampling, seed))
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
