"""Preemption: SIGTERM (what Cloud TPU / GCE preemption and SLURM send before a kill) -> finish the current step,
save a checkpoint, wait for it to commit, exit 0. Multi-process runs agree on the step through jax's preemption
sync point (the coordination service propagates the notice and picks the first step every host can still reach)."""
import signal
import threading

import jax


class PreemptionWatch:
  """`reached(step)` is True at the step where the run should save and stop."""

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.requested = False
    self._previous = None
    if not self.multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)  # jax's service handles it in multi-process

  def _on_signal(self, signum, frame) -> None:
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Call once per step, on every process."""
    if self.multi:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def close(self) -> None:
    """Puts the previous SIGTERM handler back."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
