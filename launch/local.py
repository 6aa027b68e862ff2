"""Start the processes of one multi-process job on this machine (CPU devices): multi-host code, tested locally.

  python -m launch.local --num_processes=2 --devices_per_process=4 -- \
      --config=configs/gpt_tiny.py:test --workdir=/tmp/mp

Process i runs `python -m lm.main <flags after --> --coordinator_address=localhost:PORT --num_processes=N
--process_id=i` with XLA_FLAGS=--xla_force_host_platform_device_count=<devices_per_process> and JAX_PLATFORMS=cpu,
so jax.distributed joins them into one job of N x devices_per_process devices. Output lines are prefixed with
`[i]`. When one process fails the others are stopped; the exit status is the first failure's (else 0).
--dry_run prints the commands instead.
"""
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 2, 'Processes to start.')
_DEVICES = flags.DEFINE_integer('devices_per_process', 4, 'CPU devices each process simulates.')
_PORT = flags.DEFINE_integer('port', 0, 'Coordinator port on localhost (0 = a free one).')
_MODULE = flags.DEFINE_string('module', 'lm.main', 'Python module every process runs.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands and exit.')


def free_port() -> int:
  """A TCP port nobody listens on right now."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def commands(args: list[str], num_processes: int, devices: int, port: int, module: str) -> list[tuple[dict, list]]:
  """(environment additions, argv) of each process."""
  out = []
  for index in range(num_processes):
    env = {'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}
    argv = [sys.executable, '-m', module, *args, f'--coordinator_address=localhost:{port}',
            f'--num_processes={num_processes}', f'--process_id={index}']
    out.append((env, argv))
  return out


def _pump(index: int, stream) -> None:
  for line in stream:
    sys.stdout.write(f'[{index}] {line}')
    sys.stdout.flush()


def run(procs: list[tuple[dict, list]]) -> int:
  """Starts every process, relays their output, stops the rest when one fails; the first non-zero status or 0."""
  children, pumps = [], []
  for index, (extra, argv) in enumerate(procs):
    child = subprocess.Popen(argv, env={**os.environ, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    children.append(child)
    pumps.append(threading.Thread(target=_pump, args=(index, child.stdout), daemon=True))
    pumps[-1].start()
  status = 0
  while [child for child in children if child.poll() is None]:  # a list: every child is polled each round
    failed = [child.returncode for child in children if child.returncode not in (None, 0)]
    if failed and not status:
      status = failed[0]
      for child in children:
        if child.poll() is None:
          child.terminate()
    time.sleep(0.2)
  for pump in pumps:
    pump.join(timeout=5)
  return status or next((c.returncode for c in children if c.returncode), 0)


def main(argv):
  procs = commands(argv[1:], _NUM_PROCESSES.value, _DEVICES.value, _PORT.value or free_port(), _MODULE.value)
  if _DRY_RUN.value:
    for extra, command in procs:
      print(' '.join(f'{k}={shlex.quote(v)}' for k, v in extra.items()) + ' ' + shlex.join(command))
    return
  sys.exit(run(procs))


if __name__ == '__main__':
  app.run(main)
