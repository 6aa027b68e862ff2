"""launch/: TPU VM and SLURM scripts (dry runs), sweeps and their report, and lm.aot's pod-fit check."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from runs import REPO, run_lm


def _launch(*args: str, module: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_tpu_dry_runs_print_the_gcloud_commands():
  where = ('--name=lm-7b', '--zone=us-east5-a', '--project=p1', '--dry_run')
  out = lambda sub, *args: _launch(sub, *where, *args, module='launch.tpu').stdout.strip().splitlines()
  assert out('create', '--accelerator=v5p-128') == [
      'gcloud compute tpus tpu-vm create lm-7b --zone=us-east5-a --project=p1 --accelerator-type=v5p-128 '
      '--version=v2-alpha-tpuv5']
  assert out('create', '--accelerator=v6e-256', '--queued', '--spot') == [
      'gcloud compute tpus queued-resources create lm-7b-qr --node-id=lm-7b --zone=us-east5-a --project=p1 '
      '--accelerator-type=v6e-256 --runtime-version=v2-alpha-tpuv6e --spot']
  setup = out('setup', '--bucket=my-runs')
  assert setup[0] == 'git archive --format=tar.gz -o /tmp/lm.tar.gz HEAD'
  assert setup[1].startswith('gcloud compute tpus tpu-vm scp /tmp/lm.tar.gz') and '--worker=all' in setup[1]
  assert 'pip install -q -r requirements-tpu.txt' in setup[2] and 'gcsfuse --implicit-dirs my-runs ~/gcs' in setup[3]
  run = out('run', '--', '--config=configs/gpt_7b.py', '--workdir=/home/me/gcs/gpt_7b')
  assert run == ["gcloud compute tpus tpu-vm ssh lm-7b --zone=us-east5-a --project=p1 --worker=all '--command=set -o "
                 "pipefail; cd ~/lm && LM_DISTRIBUTED=auto python -m lm.main --config=configs/gpt_7b.py "
                 "--workdir=/home/me/gcs/gpt_7b 2>&1 | tee ~/lm_run.log'"]
  assert out('logs', '--dest=logs')[1].endswith("'lm-7b:~/lm_run.log' logs/ --zone=us-east5-a --project=p1 --worker=0")
  assert out('delete') == ['gcloud compute tpus tpu-vm delete lm-7b --zone=us-east5-a --project=p1 --quiet']
  assert out('delete', '--queued') == [
      'gcloud compute tpus queued-resources delete lm-7b-qr --zone=us-east5-a --project=p1 --force --quiet']
  assert _launch('explode', *where, module='launch.tpu').returncode != 0


def test_slurm_dry_run_prints_the_sbatch_script():
  per_gpu = _launch('--nodes=2', '--gpus_per_node=4', '--partition=a100', '--dry_run', '--',
                    '--config=configs/gpt_1b.py', module='launch.slurm').stdout
  for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=4', '#SBATCH --gpus-per-node=4',
               '#SBATCH --partition=a100', 'srun python -m lm.main --config=configs/gpt_1b.py', '# then: sbatch'):
    assert line in per_gpu
  assert '--gpus-per-task' not in per_gpu and 'LM_LOCAL_DEVICE_IDS' not in per_gpu  # task i takes GPU SLURM_LOCALID
  per_node = _launch('--nodes=2', '--per=node', '--dry_run', module='launch.slurm').stdout
  assert '#SBATCH --ntasks-per-node=1' in per_node and 'export LM_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7' in per_node


def test_sweep_expansion():
  from configs import gpt_tiny
  from lm.config import base
  assert base.sweep_product({'a.x': (1, 2), 'seed': (0, 1)}) == [
      {'a.x': 1, 'seed': 0}, {'a.x': 1, 'seed': 1}, {'a.x': 2, 'seed': 0}, {'a.x': 2, 'seed': 1}]
  assert base.sweep_zip({'model.d_model': (128, 256), 'model.num_heads': (2, 4)}) == [
      {'model.d_model': 128, 'model.num_heads': 2}, {'model.d_model': 256, 'model.num_heads': 4}]
  with pytest.raises(ValueError, match='different lengths'):
    base.sweep_zip({'a': (1, 2), 'b': (1,)})
  assert gpt_tiny.get_sweep() == [{'optimizer.learning_rate': r} for r in (1e-3, 2e-3, 4e-3)]
  lines = _launch('--config=configs/gpt_tiny.py', '--root=/tmp/sw', '--dry_run', '--', '--config.seed=3',
                  module='launch.sweep').stdout.strip().splitlines()
  assert lines == [f'python -m lm.main --config=configs/gpt_tiny.py --workdir=/tmp/sw/learning_rate={r} '
                   f'--config.seed=3 --config.optimizer.learning_rate={r}' for r in ('0.001', '0.002', '0.004')]


@pytest.mark.slow
def test_sweep_runs_every_point_and_reports(tmp_path):
  root = str(tmp_path / 'sweep')
  result = _launch_long('--config=configs/gpt_tiny.py:test', f'--root={root}', '--',
                        '--config.num_train_steps=10', '--config.num_samples=0')
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  assert sorted(os.listdir(root)) == ['learning_rate=0.005', 'learning_rate=0.01']
  report = _launch('report', f'--root={root}', module='launch.sweep')
  assert report.returncode == 0, report.stderr[-2000:]
  with open(os.path.join(root, 'report.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['point'] for r in rows] == ['learning_rate=0.005', 'learning_rate=0.01']
  assert all(r['step'] == '10' and float(r['eval/loss']) > 0 for r in rows)
  assert '| point | step | train/loss | eval/loss | eval/perplexity' in open(os.path.join(root, 'report.md')).read()
  with open(os.path.join(root, 'loss.png'), 'rb') as f:
    png = f.read()
  assert png.startswith(b'\x89PNG') and len(png) > 10_000


def _launch_long(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, '-m', 'launch.sweep', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)


def test_topology_names():
  from lm.errors import UsageError
  from lm.perf import aot
  assert aot.topology_name('v5p-128') == 'v5p:4x4x4'
  assert aot.topology_name('v5p-32') == 'v5p:2x2x4'
  assert aot.topology_name('v4-8') == 'v4:2x2x1'
  assert aot.topology_name('v5e-256') == 'v5e:16x16'
  assert aot.topology_name('v6e-8') == 'v6e:2x4'
  assert aot.topology_name('v5e:2x2') == 'v5e:2x2'
  for bad in ('v5p-100', 'tpu-8', 'v5p'):
    with pytest.raises(UsageError, match='--topology'):
      aot.topology_name(bad)


HAS_LIBTPU = importlib.util.find_spec('libtpu') is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LIBTPU, reason='libtpu is not installed (pip install -r requirements-tpu.txt)')
def test_aot_compiles_for_a_tpu_topology():
  result = run_lm('--config=configs/gpt_tiny.py:test', '--topology=v5e-8', module='lm.aot', timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  import json
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['chips'] == 8 and report['device_kind'] == 'TPU v5 lite' and report['fits']
  assert 0 < report['total_gib'] < report['hbm_gib'] and report['model_flops_per_step'] > 0


@pytest.mark.skipif(HAS_LIBTPU, reason='libtpu is installed: the missing-libtpu message cannot show')
def test_aot_without_libtpu_says_what_to_install():
  result = run_lm('--config=configs/gpt_tiny.py:test', '--topology=v5e-8', module='lm.aot', timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'error: lm.aot needs libtpu: pip install -r requirements-tpu.txt (no TPU needed)')
