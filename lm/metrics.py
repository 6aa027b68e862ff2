"""Metric writers (clu TensorBoard + logging, and metrics.jsonl), FLOP counting, MFU and the progress line."""
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
from clu import metric_writers

from lm import objectives

# Peak dense bf16 FLOP/s per chip, from the vendors' spec sheets. Matched against `device.device_kind` (lowercase,
# first substring hit). CPUs are measured instead (see `measured_cpu_flops`).
PEAK_FLOPS = (
    ('v6', 918e12), ('v5p', 459e12), ('v5 lite', 197e12), ('v5e', 197e12), ('tpu v5', 459e12), ('v4', 275e12),
    ('v3', 123e12),
    ('h200', 989e12), ('h100', 989e12), ('a100', 312e12), ('l4', 121e12), ('a10', 125e12),
)


def flops_per_token(config, num_params: int) -> float:
  """Training FLOPs per token of `config`, PaLM convention (Chowdhery et al. 2022, App. B): 6·N + 12·L·d·T.

  N counts the parameters whose matmuls run for every token: all except lookup tables (learned positions, token
  types, and the input token table when it is not tied; tied, the table counts once as the output projection).
  The attention term counts the full score and value matmuls (no causal discount, as PaLM and nanoGPT do; an
  encoder computes them all anyway). Forward + backward = 3x forward. For the BERT encoder the MLM head (transform
  + vocab projection) runs only on the max_predictions_per_seq gathered positions and the pooler/NSP head once per
  sequence, so they count with those fractions. Objectives with two views (contrastive) double it.
  """
  m, seq_len = config.model, config.seq_len
  lookups = (m.max_len if m.position == "learned" else 0) + m.type_vocab_size
  lookups += 0 if m.tie_embeddings else m.vocab_size
  n = num_params - lookups * m.d_model
  if m.type == 'bert':
    mlm_head = m.vocab_size * m.d_model + m.d_model * m.d_model  # tied projection + transform dense
    per_sequence = m.d_model * m.d_model + 2 * m.d_model  # pooler + NSP
    n -= mlm_head * (1 - config.data.max_predictions_per_seq / seq_len) + per_sequence * (1 - 1 / seq_len)
  flops = 6.0 * n + 12.0 * m.num_layers * m.d_model * seq_len
  views = max(objectives.OBJECTIVES[name].views for name in config.objectives)
  return flops * views


def matmul_flops(n: int, dtype: str = 'float32', repeats: int = 4, device=None) -> float:
  """FLOP/s of a jitted n×n @ n×n matmul in `dtype` on `device` (best of `repeats` timed calls after a warm-up)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def best_matmul_flops(dtype: str = 'float32', sizes: tuple[int, ...] = (1024, 2048, 4096), device=None,
                      repeats: int = 8) -> dict:
  """{'flops': the best FLOP/s over square matmuls of `sizes`, 'n': its size, 'by_size': {n: FLOP/s}}: the
  measured peak of one device in the training dtype, which lm.bench reports MFU against."""
  by_size = {n: matmul_flops(n, dtype, repeats, device) for n in sizes}
  n = max(by_size, key=by_size.get)
  return {'flops': by_size[n], 'n': n, 'by_size': by_size}


@functools.cache
def measured_cpu_flops() -> float:
  """FLOP/s of a jitted f32 1024×1024 matmul on this CPU: what training's MFU line is relative to on a CPU (a quick
  measure at start-up; lm.bench measures the best of larger sizes)."""
  return matmul_flops(1024, repeats=8)


def datasheet_peak_flops(device=None) -> float:
  """Dense bf16 FLOP/s of one accelerator from PEAK_FLOPS (0 for CPUs and unknown kinds)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return 0.0
  kind = device.device_kind.lower()
  return next((peak for key, peak in PEAK_FLOPS if key in kind), 0.0)


def peak_flops_per_device(device=None) -> float:
  """Peak FLOP/s of one device: from PEAK_FLOPS for accelerators, measured for CPUs (0 if unknown)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return measured_cpu_flops() / max(len(jax.local_devices()), 1)
  return datasheet_peak_flops(device)


METRICS_FILE = 'metrics.jsonl'  # in the workdir


def read_rows(workdir: str, up_to_step: float = math.inf) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl with step <= up_to_step (a torn last line is skipped)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if _step_of(line) is not None]
  return [row for row in rows if row['step'] <= up_to_step]


def _step_of(line: str) -> int | None:
  """The step of a metrics.jsonl line, or None for a line torn by a crash."""
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None


class JsonlWriter(metric_writers.MetricWriter):
  """metrics.jsonl: one line per step, `{"step": int, "<split>/<name>": float, ...}` (scalars only).

  Scalars of one step (train, eval, ...) are merged into one line, written when a later step arrives or on flush().
  """

  def __init__(self, path: str):
    self.path = path
    self._step, self._scalars = None, {}

  def truncate_after(self, step: int):
    """Drops lines of steps after `step` (written after the checkpoint a resume restarts from)."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [line for line in f if line.strip()]
    kept = [line for line in lines if (line_step := _step_of(line)) is not None and line_step <= step]
    if len(kept) != len(lines):
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(kept)
      os.replace(self.path + '.tmp', self.path)

  def write_scalars(self, step, scalars):
    if self._step is not None and int(step) != self._step:
      self.flush()
    self._step = int(step)
    self._scalars.update({k: float(v) for k, v in scalars.items()})

  def flush(self):
    if self._step is None:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': self._step, **self._scalars}) + '\n')
    self._step, self._scalars = None, {}

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def close(self):
    self.flush()


def create_writer(workdir: str, resume_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + logging + metrics.jsonl on process 0; logging only elsewhere. Forgets steps > resume_step."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  jsonl = JsonlWriter(os.path.join(workdir, METRICS_FILE))
  jsonl.truncate_after(resume_step)
  default = metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([default, jsonl])


class Progress:
  """Formats the progress line: step, loss, tokens/s, MFU, steps/s and ETA since the last report."""

  def __init__(self, num_train_steps: int, start_step: int, tokens_per_step: int, flops_per_step: float):
    self.total, self.tokens_per_step, self.flops_per_step = num_train_steps, tokens_per_step, flops_per_step
    self.peak = peak_flops_per_device() * jax.device_count()
    self.last_step, self.last_time = start_step, time.perf_counter()

  def restart_clock(self, step: int) -> None:
    """Excludes what just happened (compile, eval, checkpoint) from the next throughput figure."""
    self.last_step, self.last_time = step, time.perf_counter()

  def update(self, step: int) -> dict:
    """Throughput since the previous call: train/tokens_per_sec, train/steps_per_sec, train/mfu (%)."""
    now = time.perf_counter()
    steps_per_sec = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    out = {'train/steps_per_sec': steps_per_sec, 'train/tokens_per_sec': steps_per_sec * self.tokens_per_step}
    if self.peak:
      out['train/mfu'] = 100.0 * steps_per_sec * self.flops_per_step / self.peak
    return out

  def line(self, step: int, loss: float, rates: dict) -> str:
    eta = (self.total - step) / max(rates['train/steps_per_sec'], 1e-9)
    mfu = f" | MFU {rates['train/mfu']:.1f}%" if 'train/mfu' in rates else ''
    return (f'step {step:>{len(str(self.total))}}/{self.total} | loss {loss:.4f} | '
            f"{rates['train/tokens_per_sec']:,.0f} tok/s{mfu} | {rates['train/steps_per_sec']:.2f} steps/s | "
            f'ETA {_duration(eta)}')


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'
