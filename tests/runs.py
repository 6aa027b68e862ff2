"""What tests share that is not a fixture: the repository root, running an lm command as a user would, and reading
a workdir's metrics. Fixtures live in conftest.py (pytest finds them; tests never import conftest)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_lm(*args: str, module: str = 'lm.main', timeout: int = 600) -> subprocess.CompletedProcess:
  """Runs `python -m <module> <args>` from the repo root on ONE CPU device, as a user would."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def read_metrics(workdir: str) -> list[dict]:
  """The records of a workdir's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]
