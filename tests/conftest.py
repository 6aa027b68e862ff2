"""Test session setup: 8 simulated CPU devices, a private data cache and a shared XLA compilation cache, all fixed
before jax is imported.

XLA_FLAGS must be set before the first `import jax` of the process, and pytest imports conftest.py before any test
module, so the sharded tests (tests/test_sharded.py) find 8 devices. Single-device tests build their meshes over
`jax.devices()[:1]`; end-to-end tests run `python -m lm.main` in a subprocess without these flags (tests/runs.py).
The repository root is on sys.path through pyproject.toml's pytest `pythonpath`.
"""
import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
if 'LM_CACHE_DIR' not in os.environ:  # xdist workers inherit the session's
  os.environ['LM_CACHE_DIR'] = tempfile.mkdtemp(prefix='lm-test-cache-')
  atexit.register(shutil.rmtree, os.environ['LM_CACHE_DIR'], ignore_errors=True)  # the session's process exits last
# One persistent XLA compilation cache for the session (these processes, the xdist workers and every command they
# run; compiles over JAX's 1 s threshold): the second run of a config loads its executables instead of compiling
# them (a t5_tiny:test run: 33 s -> 19 s). The executables are the same, so are the numbers.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='lm-test-xla-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Every gs:// path of the session (this process and the commands it runs) goes to the emulator of the `gcs` fixture,
# set before lm.store.paths is imported (it configures the clients from it). Never Google's servers.
os.environ['STORAGE_EMULATOR_HOST'] = f'http://127.0.0.1:{_free_port()}'

import pytest  # noqa: E402

from runs import REPO, run_lm  # noqa: E402


@pytest.fixture(scope='session')
def gcs():
  """A Cloud Storage API on 127.0.0.1 (tests/gcs_emulator.py, in memory) at STORAGE_EMULATOR_HOST; yields the URL
  of its one bucket, 'gs://bucket'."""
  port = os.environ['STORAGE_EMULATOR_HOST'].rsplit(':', 1)[1]
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'tests', 'gcs_emulator.py'), port, 'bucket'],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  assert proc.stdout.readline().strip() == 'ready'
  yield 'gs://bucket'
  proc.kill()
  proc.wait()


@pytest.fixture(scope='session')
def lm_cli():
  return run_lm


@pytest.fixture(scope='session')
def tiny_config():
  """configs/gpt_tiny.py:test, unlocked copies per use via `.copy_and_resolve_references()`."""
  from configs import gpt_tiny
  return gpt_tiny.get_config('test')


@pytest.fixture(scope='session')
def tiny_data(tiny_config):
  """(tokenizer, train rows, eval rows) of the embedded corpus for the tiny config (trained once, cached)."""
  from lm.data import pipeline
  return pipeline.prepare(tiny_config)


def _train(tmp_path_factory, name: str, *args: str) -> tuple[str, str]:
  """Runs `lm.main` with `args` once per test session, whichever xdist worker asks first (the others wait for it
  and read the same workdir: the tests only read it); returns (workdir, stdout)."""
  basetemp = tmp_path_factory.getbasetemp()
  shared = basetemp.parent if os.environ.get('PYTEST_XDIST_WORKER') else basetemp  # workers' basetemps: one parent
  folder = shared / f'session-run-{name}'
  folder.mkdir(exist_ok=True)
  workdir, done = folder / 'wd', folder / 'stdout.txt'
  with open(folder / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)  # a failed attempt of another worker
      result = run_lm(*args, f'--workdir={workdir}', timeout=900)
      assert result.returncode == 0, result.stderr[-3000:]
      done.write_text(result.stdout)
  return str(workdir), done.read_text()


@pytest.fixture(scope='session')
def bert_run(tmp_path_factory):
  """A 40-step bert_tiny:test pretraining run: the encoder that fine-tuning tests start from."""
  return _train(tmp_path_factory, 'bert', '--config=configs/bert_tiny.py:test', '--config.num_train_steps=40',
                '--config.optimizer.learning_rate=3e-3')


@pytest.fixture(scope='session')
def bert_tiny_run(tmp_path_factory):
  """The REAL bert_tiny config (vocab 8192, 128 positions) at half its batch (16 rows a step), cut to 40 steps. Its
  MLM loss per 10 steps: 8.82, 8.03, 6.92, 6.58 (at 32 rows: 8.83, 7.93, 6.90, 6.43; eval MLM loss 6.44 vs 6.45),
  and bert_tiny_finetune from it reaches 0.83 held-out accuracy at step 80 (0.86 from the 32-row encoder)."""
  return _train(tmp_path_factory, 'bert_tiny', '--config=configs/bert_tiny.py', '--config.num_train_steps=40',
                '--config.batch_size=16', '--config.eval_every_steps=0', '--config.eval_steps=2')


@pytest.fixture(scope='session')
def gpt_tiny_run(tmp_path_factory):
  """The REAL gpt_tiny config (vocab 8192, 16x256 tokens a step), cut to 10 steps (loss 8.22 at step 10)."""
  return _train(tmp_path_factory, 'gpt_tiny', '--config=configs/gpt_tiny.py', '--config.num_train_steps=10',
                '--config.eval_every_steps=0', '--config.eval_steps=2', '--config.num_samples=0')


@pytest.fixture(scope='session')
def gpt_run(tmp_path_factory):
  """A finished 20-step gpt_tiny:test run (checkpoints at 10 and 20)."""
  return _train(tmp_path_factory, 'gpt', '--config=configs/gpt_tiny.py:test')
