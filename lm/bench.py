"""Benchmarks, measured in one process after warm-up; prints a table, and the last line is one JSON object.

  python -m lm.bench --config=configs/gpt_small.py [--config.k=v ...] [--mode=train,data,decode] [--vs_torch]
  python -m lm.bench --config=configs/bench_gpt2.py:124m --vs_torch --mode=train

train: the real train step (lm/training: sharded init, jit with donation, the config's mesh, dtypes, remat, scan)
  on one real batch; after the compile (timed: compile_seconds) and --warmup_steps updates, --steps updates are timed
  one by one and the median gives tokens_per_sec. Model FLOPs follow PaLM: 6N + 12·L·d·T per token (N without
  lookup tables; lm/perf/flops.py); MFU is against the best square matmul measured in this run in the
  training dtype (peak_tflops), and on known accelerators also against the datasheet peak (mfu_datasheet).
data: tokens/s of the real input pipeline alone (grain iterator, tokenizer and token cache ready), and its ratio to
  the step's consumption (data_vs_step; it should be >= 10).
decode: causal models only; generation tokens/s with the KV cache and without it (inference/sampling.py).
--vs_torch: also a Hugging Face GPT2LMHeadModel step of the same shape (torch eager, AdamW, same batch), its steps
  interleaved with ours; prints torch_tokens_per_sec and speedup_vs_torch (needs requirements-test.txt).
--compare key=value[,value...] (repeatable: every combination): an in-process A/B of the train step. Each variant
  (the config with that key set) is compiled in this process, their timed steps interleaved (with --vs_torch the
  torch step's too), and a table gives tokens/s, the ratio to the first variant, compile seconds, XLA's temp and
  argument memory and the loss after; the last line is the JSON of it. E.g.
    python -m lm.bench --config=configs/bench_gpt2.py:small --compare=model.loss_chunk_size=0,2048 --vs_torch
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags

from lm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_tiny.py.',
                                          lock_config=True)
_MODES = ('train', 'data', 'decode')
_MODE = flags.DEFINE_multi_enum('mode', list(_MODES), _MODES, 'What to measure (repeat the flag or give several).')
_STEPS = flags.DEFINE_integer('steps', 10, 'train: timed updates (the median is reported).')
_WARMUP = flags.DEFINE_integer('warmup_steps', 2, 'train: untimed updates after the compile.')
_DATA_BATCHES = flags.DEFINE_integer('data_batches', 50, 'data: batches timed.')
_VS_TORCH = flags.DEFINE_bool('vs_torch', False, 'train: also time an eager PyTorch GPT2LMHeadModel step.')
_DECODE_TOKENS = flags.DEFINE_integer('decode_tokens', 128, 'decode: new tokens per prompt.')
_DECODE_BATCH = flags.DEFINE_integer('decode_batch', 1, 'decode: prompts decoded together.')
_PROMPT_LEN = flags.DEFINE_integer('prompt_len', 16, 'decode: tokens per prompt.')
_COMPARE = flags.DEFINE_multi_string('compare', [], 'key=value[,value...]: time the train step of each value in '
                                     'this process, interleaved (repeat the flag for every combination).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'decode: timed runs after the compiling one (the median).')


def _print_table(results: dict) -> None:
  width = max(len(k) for k in results)
  for key, value in results.items():
    if isinstance(value, float):
      shown = f'{value:,.4f}' if abs(value) < 10 else f'{value:,.1f}'
    else:
      shown = str(value)
    print(f'  {key:<{width}}  {shown}', flush=True)


def _print_comparison(result: dict) -> None:
  columns = ('tokens_per_sec', 'ratio', 'speedup_vs_torch', 'step_seconds', 'compile_seconds', 'temp_gib',
             'argument_gib', 'loss_after')
  rows = result['variants']
  width = max(len(label) for label in rows)
  shown = [c for c in columns if any(c in figures for figures in rows.values())]
  print(f'  {"variant":<{width}}  ' + '  '.join(f'{c:>16}' for c in shown), flush=True)
  for label, figures in rows.items():
    cells = (f'{figures[c]:>16,.4f}' if c in figures else f'{"-":>16}' for c in shown)
    print(f'  {label:<{width}}  ' + '  '.join(cells), flush=True)
  if 'torch_tokens_per_sec' in result:
    print(f'  torch (eager GPT2LMHeadModel): {result["torch_tokens_per_sec"]:,.1f} tokens/s', flush=True)


def _compare(config, modes: list[str]) -> dict:
  """--compare: every variant's real batch (shared where the input does not change), then measure.compare."""
  import jax

  from lm.config import validation
  from lm.errors import UsageError
  from lm.perf import measure, variants
  if modes != list(_MODES) and modes != ['train']:
    raise UsageError('--compare times the train step: drop --mode (or give --mode=train)')
  configs = variants.parse(_COMPARE.value, config)
  for variant in configs.values():  # every refusal before any data or compile work
    validation.validate(variant, num_devices=jax.device_count(), process_count=jax.process_count())
  if _VS_TORCH.value:
    from lm.perf import torch_gpt2
    torch_gpt2.check_comparable(next(iter(configs.values())))
  batches, by_key = {}, {}
  for label, variant in configs.items():
    key = variants.batch_key(variant)
    if key not in by_key:
      by_key[key] = next(measure.real_batches(variant))
    batches[label] = by_key[key]
  return measure.compare(configs, batches, steps=_STEPS.value, warmup=_WARMUP.value, vs_torch=_VS_TORCH.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax

  from lm.config import validation
  from lm.errors import LmError, UsageError
  from lm.models import registry
  from lm.perf import measure
  config, _ = cli.loaded_config(_CONFIG)
  modes = list(dict.fromkeys(_MODE.value))
  if _COMPARE.value:
    try:
      result = _compare(config, modes)
    except LmError as e:
      cli.fail(e)
    result.update(device=str(jax.devices()[0].device_kind), jax_version=jax.__version__,
                  xla_flags=os.environ.get('XLA_FLAGS', ''), compare=_COMPARE.value)
    print(f'lm.bench --compare ({config.model.type}, {jax.devices()[0].device_kind}, median of {_STEPS.value} '
          'interleaved steps each):', flush=True)
    _print_comparison(result)
    print(json.dumps(result), flush=True)
    return
  try:
    validation.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    if modes == ['decode'] and not registry.get(config.model.type).causal:
      raise UsageError(f'--mode=decode: model.type={config.model.type!r} does not generate text')
    if _VS_TORCH.value:
      from lm.perf import torch_gpt2
      torch_gpt2.check_comparable(config)
    results = measure.measure_all(config, modes, steps=_STEPS.value, warmup=_WARMUP.value,
                                  data_batches=_DATA_BATCHES.value, vs_torch=_VS_TORCH.value,
                                  decode_tokens=_DECODE_TOKENS.value, decode_batch=_DECODE_BATCH.value,
                                  prompt_len=_PROMPT_LEN.value, repeats=_REPEATS.value)
  except LmError as e:
    cli.fail(e)
  m = config.model
  results.update(mode=','.join(modes), device=str(jax.devices()[0].device_kind), platform=jax.devices()[0].platform,
                 num_devices=jax.device_count(), jax_version=jax.__version__, dtype=m.dtype,
                 shape=f'L{m.num_layers}/d{m.d_model}/T{config.seq_len}/B{config.batch_size}/V{m.vocab_size}',
                 xla_flags=os.environ.get('XLA_FLAGS', ''))
  print(f'lm.bench ({m.type}, {results["shape"]}, {m.dtype}, {results["device"]} x{results["num_devices"]}):',
        flush=True)
  _print_table(results)
  print(json.dumps(results), flush=True)


def run():
  """Console entry point."""
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
