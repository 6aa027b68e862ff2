"""Multi-host start-up: jax.distributed when asked (flags or LM_* variables) or when a cluster is detected (SLURM,
multi-host TPU slices, multi-slice jobs); never on a plain single host."""
import os

import jax

from lm.errors import UsageError


def cluster_from_env(env) -> str | None:
  """The multi-host cluster this process runs in, as jax.distributed can detect it: 'requested' (LM_DISTRIBUTED=auto,
  set by launch/tpu.py), 'slurm' (SLURM_JOB_ID with more than one task), 'tpu' (a multi-host TPU VM slice or a
  multi-slice job), or None on a plain single host."""
  if env.get('LM_DISTRIBUTED') == 'auto':  # set by launch/ scripts: let jax.distributed find the cluster itself
    return 'requested'
  if 'SLURM_JOB_ID' in env and int(env.get('SLURM_NTASKS', env.get('SLURM_NPROCS', '1'))) > 1:
    return 'slurm'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', '') or 'MEGASCALE_COORDINATOR_ADDRESS' in env:
    return 'tpu'
  return None


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                           env=None) -> str:
  """Starts jax's multi-controller runtime when asked (arguments, or LM_COORDINATOR_ADDRESS / LM_NUM_PROCESSES /
  LM_PROCESS_ID) or when a cluster is detected (cluster_from_env); never on a plain single host. Call it before any
  other jax call. Returns what it did, for the log. UsageError when the multi-process flags are incomplete."""
  env = os.environ if env is None else env
  address = coordinator_address or env.get('LM_COORDINATOR_ADDRESS', '')
  count = num_processes or int(env.get('LM_NUM_PROCESSES', '0'))
  index = process_id if process_id >= 0 else int(env.get('LM_PROCESS_ID', '-1'))
  if address or count:
    if not (address and count > 0 and 0 <= index < count):
      raise UsageError(f'multi-process: give all of --coordinator_address (got {address!r}), --num_processes '
                       f'(got {count}) and --process_id in [0, num_processes) (got {index})')
    jax.distributed.initialize(address, count, index)
    return f'process {index} of {count} (coordinator {address})'
  cluster = cluster_from_env(env)
  if cluster:
    ids = env.get('LM_LOCAL_DEVICE_IDS')  # launch/slurm.py --per=node: this process drives all its node's GPUs
    local = [int(i) for i in ids.split(',')] if ids else None
    jax.distributed.initialize(local_device_ids=local)  # the rest from the cluster's environment (SLURM, TPU)
    return f'process {jax.process_index()} of {jax.process_count()} ({cluster} cluster detected)'
  return 'single process'
