"""Benchmarks, measured in one process after warm-up; prints a table, and the last line is one JSON object.

  python -m lm.bench --config=configs/gpt_small.py [--config.k=v ...] [--mode=train,data,decode] [--vs_torch]
  python -m lm.bench --config=configs/bench_gpt2.py:124m --vs_torch --mode=train

train: the real train step (lm/train.py: sharded init, jit with donation, the config's mesh, dtypes, remat, scan)
  on one real batch; after the compile (timed: compile_seconds) and --warmup_steps updates, --steps updates are timed
  one by one and the median gives tokens_per_sec. Model FLOPs follow PaLM: 6N + 12·L·d·T per token (N without
  lookup tables; metrics.flops_per_token); MFU is against the best square matmul measured in this run in the
  training dtype (peak_tflops), and on known accelerators also against the datasheet peak (mfu_datasheet).
data: tokens/s of the real input pipeline alone (grain iterator, tokenizer and token cache ready), and its ratio to
  the step's consumption (data_vs_step; it should be >= 10).
decode: causal models only; generation tokens/s with the KV cache and without it (sampling.generate).
--vs_torch: also a Hugging Face GPT2LMHeadModel step of the same shape (torch eager, AdamW, same batch), its steps
  interleaved with ours; prints torch_tokens_per_sec and speedup_vs_torch (needs requirements-test.txt).
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
_REPEATS = flags.DEFINE_integer('repeats', 3, 'decode: timed runs after the compiling one (the median).')


def train(config, local_batch: dict, steps: int, warmup: int, vs_torch: bool) -> dict:
  """Train-step throughput, compile seconds, MFU; with vs_torch the torch step's, measured interleaved."""
  from lm import measure
  step = measure.TrainStep(config, local_batch)
  runners = {'': step}
  if vs_torch:
    from lm import torch_gpt2
    runners['torch_'] = torch_gpt2.TorchGPT2Step(config, local_batch)
  times = {prefix: [] for prefix in runners}
  for prefix, run in runners.items():
    measure.timed(run, warmup)
  for _ in range(steps):  # alternate, so both see the same machine
    for prefix, run in runners.items():
      times[prefix].extend(measure.timed(run, 1)[1])
  tokens = config.batch_size * config.seq_len
  peaks = measure.peak(config)
  out = {'params': step.num_params, 'batch_tokens': tokens, 'flops_per_step': step.flops_per_step(),
         'compile_seconds': step.compile_seconds, 'loss_after': step.loss, **peaks}
  for prefix in runners:
    summary = measure.step_summary(times[prefix], tokens, prefix)
    out.update(summary)
    out.update({prefix + k: v for k, v in measure.utilisation(out['flops_per_step'], summary[f'{prefix}step_seconds'],
                                                              peaks).items()})
  if vs_torch:
    torch_step = runners['torch_']
    out.update(torch_step.versions, torch_num_threads=torch_step.num_threads, torch_loss_after=torch_step.loss,
               speedup_vs_torch=out['tokens_per_sec'] / out['torch_tokens_per_sec'])
  return out


def measure_all(config, modes: list[str]) -> dict:
  """Runs the requested measurements in order data (which also yields the train batch), train, decode."""
  from lm import measure, models
  out = {}
  if 'train' in modes or 'data' in modes:
    batches = measure.real_batches(config)
    first = next(batches)  # starts the read threads
    if 'data' in modes:
      out.update(measure.data_pipeline(batches, config, _DATA_BATCHES.value))
    if 'train' in modes:
      out.update(train(config, first, _STEPS.value, _WARMUP.value, _VS_TORCH.value))
    if 'data' in modes and 'train' in modes:
      out['data_vs_step'] = out['data_tokens_per_sec'] / out['tokens_per_sec']
  if 'decode' in modes and models.CAUSAL[config.model.type]:
    out.update(measure.decode(config, _DECODE_TOKENS.value, _DECODE_BATCH.value, _PROMPT_LEN.value, _REPEATS.value))
  return out


def _print_table(results: dict) -> None:
  width = max(len(k) for k in results)
  for key, value in results.items():
    if isinstance(value, float):
      shown = f'{value:,.4f}' if abs(value) < 10 else f'{value:,.1f}'
    else:
      shown = str(value)
    print(f'  {key:<{width}}  {shown}', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax
  from lm import config as config_lib, models
  from lm.data.errors import DataError
  config, _ = cli.loaded_config(_CONFIG)
  modes = list(dict.fromkeys(_MODE.value))
  try:
    config_lib.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    if modes == ['decode'] and not models.CAUSAL[config.model.type]:
      raise config_lib.ConfigError(f'--mode=decode: model.type={config.model.type!r} does not generate text')
    if _VS_TORCH.value:
      from lm import torch_gpt2
      torch_gpt2.check_comparable(config)
    results = measure_all(config, modes)
  except (config_lib.ConfigError, DataError) as e:
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


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
