"""Metric writers: metrics.jsonl (one merged line per step, cut back to the restored step on resume), and clu's
TensorBoard + logging writers on process 0."""
import json
import math
import os

import jax
from clu import metric_writers

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
