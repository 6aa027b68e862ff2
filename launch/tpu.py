"""Cloud TPU VMs with gcloud: create a slice, set up every worker, run lm.main on all workers, copy the log, delete.

  python -m launch.tpu create --name=lm-7b --zone=us-east5-a --accelerator=v5p-128 [--queued] [--spot]
  python -m launch.tpu setup  --name=lm-7b --zone=us-east5-a [--bucket=my-bucket]
  python -m launch.tpu run    --name=lm-7b --zone=us-east5-a -- --config=configs/gpt_7b.py --workdir=gs://my-runs/gpt_7b
  python -m launch.tpu logs   --name=lm-7b --zone=us-east5-a --dest=logs/
  python -m launch.tpu delete --name=lm-7b --zone=us-east5-a [--queued]

Every subcommand takes --dry_run (print the exact commands, run nothing) and --project. `setup` ships the committed
tree (`git archive HEAD`) to ~/lm on all workers and installs requirements-tpu.txt. A multi-host workdir must be
storage every host sees (orbax writes one checkpoint from all hosts): a gs:// URL (lm writes buckets directly), or,
with --bucket, that GCS bucket mounted at ~/gcs with gcsfuse on every worker. `run` starts `python -m lm.main` on
all workers at once with LM_DISTRIBUTED=auto, so each process joins jax.distributed (the TPU metadata gives the
coordinator); its output goes to ~/lm_run.log on each worker.
"""
import shlex
import subprocess
import sys

from absl import app, flags

SUBCOMMANDS = ('create', 'setup', 'run', 'logs', 'delete')
_NAME = flags.DEFINE_string('name', None, 'TPU VM (node) name.')
_ZONE = flags.DEFINE_string('zone', None, 'Zone, e.g. us-east5-a (v5p), us-west4-a (v5e), us-east1-d (v6e).')
_PROJECT = flags.DEFINE_string('project', '', 'GCP project (default: gcloud config).')
_ACCELERATOR = flags.DEFINE_string('accelerator', 'v5p-8', 'create: accelerator type, e.g. v5p-128, v5litepod-256.')
_VERSION = flags.DEFINE_string('version', '', 'create: TPU VM runtime (default: by family, e.g. v2-alpha-tpuv5).')
_QUEUED = flags.DEFINE_bool('queued', False, 'create/delete: through a queued resource (waits for capacity).')
_SPOT = flags.DEFINE_bool('spot', False, 'create: Spot capacity (preemptible; lm resumes from its checkpoints).')
_BUCKET = flags.DEFINE_string('bucket', '', 'setup: GCS bucket to mount at ~/gcs on every worker (gcsfuse).')
_DEST = flags.DEFINE_string('dest', 'logs', 'logs: local directory for the copied logs.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')

_RUNTIMES = (('v6e', 'v2-alpha-tpuv6e'), ('v5p', 'v2-alpha-tpuv5'), ('v5litepod', 'v2-alpha-tpuv5-lite'),
             ('v4', 'tpu-ubuntu2204-base'))
_LOG = '~/lm_run.log'


def _where() -> list[str]:
  return [f'--zone={_ZONE.value}'] + ([f'--project={_PROJECT.value}'] if _PROJECT.value else [])


def _ssh(command: str, worker: str = 'all') -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', _NAME.value, *_where(), f'--worker={worker}',
          f'--command={command}']


def create() -> list[list[str]]:
  """The create command: a TPU VM, or a queued resource that creates it when capacity frees up."""
  version = _VERSION.value or next((v for family, v in _RUNTIMES if _ACCELERATOR.value.startswith(family)),
                                   'tpu-ubuntu2204-base')
  spot = ['--spot'] if _SPOT.value else []
  if _QUEUED.value:
    return [['gcloud', 'compute', 'tpus', 'queued-resources', 'create', f'{_NAME.value}-qr',
             f'--node-id={_NAME.value}', *_where(), f'--accelerator-type={_ACCELERATOR.value}',
             f'--runtime-version={version}', *spot]]
  return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', _NAME.value, *_where(),
           f'--accelerator-type={_ACCELERATOR.value}', f'--version={version}', *spot]]


def setup() -> list[list[str]]:
  """Ship the committed tree to every worker, install the TPU requirements, optionally mount the bucket."""
  install = 'mkdir -p ~/lm && tar xzf ~/lm.tar.gz -C ~/lm && cd ~/lm && pip install -q -r requirements-tpu.txt'
  commands = [['git', 'archive', '--format=tar.gz', '-o', '/tmp/lm.tar.gz', 'HEAD'],
              ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '/tmp/lm.tar.gz', f'{_NAME.value}:~/lm.tar.gz',
               *_where(), '--worker=all'],
              _ssh(install)]
  if _BUCKET.value:
    mount = ('(command -v gcsfuse || (export GCSFUSE_REPO=gcsfuse-$(lsb_release -c -s) && echo "deb '
             'https://packages.cloud.google.com/apt $GCSFUSE_REPO main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list'
             ' && curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get '
             f'update -q && sudo apt-get install -yq gcsfuse)) && mkdir -p ~/gcs && gcsfuse --implicit-dirs '
             f'{_BUCKET.value} ~/gcs')
    commands.append(_ssh(mount))
  return commands


def run(lm_args: list[str]) -> list[list[str]]:
  """lm.main on every worker at once (jax.distributed across them), output to ~/lm_run.log on each."""
  command = f'set -o pipefail; cd ~/lm && LM_DISTRIBUTED=auto python -m lm.main {shlex.join(lm_args)} 2>&1 | tee {_LOG}'
  return [_ssh(command)]


def logs() -> list[list[str]]:
  """Worker 0's run log (process 0 prints the metrics) into --dest."""
  return [['mkdir', '-p', _DEST.value],
          ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', f'{_NAME.value}:{_LOG}', f'{_DEST.value}/', *_where(),
           '--worker=0']]


def delete() -> list[list[str]]:
  if _QUEUED.value:
    return [['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', f'{_NAME.value}-qr', *_where(), '--force',
             '--quiet']]
  return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', _NAME.value, *_where(), '--quiet']]


def execute(commands: list[list[str]], dry_run: bool) -> int:
  """Prints each command; runs them in order unless dry_run, stopping at the first failure (its exit status)."""
  for command in commands:
    print(shlex.join(command), flush=True)
    if not dry_run:
      status = subprocess.call(command)
      if status:
        return status
  return 0


def main(argv):
  if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
    raise app.UsageError(f'give a subcommand: one of {", ".join(SUBCOMMANDS)}')
  if not _NAME.value or not _ZONE.value:
    raise app.UsageError('--name and --zone are required')
  subcommand, rest = argv[1], argv[2:]
  if rest and subcommand != 'run':
    raise app.UsageError(f'unexpected arguments: {rest}')
  commands = run(rest) if subcommand == 'run' else globals()[subcommand]()
  sys.exit(execute(commands, _DRY_RUN.value))


if __name__ == '__main__':
  app.run(main)
