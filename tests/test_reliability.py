"""Reliability through real processes: kill -9 and resume, SIGTERM, an unreadable checkpoint, non-finite losses, a
checkpoint directory that cannot be written, and the bad-input table (each a one-line error before any compile)."""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from runs import REPO, read_metrics, run_lm

pytestmark = pytest.mark.slow  # every test here trains through the command line

BASE = ('--config=configs/gpt_tiny.py:test', '--config.num_train_steps=30', '--config.log_every_steps=1',
        '--config.checkpoint_every_steps=3', '--config.eval_every_steps=0', '--config.num_samples=0')
T5_BASE = ('--config=configs/t5_tiny.py:test', '--config.num_train_steps=12', '--config.log_every_steps=1',
           '--config.checkpoint_every_steps=3', '--config.eval_every_steps=0')  # span corruption: grain random_map


def _error_line(result) -> str:
  """The one `error: ` line (background threads may print warnings after it)."""
  lines = [x for x in result.stderr.splitlines() if x.startswith('error: ')]
  assert len(lines) == 1, result.stderr[-2000:]
  return lines[0]


def _losses(workdir: str) -> dict:
  rows = read_metrics(workdir)
  steps = [r['step'] for r in rows]
  assert len(steps) == len(set(steps)), 'a step was written twice'
  return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}


def _start(workdir: str, *extra: str, cwd: str = REPO, log_dir: str = '', base: tuple[str, ...] = BASE
           ) -> tuple[subprocess.Popen, str]:
  """Starts lm.main on `base` in the background (from `cwd`: the config by absolute path, lm on PYTHONPATH); its
  output goes to a log file in `log_dir` (default: beside the workdir)."""
  log = os.path.join(log_dir or os.path.dirname(workdir), f'log-{time.time_ns()}.txt')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['PYTHONPATH'] = REPO
  args = [f'--config={REPO}/{a[9:]}' if a.startswith('--config=') else a for a in base] if cwd != REPO else base
  with open(log, 'w') as out:
    proc = subprocess.Popen([sys.executable, '-m', 'lm.main', *args, f'--workdir={workdir}', *extra], cwd=cwd,
                            env=env, stdout=out, stderr=subprocess.STDOUT)
  return proc, log


def _wait_for_step(log: str, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    with open(log) as f:
      if any(line.startswith('step ') and int(line.split()[1].split('/')[0]) >= step for line in f):
        return
    time.sleep(0.02)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference') / 'wd')
  result = run_lm(*BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  return _losses(workdir)


def test_kill_9_at_random_moments_then_resume_gives_the_same_losses(reference, tmp_path):
  workdir = str(tmp_path / 'wd')
  rng = random.Random(1234)
  kills = sorted(rng.sample(range(4, 27), 2))
  for step in kills:
    proc, log = _start(workdir)
    _wait_for_step(log, step, proc)
    time.sleep(rng.random() * 0.2)  # anywhere in the next steps, async checkpoint writes included
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  result = run_lm(*BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Resuming from checkpoint step' in result.stdout
  resumed = _losses(workdir)
  print(f'killed near steps {kills}; resumed losses == uninterrupted for all {len(resumed)} steps: '
        f'{resumed == reference}')
  assert resumed == reference  # bitwise: same floats at every step
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*'))


def test_t5_span_corruption_killed_mid_run_resumes_with_the_same_losses(tmp_path):
  """The encoder-decoder family and its random_map data (span corruption draws its noise per example): SIGKILL
  after the step-6 checkpoint, resume, and every step's loss equals an uninterrupted run's, bitwise."""
  result = run_lm(*T5_BASE, f'--workdir={tmp_path / "reference"}')
  assert result.returncode == 0, result.stderr[-2000:]
  reference = _losses(str(tmp_path / 'reference'))
  workdir = str(tmp_path / 'wd')
  proc, log = _start(workdir, base=T5_BASE)
  _wait_for_step(log, 7, proc)
  time.sleep(random.Random(17).random() * 0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 0 < len(_losses(workdir)) < 12, 'the run was not killed mid-way'
  result = run_lm(*T5_BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Resuming from checkpoint step' in result.stdout
  assert _losses(workdir) == reference and len(reference) == 12


def test_sigterm_saves_the_current_step_and_exits_0(reference, tmp_path):
  workdir = str(tmp_path / 'wd')
  proc, log = _start(workdir, '--config.num_train_steps=3000', '--config.checkpoint_every_steps=1000')
  _wait_for_step(log, 10, proc)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 0
  assert time.time() - sent < 60
  output = open(log).read()
  line = [x for x in output.splitlines() if x.startswith('Preempted (SIGTERM): checkpoint ')][0]
  step = int(line.split()[3])
  assert step >= 10 and os.listdir(os.path.join(workdir, 'checkpoints')) == [str(step)]
  assert max(_losses(workdir)) == step  # every step up to the saved one is in metrics.jsonl


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
  workdir = str(tmp_path / 'wd')
  result = run_lm(*BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '30', 'state', '**', 'd', '*'), recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(10)
  result = run_lm(*BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  warning = [x for x in result.stdout.splitlines() if x.startswith('warning: checkpoint ')][0]
  assert f'{workdir}/checkpoints/30 cannot be restored' in warning and 'resumed from step 27 instead' in warning
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_unreadable', '30'))  # kept, not deleted
  assert _losses(workdir) == reference  # steps 28-30 computed again, to the same values
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints')), key=int) == ['24', '27', '30']


def test_a_gs_workdir_and_store_are_killed_and_resumed_from_the_bucket(reference, gcs, tmp_path):
  """--workdir and data.store on gs:// (a Cloud Storage API on 127.0.0.1): kill -9 after a checkpoint, resume from
  the bucket with the local reference's losses; best/, TensorBoard events and the store there too; nothing written
  under the current directory. (Setting an unreadable checkpoint aside moves it: paths.move, test_paths.)"""
  from etils import epath

  from lm.store import writers
  fs = epath.backend.fsspec_backend.fs(gcs)
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  workdir = f'{gcs}/reliability/run'
  extra = (f'--config.data.store={gcs}/reliability/store', '--config.eval_every_steps=30', '--config.eval_steps=1',
           '--config.best_metric=eval/loss', '--config.checkpoint_every_steps=10')  # fewer, slow emulator writes

  proc, log = _start(workdir, *extra, cwd=str(cwd), log_dir=str(tmp_path))
  committed = 'bucket/reliability/run/checkpoints/10/commit_success.txt'  # orbax's commit marker on Cloud Storage
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline and not fs.exists(committed):
    fs.invalidate_cache()
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)  # mid-run, wherever it is after checkpoint 10
  proc.wait()
  proc, log = _start(workdir, *extra, cwd=str(cwd), log_dir=str(tmp_path))
  assert proc.wait(timeout=600) == 0, open(log).read()[-3000:]
  assert 'Resuming from checkpoint step 10' in open(log).read()
  rows = writers.read_rows(workdir)
  assert {r['step']: r['train/loss'] for r in rows if 'train/loss' in r} == reference  # bitwise
  assert len(fs.ls('bucket/reliability/run/best')) == 1 and fs.glob('bucket/reliability/run/events.out.tfevents.*')
  assert fs.exists('bucket/reliability/store/store.json')
  assert not os.listdir(cwd)


def test_non_finite_loss_stops_or_skips(tiny_config, tmp_path, capsys):
  """'stop' through the command (exit 3, one line); 'skip' in-process (the same loop, without a second start-up)."""
  absurd = ('--config.optimizer.learning_rate=1e6', '--config.optimizer.grad_clip_norm=0')
  result = run_lm(*BASE, f'--workdir={tmp_path / "stop"}', *absurd)
  assert result.returncode == 3
  assert _error_line(result).startswith('error: train/loss is nan at step ')
  from lm.errors import NonFiniteLossError
  from lm.training import loop
  config = tiny_config.copy_and_resolve_references()
  config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps = 30, 1, 3
  config.eval_every_steps, config.num_samples = 0, 0
  config.optimizer.learning_rate, config.optimizer.grad_clip_norm = 1e6, 0.0
  config.nonfinite_policy, config.max_skipped_steps = 'skip', 3
  with pytest.raises(NonFiniteLossError, match='non-finite steps in a row at step'):
    loop.run(config, str(tmp_path / 'skip'))
  assert '3 in a row' in capsys.readouterr().out
  skipped = [r['train/skipped_steps'] for r in read_metrics(str(tmp_path / 'skip')) if 'train/skipped_steps' in r]
  assert skipped[-1] >= 3


def test_a_checkpoint_directory_that_cannot_be_written_fails_clearly(tmp_path):
  workdir = tmp_path / 'wd'
  workdir.mkdir()
  os.symlink('/proc/lm-cannot-write-here', workdir / 'checkpoints')
  result = run_lm(*BASE, f'--workdir={workdir}')
  assert result.returncode == 4
  assert _error_line(result).startswith(f'error: {workdir}/checkpoints: cannot create the checkpoint directory')


def test_a_full_disk_stops_the_run_with_a_clear_error(tmp_path):
  mount = tmp_path / 'small'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1200k', 'tmpfs', str(mount)], capture_output=True).returncode:
    pytest.skip('cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN)')
  try:
    result = run_lm(*BASE, f'--workdir={mount / "wd"}', '--config.checkpoint_every_steps=2')
  finally:
    subprocess.run(['umount', str(mount)], capture_output=True)
  assert result.returncode == 4
  line = _error_line(result)
  assert line.startswith(f'error: {mount}/wd/checkpoints: cannot write checkpoint') and 'space' in line


BAD_INPUTS = [  # (override, words the one-line error must contain) -- the table in WORKSPACE.md
    ('--config.no_such_key=1', 'no_such_key'),
    ('--config.batch_size=abc', 'batch_size'),
    ('--config.num_train_steps=0', 'num_train_steps'),
    ('--config.seq_len=-8', 'seq_len'),
    ('--config.batch_size=0', 'batch_size'),
    ('--config.model.vocab_size=0', 'model.vocab_size'),
    ('--config.model.num_heads=3', 'model.num_heads'),
    ('--config.batch_size=7', 'data-parallel size'),
    ('--config.mesh.data=3', 'mesh'),
    ('--config.optimizer.learning_rate=-0.1', 'optimizer.learning_rate'),
    ('--config.init_from=/no/such/run', 'init_from'),
    ('--config.data.source=tfds --config.data.tfds_name=no_such_dataset_xyz', 'no_such_dataset_xyz'),
    ('--config.seq_len=128', 'model.max_len'),
]


@pytest.mark.parametrize('override,needle', BAD_INPUTS)
def test_bad_input_table(override, needle, tmp_path):
  workdir = tmp_path / 'wd'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'  # so that an odd batch cannot split
  result = subprocess.run([sys.executable, '-m', 'lm.main', '--config=configs/gpt_tiny.py:test', *override.split(),
                           f'--workdir={workdir}'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, (override, result.stderr[-1000:])
  lines = [x for x in result.stderr.strip().splitlines() if x.startswith('error: ')]
  assert len(lines) == 1 and needle in lines[0], (override, result.stderr[-1000:])
  assert not os.path.isdir(workdir / 'checkpoints')


def test_a_corpus_smaller_than_one_sequence(gpt_run, tmp_path):
  for i in range(3):
    (tmp_path / f'tiny{i}.txt').write_text(f'just a few words, file {i}\n')
  result = run_lm('--config=configs/gpt_tiny.py:test', f'--workdir={tmp_path / "wd"}', '--config.data.source=text',
                  f'--config.data.path={tmp_path}/tiny*.txt', '--config.data.eval_fraction=0.5',
                  f'--config.data.tokenizer={gpt_run[0]}/tokenizer.model')
  assert result.returncode == 2
  line = _error_line(result)
  assert 'fewer than one row' in line or 'documents' in line, line
