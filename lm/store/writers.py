"""Metric writers: metrics.jsonl (one merged line per step, cut back to the restored step on resume), and TensorBoard
+ logging on process 0: clu's TensorBoard writer for a local workdir, `EventsWriter` (through lm.store.paths) for gs://."""
import io
import json
import math
import os
import socket
import time

import jax
from clu import metric_writers
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.scalar import summary_v2
from tensorboard.summary.writer.record_writer import RecordWriter

from lm.store import paths

METRICS_FILE = 'metrics.jsonl'  # in the workdir


def read_rows(workdir: str, up_to_step: float = math.inf) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl with step <= up_to_step (a torn last line is skipped)."""
  path = paths.path(os.path.join(workdir, METRICS_FILE))
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if _step_of(line) is not None]
  return [row for row in rows if row['step'] <= up_to_step]


def _step_of(line: str) -> int | None:
  """The step of a metrics.jsonl line, or None for a line torn by a crash."""
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return None


class _ScalarsOnly(metric_writers.MetricWriter):
  """A MetricWriter that keeps scalars only: every other kind of summary is ignored."""

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


class JsonlWriter(_ScalarsOnly):
  """metrics.jsonl: one line per step, `{"step": int, "<split>/<name>": float, ...}` (scalars only).

  Scalars of one step (train, eval, ...) are merged into one line, written when a later step arrives or on flush():
  appended to a local file; on Cloud Storage (no appends) kept and uploaded whole on flush() (before every
  checkpoint, see training/hooks.Checkpoint) and close().
  """

  def __init__(self, path: str):
    self.path = path
    self._remote = paths.is_remote(path)
    self._lines: list[str] | None = None  # remote: the whole file, loaded on first use
    self._dirty = False
    self._step, self._scalars = None, {}

  def _existing_lines(self) -> list[str]:
    path = paths.path(self.path)
    return [line + '\n' for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

  def truncate_after(self, step: int):
    """Drops lines of steps after `step` (written after the checkpoint a resume restarts from)."""
    lines = self._existing_lines()
    kept = [line for line in lines if (line_step := _step_of(line)) is not None and line_step <= step]
    if self._remote:
      self._lines, self._dirty = kept, len(kept) != len(lines)
      self._upload()
    elif len(kept) != len(lines):
      with paths.atomic_output(self.path) as tmp:
        tmp.write_text(''.join(kept))

  def write_scalars(self, step, scalars):
    if self._step is not None and int(step) != self._step:
      self._emit()
    self._step = int(step)
    self._scalars.update({k: float(v) for k, v in scalars.items()})

  def _emit(self):
    """The pending step's line: appended locally, kept for the next upload remotely."""
    if self._step is None:
      return
    line = json.dumps({'step': self._step, **self._scalars}) + '\n'
    self._step, self._scalars = None, {}
    if not self._remote:
      with open(self.path, 'a') as f:
        f.write(line)
      return
    if self._lines is None:
      self._lines = self._existing_lines()
    self._lines.append(line)
    self._dirty = True

  def _upload(self):
    if self._remote and self._dirty:
      with paths.atomic_output(self.path) as tmp:
        tmp.write_text(''.join(self._lines))
      self._dirty = False

  def flush(self):
    self._emit()
    self._upload()

  def close(self):
    self.flush()


class EventsWriter(_ScalarsOnly):
  """TensorBoard scalars written through lm.store.paths (for gs:// workdirs, where TensorFlow's writer cannot be pointed
  at another endpoint): events are kept in memory and each flush() writes them as one new complete event file
  (`events.out.tfevents.<time>.<host>.<pid>.<n>`), which TensorBoard reads in name order like one growing file."""

  def __init__(self, logdir: str):
    self.logdir = logdir
    self._prefix = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}'
    self._count = 0
    self._records: list[bytes] = []

  def _event(self, **fields) -> None:
    self._records.append(event_pb2.Event(wall_time=time.time(), **fields).SerializeToString())

  def write_scalars(self, step, scalars):
    for name, value in scalars.items():
      self._event(step=int(step), summary=summary_v2.scalar_pb(name, float(value)))

  def flush(self):
    if not self._records:
      return
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    writer.write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2').SerializeToString())
    for record in self._records:
      writer.write(record)
    with paths.atomic_output(os.path.join(self.logdir, f'{self._prefix}.{self._count:06d}')) as tmp:
      tmp.write_bytes(buffer.getvalue())
    self._count, self._records = self._count + 1, []

  def close(self):
    self.flush()


def create_writer(workdir: str, resume_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + logging + metrics.jsonl on process 0; logging only elsewhere. Forgets steps > resume_step."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  jsonl = JsonlWriter(os.path.join(workdir, METRICS_FILE))
  jsonl.truncate_after(resume_step)
  if paths.is_remote(workdir):
    return metric_writers.MultiWriter([metric_writers.LoggingWriter(), EventsWriter(workdir), jsonl])
  default = metric_writers.create_default_writer(workdir, asynchronous=False)
  return metric_writers.MultiWriter([default, jsonl])
