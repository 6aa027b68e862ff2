"""Benchmarks, measured in one process after warm-up; the last line printed is one JSON object.

  python -m lm.bench --config=configs/gpt_tiny.py --mode=decode [--decode_tokens=256 --decode_batch=1]

--mode=decode: generation tokens/s of the config's decoder (freshly initialised parameters: speed does not depend on
their values) with the KV cache (lm/sampling.py) and without it (the whole sequence re-run for every token), for
--decode_batch prompts of --prompt_len tokens and --decode_tokens new tokens each (EOS does not stop the run), median
of --repeats timed runs after one compiling run. model.max_len grows to prompt_len + decode_tokens if needed.
"""
import json
import statistics
import time

from absl import app, flags
from ml_collections import config_flags

from lm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_tiny.py.',
                                          lock_config=True)
_MODE = flags.DEFINE_enum('mode', 'decode', ['decode'], 'What to measure.')
_DECODE_TOKENS = flags.DEFINE_integer('decode_tokens', 256, 'decode: new tokens per prompt.')
_DECODE_BATCH = flags.DEFINE_integer('decode_batch', 1, 'decode: prompts decoded together.')
_PROMPT_LEN = flags.DEFINE_integer('prompt_len', 16, 'decode: tokens per prompt.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs after the warm-up; the median is reported.')


def _timed(fn, repeats: int) -> tuple[float, float]:
  """(seconds of the first, compiling call, median seconds of `repeats` more calls) of fn()."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def decode(config, new_tokens: int, batch: int, prompt_len: int, repeats: int) -> dict:
  """Decode tokens/s with and without the KV cache, and the ratio."""
  import jax
  import numpy as np
  from lm import models, sampling
  if prompt_len + new_tokens > config.model.max_len:  # fresh parameters: a longer position table costs nothing
    print(f'model.max_len raised from {config.model.max_len} to {prompt_len + new_tokens} to fit the prompt and '
          'the new tokens', flush=True)
    config = config.copy_and_resolve_references()
    config.model.max_len = prompt_len + new_tokens
  model = models.build(config.model)
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), models.example_batch(config))['params'])()
  params = jax.tree.map(lambda x: x.unbox() if hasattr(x, 'unbox') else x, params,
                        is_leaf=lambda x: hasattr(x, 'unbox'))
  prompts = np.random.default_rng(0).integers(7, config.model.vocab_size, (batch, prompt_len)).tolist()
  out = {'decode_batch': batch, 'decode_tokens': new_tokens, 'prompt_len': prompt_len}
  for use_cache, key in ((True, 'decode_tokens_per_sec'), (False, 'decode_tokens_per_sec_no_cache')):
    run = lambda: sampling.generate(model, params, prompts, max_new_tokens=new_tokens, eos_id=-1, pad_id=0,
                                    use_cache=use_cache)
    first, seconds = _timed(run, repeats)
    out[key] = batch * new_tokens / seconds
    out[key.replace('tokens_per_sec', 'first_call_seconds')] = first
  out['decode_speedup'] = out['decode_tokens_per_sec'] / out['decode_tokens_per_sec_no_cache']
  return out


def _print_table(results: dict) -> None:
  width = max(len(k) for k in results)
  for key, value in results.items():
    shown = f'{value:,.2f}' if isinstance(value, float) else str(value)
    print(f'  {key:<{width}}  {shown}', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax
  from lm import config as config_lib, models
  config, _ = cli.loaded_config(_CONFIG)
  try:
    config_lib.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    if not models.CAUSAL[config.model.type]:
      raise config_lib.ConfigError(f'--mode=decode: model.type={config.model.type!r} does not generate text')
    results = decode(config, _DECODE_TOKENS.value, _DECODE_BATCH.value, _PROMPT_LEN.value, _REPEATS.value)
  except config_lib.ConfigError as e:
    cli.fail(e)
  results.update(mode=_MODE.value, device=str(jax.devices()[0].device_kind), num_devices=jax.device_count(),
                 jax_version=jax.__version__)
  print(f'lm.bench --mode={_MODE.value} ({config.model.type}, {config.model.num_layers} layers, '
        f'd_model {config.model.d_model}, vocab {config.model.vocab_size}):', flush=True)
  _print_table(results)
  print(json.dumps(results), flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
