"""GPU clusters with SLURM: write an sbatch script that runs lm.main as one multi-process jax job, and submit it.

  python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu --time=24:00:00 -- \
      --config=configs/gpt_1b.py --workdir=/shared/runs/gpt_1b
  python -m launch.slurm ... --per=node      # one process per node driving its 8 GPUs
  python -m launch.slurm ... --dry_run       # print the script and the sbatch command only

--per=gpu (default) starts one process per GPU (nodes x gpus_per_node processes; every task sees the node's GPUs and
jax takes GPU SLURM_LOCALID); --per=node one per node, driving all its GPUs (LM_LOCAL_DEVICE_IDS). Every process calls
jax.distributed.initialize() from SLURM's environment (lm/parallel/distributed.py detects SLURM_JOB_ID with more than
one task); the workdir must be on a filesystem all nodes share.
"""
import os
import shlex
import subprocess
import sys

from absl import app, flags

_NODES = flags.DEFINE_integer('nodes', 1, 'Nodes to allocate.')
_GPUS = flags.DEFINE_integer('gpus_per_node', 8, 'GPUs per node.')
_PER = flags.DEFINE_enum('per', 'gpu', ['gpu', 'node'], 'One process per GPU or per node.')
_PARTITION = flags.DEFINE_string('partition', '', 'SLURM partition (default: the cluster default).')
_TIME = flags.DEFINE_string('time', '24:00:00', 'Time limit.')
_JOB = flags.DEFINE_string('job_name', 'lm', 'Job name; the log is <job_name>-<jobid>.out.')
_SCRIPT = flags.DEFINE_string('script', 'lm_job.sbatch', 'Where to write the sbatch script.')
_SETUP = flags.DEFINE_string('setup', '', 'Shell lines run first on each node (e.g. "source ~/venv/bin/activate").')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the script and the sbatch command, submit nothing.')


def script(lm_args: list[str], nodes: int, gpus: int, per: str, partition: str, time: str, job: str,
           setup: str) -> str:
  """The sbatch script text."""
  tasks = gpus if per == 'gpu' else 1
  lines = ['#!/bin/bash', f'#SBATCH --job-name={job}', f'#SBATCH --nodes={nodes}',
           f'#SBATCH --ntasks-per-node={tasks}', f'#SBATCH --gpus-per-node={gpus}', f'#SBATCH --time={time}',
           f'#SBATCH --output={job}-%j.out']
  if partition:
    lines.append(f'#SBATCH --partition={partition}')
  lines += ['set -euo pipefail', f'cd {shlex.quote(os.getcwd())}']
  if per == 'node':  # one process drives every GPU of its node (jax would otherwise take GPU SLURM_LOCALID only)
    lines.append(f'export LM_LOCAL_DEVICE_IDS={",".join(str(i) for i in range(gpus))}')
  if setup:
    lines.append(setup)
  lines.append(f'srun python -m lm.main {shlex.join(lm_args)}')
  return '\n'.join(lines) + '\n'


def main(argv):
  text = script(argv[1:], _NODES.value, _GPUS.value, _PER.value, _PARTITION.value, _TIME.value, _JOB.value,
                _SETUP.value)
  submit = ['sbatch', _SCRIPT.value]
  if _DRY_RUN.value:
    print(text + '# then: ' + shlex.join(submit))
    return
  with open(_SCRIPT.value, 'w') as f:
    f.write(text)
  print(f'wrote {_SCRIPT.value}; {shlex.join(submit)}', flush=True)
  sys.exit(subprocess.call(submit))


if __name__ == '__main__':
  app.run(main)
