"""Generate text from a decoder or encoder-decoder workdir with the KV-cache decoder (lm/inference/generation.py,
sampling.py; seq2seq_decoding.py for t5, where the prompt is the source after the run's data.task_prefix and the
output is printed alone).

  python -m lm.generate --workdir=workdirs/gpt_tiny --prompt="def parse(" --max_new_tokens=64 \
      --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0

Several --prompt flags, or --prompt_file (one prompt per line; or a .jsonl file of {"prompt": ...} rows for prompts
with newlines), decode as one batch; each row gives the tokens it would give alone. One prompt streams its tokens as
they come (--nostream to print at the end). Same seed, same text. --temperature=0 is greedy.

  python -m lm.generate --workdir=workdirs/gpt_tiny --prompt="def parse(" --num_beams=4 --length_penalty=1.0

--num_beams > 1 is beam search as Hugging Face's generate(num_beams=...) does it (early_stopping=False): greedy
only (the default --temperature becomes 0; an explicit --temperature > 0 is an error), on the KV cache, printed at
the end (no streaming: the best beam is known only when the search ends).
"""
import sys
import time

from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a decoder or encoder-decoder run (lm.main or lm.convert).',
                                required=True)
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
_STREAM = flags.DEFINE_bool('stream', True, 'With one prompt (and no beams), print tokens as they are decoded.')
_CACHE = flags.DEFINE_bool('cache', True, 'Use the KV cache (--nocache re-runs the full sequence per token).')
_NUM_BEAMS = flags.DEFINE_integer('num_beams', 1, 'Beam search with this many beams (1 = greedy/sampling; > 1 = '
                                  'greedy beams, no streaming).')
_LENGTH_PENALTY = flags.DEFINE_float('length_penalty', 1.0, 'Beam search: a finished beam scores sum of log-probs / '
                                     'new tokens ** length_penalty (> 0 favours longer texts).')


def _temperature() -> float:
  """--temperature, except that beams (greedy only) make its default 0; an explicit value > 0 stays (and is refused
  by check_beams)."""
  if _NUM_BEAMS.value > 1 and not flags.FLAGS['temperature'].present:
    return 0.0
  return _TEMPERATURE.value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax

  from lm.errors import LmError
  from lm.inference import generation, sampling as sampling_lib
  try:
    prompts = generation.read_prompts(_PROMPT.value, _PROMPT_FILE.value)
    sampling = sampling_lib.Sampling(_temperature(), _TOP_K.value, _TOP_P.value).check()
    sampling_lib.check_beams(_NUM_BEAMS.value, sampling, _CACHE.value)
    run = generation.load_decoder(_WORKDIR.value, _STEP.value, _BEST.value, _MESH.value)
    start = time.perf_counter()
    with jax.set_mesh(run.mesh):
      streams = not generation.is_seq2seq(run) and _CACHE.value and _NUM_BEAMS.value == 1
      if len(prompts) == 1 and _STREAM.value and streams:
        count = generation.stream_text(run, prompts[0], sampling, sys.stdout, max_new_tokens=_MAX_NEW.value,
                                       seed=_SEED.value)
      else:
        texts, count = generation.generate_texts(run, prompts, sampling, max_new_tokens=_MAX_NEW.value,
                                                 seed=_SEED.value, use_cache=_CACHE.value, num_beams=_NUM_BEAMS.value,
                                                 length_penalty=_LENGTH_PENALTY.value)
        for index, text in enumerate(texts):
          print(f'--- prompt {index} ---\n{text}' if len(texts) > 1 else text, flush=True)
  except LmError as e:
    cli.fail(e)
  seconds = time.perf_counter() - start
  print(f'[{count} new tokens in {seconds:.1f}s (compile included), step {run.step} of {_WORKDIR.value}]',
        file=sys.stderr, flush=True)


def run():
  """Console entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
