"""Multi-process runs on one machine: two `jax.distributed` CPU processes of 4 devices each against one process of 8.

launch.local starts the processes; conftest.py gives this (pytest) process 8 CPU devices for the restore checks.
"""
import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'

import subprocess  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from lm.data import pipeline  # noqa: E402
from lm.parallel import distributed, sharding  # noqa: E402
from lm.store import workdir as workdir_lib  # noqa: E402

from runs import REPO, read_metrics  # noqa: E402

ARGS = ('--config=configs/gpt_tiny.py:test', '--config.num_train_steps=12', '--config.log_every_steps=1',
        '--config.eval_every_steps=6', '--config.checkpoint_every_steps=6', '--config.num_samples=1')


def _run(argv: list[str], devices: int) -> subprocess.CompletedProcess:
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _losses(workdir: str) -> dict:
  return {row['step']: row['train/loss'] for row in read_metrics(workdir) if 'train/loss' in row}


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one') / 'wd')
  result = _run(['-m', 'lm.main', *ARGS, f'--workdir={workdir}'], devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _two_processes(tmp_path_factory, name: str, *extra: str) -> str:
  workdir = str(tmp_path_factory.mktemp(name) / 'wd')
  result = _run(['-m', 'launch.local', '--num_processes=2', '--devices_per_process=4', '--', *ARGS, *extra,
                 f'--workdir={workdir}'], devices=1)
  assert result.returncode == 0, result.stdout[-3000:]
  assert '[1] Distributed: process 1 of 2' in result.stdout and '8 devices' in result.stdout
  return workdir


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
  return _two_processes(tmp_path_factory, 'two')


def test_processes_read_disjoint_shares_of_the_global_batch(tiny_config, tiny_data):
  whole = next(pipeline.train_iterator(tiny_config, tiny_data[1], 0, 1))['inputs']
  shares = [next(pipeline.train_iterator(tiny_config, tiny_data[1], p, 2))['inputs'] for p in range(2)]
  rows = lambda batch: {tuple(r) for r in batch.tolist()}
  assert not rows(shares[0]) & rows(shares[1])  # no example seen by two processes in a step
  assert rows(shares[0]) | rows(shares[1]) == rows(whole) and len(shares[0]) == len(whole) // 2


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one(one_process, two_processes):
  one, two = _losses(one_process), _losses(two_processes)
  assert sorted(one) == sorted(two) == list(range(1, 13))
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-4)
  evals = [[row['eval/loss'] for row in read_metrics(w) if 'eval/loss' in row] for w in (one_process, two_processes)]
  np.testing.assert_allclose(evals[1], evals[0], rtol=1e-4)


def _global_batches(config, rows, process_count: int, start_step: int, steps: int = 3) -> list[list[tuple]]:
  """The rows of the global batches of steps start_step+1.. as `process_count` processes read them (sorted)."""
  iterators = [pipeline.train_iterator(config, rows, p, process_count, start_step=start_step)
               for p in range(process_count)]
  return [sorted(tuple(r) for it in iterators for r in next(it)['inputs'].tolist()) for _ in range(steps)]


def test_a_resume_with_another_process_count_continues_with_the_same_global_batches(tiny_config, tiny_data):
  one = _global_batches(tiny_config, tiny_data[1], 1, 0, steps=4)  # steps 1..4 of one uninterrupted process
  assert _global_batches(tiny_config, tiny_data[1], 2, 0) == one[:3]
  assert _global_batches(tiny_config, tiny_data[1], 2, 1) == one[1:]  # 1 process until step 1, then 2
  assert _global_batches(tiny_config, tiny_data[1], 1, 1) == one[1:]


@pytest.mark.slow
def test_a_two_process_run_resumes_as_one_process(one_process, two_processes, tmp_path):
  import shutil
  workdir = str(tmp_path / 'wd')
  shutil.copytree(two_processes, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))  # resume the 2-process run from its step 6
  result = _run(['-m', 'lm.main', *ARGS, f'--workdir={workdir}'], devices=8)
  assert result.returncode == 0 and 'Resuming from checkpoint step 6' in result.stdout, result.stderr[-3000:]
  one, resumed = _losses(one_process), _losses(workdir)
  assert sorted(resumed) == list(range(1, 13))
  np.testing.assert_allclose([resumed[s] for s in range(7, 13)], [one[s] for s in range(7, 13)], rtol=1e-4)


@pytest.mark.slow
def test_two_slices_over_dcn_give_the_same_losses(one_process, tmp_path_factory):
  workdir = _two_processes(tmp_path_factory, 'dcn', '--config.mesh.dcn_data=2', '--config.mesh.fsdp=2')
  one, two = _losses(one_process), _losses(workdir)
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-4)


@pytest.mark.slow
def test_a_two_process_checkpoint_restores_in_one_process_on_other_meshes(two_processes, one_process):
  runs = [workdir_lib.load(two_processes, mesh=mesh) for mesh in ('', '1,2,4', '2,4,1')]
  assert runs[0].step == 12
  kernel = runs[1].params['block_0']['mlp']['fc_in']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'tensor')  # resharded on restore
  for run in runs[1:]:
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(sharding.to_host(a), sharding.to_host(b)),
                 run.params, runs[0].params)
  logged = [row['train/param_norm'] for row in read_metrics(two_processes) if row['step'] == 12][0]
  assert float(optax.tree.norm(runs[0].params)) == pytest.approx(logged, rel=1e-6)
  reference = workdir_lib.load(one_process).params  # the 1-process run ends at (nearly) the same parameters
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4), runs[0].params,
               reference)


def test_distributed_starts_only_when_asked_or_in_a_cluster():
  assert distributed.cluster_from_env({}) is None
  assert distributed.cluster_from_env({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}) is None  # one task: single host
  assert distributed.cluster_from_env({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '16'}) == 'slurm'
  assert distributed.cluster_from_env({'TPU_WORKER_HOSTNAMES': 'localhost'}) is None  # single-host TPU VM
  assert distributed.cluster_from_env({'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3'}) == 'tpu'
  assert distributed.cluster_from_env({'MEGASCALE_COORDINATOR_ADDRESS': '10.0.0.2'}) == 'tpu'
  assert distributed.initialize_distributed(env={}) == 'single process'
  with pytest.raises(ValueError, match='--process_id in'):
    distributed.initialize_distributed('localhost:1234', 2, env={})
  with pytest.raises(ValueError, match='--coordinator_address'):
    distributed.initialize_distributed(env={'LM_NUM_PROCESSES': '2', 'LM_PROCESS_ID': '0'})


def test_launch_local_dry_run_prints_one_command_per_process():
  result = subprocess.run([sys.executable, '-m', 'launch.local', '--num_processes=3', '--devices_per_process=2',
                           '--port=4321', '--dry_run', '--', '--config=configs/gpt_tiny.py:test'], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  lines = result.stdout.strip().splitlines()
  assert result.returncode == 0 and len(lines) == 3
  for index, line in enumerate(lines):
    assert line.startswith('XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu ')
    assert line.endswith(f'-m lm.main --config=configs/gpt_tiny.py:test --coordinator_address=localhost:4321 '
                         f'--num_processes=3 --process_id={index}')


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  """jax's preemption sync point: the notice reaches every process and they save one agreed step."""
  import re
  import signal
  import time
  workdir, log = str(tmp_path / 'wd'), str(tmp_path / 'log.txt')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1', 'JAX_PLATFORMS': 'cpu'}
  with open(log, 'w') as out:
    proc = subprocess.Popen([sys.executable, '-m', 'launch.local', '--num_processes=2', '--devices_per_process=4', '--',
                             '--config=configs/gpt_tiny.py:test', f'--workdir={workdir}',
                             '--config.num_train_steps=5000',
                             '--config.log_every_steps=5', '--config.checkpoint_every_steps=2000'],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and not re.search(r'\[1\] step +[2-9]\d/', open(log).read()):
    time.sleep(0.2)
  child = subprocess.run(['pgrep', '-f', f'workdir={workdir} .*process_id=1'], capture_output=True, text=True)
  os.kill(int(child.stdout.split()[0]), signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  lines = [x for x in open(log).read().splitlines() if 'Preempted (SIGTERM): checkpoint' in x]
  steps = {x.split()[4] for x in lines}
  assert len(lines) == 2 and len(steps) == 1, lines
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [steps.pop()]
