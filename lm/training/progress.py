"""The progress line and throughput: step, loss, tokens/s, MFU, steps/s and ETA since the last report."""
import time

import jax

from lm.perf import flops


class Progress:
  """Formats the progress line: step, loss, tokens/s, MFU, steps/s and ETA since the last report."""

  def __init__(self, num_train_steps: int, start_step: int, tokens_per_step: int, flops_per_step: float):
    self.total, self.tokens_per_step, self.flops_per_step = num_train_steps, tokens_per_step, flops_per_step
    self.peak = flops.peak_flops_per_device() * jax.device_count()
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
