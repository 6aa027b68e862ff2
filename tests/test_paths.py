"""lm/store/paths.py and what writes through it, on local folders and on gs:// (a real Cloud Storage API on 127.0.0.1,
the `gcs` fixture): atomic writes, metrics.jsonl and TensorBoard events, a token store read back by ranged reads,
and the one-line refusals of a scheme lm cannot write or a bucket it cannot reach (before anything is written)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from runs import REPO


def _gcs_fs():
  from etils import epath
  return epath.backend.fsspec_backend.fs('gs://bucket')


def test_atomic_output_local_and_gs_and_nothing_on_failure(gcs, tmp_path):
  from lm.store import paths
  for target in (str(tmp_path / 'sub' / 'a.txt'), f'{gcs}/paths-test/a.txt'):
    with paths.atomic_output(target) as tmp:
      tmp.write_text('one')
    with pytest.raises(RuntimeError), paths.atomic_output(target) as tmp:
      tmp.write_text('two, half written')
      raise RuntimeError('killed')
    assert paths.path(target).read_text() == 'one', target  # the failed write left the old content
  assert os.listdir(tmp_path / 'sub') == ['a.txt']  # no temporary left beside it
  assert paths.path(f'{gcs}/paths-test').is_dir() and not paths.is_remote(str(tmp_path))


def test_move_a_folder_on_gs_and_locally(gcs, tmp_path):
  """What Checkpointer.set_aside does with an unreadable checkpoint: the whole folder moves."""
  from lm.store import paths
  for root in (str(tmp_path), f'{gcs}/move-test'):
    for name in ('7/state/a', '7/state/d/b', '7/commit_success.txt'):
      with paths.atomic_output(f'{root}/checkpoints/{name}') as tmp:
        tmp.write_text(name)
    paths.move(f'{root}/checkpoints/7', f'{root}/checkpoints_unreadable/7')
    assert not paths.path(f'{root}/checkpoints/7').exists(), root
    assert paths.path(f'{root}/checkpoints_unreadable/7/state/d/b').read_text() == '7/state/d/b', root


def test_metrics_jsonl_on_gs_is_uploaded_on_flush_and_cut_back_on_resume(gcs):
  from lm.store import writers
  workdir = f'{gcs}/jsonl-test'
  writer = writers.JsonlWriter(f'{workdir}/metrics.jsonl')
  for step in (1, 2, 3):
    writer.write_scalars(step, {'train/loss': 1.0 / step})
  writer.flush()
  assert [r['step'] for r in writers.read_rows(workdir)] == [1, 2, 3]
  resumed = writers.JsonlWriter(f'{workdir}/metrics.jsonl')
  resumed.truncate_after(2)  # a resume from checkpoint 2 forgets step 3
  resumed.write_scalars(3, {'train/loss': 0.5})
  resumed.write_scalars(3, {'eval/loss': 0.7})
  resumed.close()
  assert writers.read_rows(workdir) == [{'step': 1, 'train/loss': 1.0}, {'step': 2, 'train/loss': 0.5},
                                        {'step': 3, 'train/loss': 0.5, 'eval/loss': 0.7}]


def test_events_writer_files_are_read_by_tensorboard(gcs, tmp_path):
  """One complete event file per flush; the files written to gs:// load in TensorBoard's own reader (copied here)
  as one run with every scalar, like the local ones."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  from lm.store import writers
  fs = _gcs_fs()
  for logdir in (str(tmp_path / 'local'), f'{gcs}/tb-test'):
    writer = writers.EventsWriter(logdir)
    writer.write_scalars(1, {'train/loss': 2.5, 'train/lr': 0.1})
    writer.flush()
    writer.write_scalars(2, {'train/loss': 1.5})
    writer.close()
  (tmp_path / 'copied').mkdir()
  for url in fs.ls('bucket/tb-test'):
    (tmp_path / 'copied' / os.path.basename(url)).write_bytes(fs.cat_file(url))
  for run in ('local', 'copied'):
    assert len(os.listdir(tmp_path / run)) == 2  # one file per flush
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / run))
    accumulator.Reload()
    loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors('train/loss')]
    assert loss == [(1, 2.5), (2, 1.5)] and len(accumulator.Tensors('train/lr')) == 1, run


@pytest.mark.slow
def test_a_token_store_on_gs_has_the_local_bytes_and_reads_the_same_rows(gcs, tiny_config, tmp_path):
  from lm.data import store, store_builder
  from lm.store import paths
  fs = _gcs_fs()
  built = {}
  for where in (str(tmp_path / 'store'), f'{gcs}/store-test'):
    config = tiny_config.copy_and_resolve_references()
    config.data.store, config.data.store_shard_documents = where, 40
    built[where] = store_builder.build(config)
  local, remote = (built[k] for k in built)
  assert local.content == remote.content and local.content['splits']['train']['shards'][1:]
  for path in sorted(p for p in (tmp_path / 'store').rglob('*') if p.is_file()):
    name = path.relative_to(tmp_path / 'store').as_posix()
    assert fs.cat_file(f'bucket/store-test/{name}') == path.read_bytes(), name
  tokens_local, starts_local = store.open_split(local.root, local.content, 'train')
  tokens_remote, starts_remote = store.open_split(paths.path(f'{gcs}/store-test'), remote.content, 'train')
  boundary = int(tokens_local.offsets[1])
  for begin, end in ((0, 100), (boundary - 7, boundary + 9), (len(tokens_local) - 5, len(tokens_local))):
    np.testing.assert_array_equal(tokens_remote[begin:end], tokens_local[begin:end])
  np.testing.assert_array_equal(np.asarray(starts_remote), np.asarray(starts_local))


@pytest.mark.slow
@pytest.mark.parametrize('args, needle', [
    (['--workdir=s3://bucket/run'], '--workdir=s3://bucket/run: lm reads and writes local paths and gs:// only'),
    (['--workdir=gs://bucket/run'], '--workdir=gs://bucket/run: cannot reach bucket gs://bucket ([Errno 111]'),
    (['--workdir={tmp}/wd', '--config.data.store=hdfs://nn/store'], 'data.store=hdfs://nn/store: lm reads and'),
    (['--workdir={tmp}/wd', '--config.data.tokenizer=s3://b/t.model'], 'data.tokenizer=s3://b/t.model: lm reads'),
])
def test_a_scheme_lm_cannot_write_or_an_unreachable_bucket_is_one_line_and_writes_nothing(args, needle, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['STORAGE_EMULATOR_HOST'] = 'http://127.0.0.1:9'  # nothing listens there
  env['PYTHONPATH'] = REPO
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  result = subprocess.run([sys.executable, '-m', 'lm.main', f'--config={REPO}/configs/gpt_tiny.py:test',
                           *[a.format(tmp=tmp_path) for a in args]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert needle in errors[0], errors[0]
  assert not os.listdir(cwd) and not os.path.exists(tmp_path / 'wd')  # nothing written, no local 'gs:' folder
