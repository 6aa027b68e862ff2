"""Ahead-of-time compilation of the real train step for a Cloud TPU topology on any machine (libtpu's compile-only
devices): per-chip memory, FLOPs and whether it fits. lm.aot is the command."""
import math
import os

import jax

from lm.data import pipeline
from lm.errors import UsageError
from lm.models import registry
from lm.parallel import sharding
from lm.perf import flops
from lm.store import checkpoint
from lm.training import optim, state as state_lib, step as step_lib

# Usable HBM per chip as XLA's TPU compiler reports it, and the chips' physical layout.
_HBM_BYTES = (('v6 lite', 31.25 * 2**30), ('v5 lite', 15.75 * 2**30), ('v5', 95.74 * 2**30), ('v4', 32 * 2**30))
_CORES_PER_CHIP = {'v5p': 2, 'v4': 2, 'v5e': 1, 'v6e': 1}
_TORUS_3D = ('v5p', 'v4')


def chip_grid(chips: int, dims: int) -> tuple[int, ...]:
  """The near-cubic power-of-two grid of `chips` chips (Cloud TPU's slice shapes: 64 -> 4x4x4, 256 -> 16x16)."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f'{chips} chips: TPU slices have a power-of-two number of chips')
  grid = [1] * dims
  for _ in range(int(math.log2(chips))):  # double the smallest axis, the last one on ties: 2x2x2 -> 2x2x4 -> 2x4x4
    smallest = min(grid)
    grid[max(i for i, size in enumerate(grid) if size == smallest)] *= 2
  return tuple(sorted(grid, reverse=True)) if 1 in grid else tuple(grid)  # 1x2x2 is named 2x2x1


def topology_name(name: str) -> str:
  """'v5p-128' -> 'v5p:4x4x4' (get_topology_desc's form); a name with ':' passes through."""
  if ':' in name:
    return name
  family, _, count = name.partition('-')
  if family not in _CORES_PER_CHIP or not count.isdigit():
    raise UsageError(f'--topology={name}: use v5p-N, v4-N, v5e-N, v6e-N (e.g. v5p-128) or a physical form such as '
                      'v5p:4x4x4')
  chips = int(count) // _CORES_PER_CHIP[family]
  try:
    grid = chip_grid(chips, 3 if family in _TORUS_3D else 2)
  except ValueError as e:
    raise UsageError(f'--topology={name}: {e}') from e
  return f'{family}:{"x".join(map(str, grid))}'


def topology_devices(name: str, num_slices: int):
  """The compile-only devices of a TPU topology (needs libtpu; UsageError with the fix when it is missing), or
  this machine's CPU devices for 'cpu' (memory analysis of a step without an accelerator)."""
  if name == 'cpu':
    return jax.devices('cpu')
  from jax.experimental import topologies
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', 'v5p-8')  # silences libtpu's search for a local TPU
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')  # several compile-only processes on one machine
  try:
    return topologies.get_topology_desc(topology_name(name), platform='tpu', num_slices=num_slices).devices
  except RuntimeError as e:
    if 'not installed' in str(e):
      raise UsageError('lm.aot needs libtpu: pip install -r requirements-tpu.txt (no TPU needed)') from e
    raise UsageError(f'--topology={name}: {" ".join(str(e).split())[:200]}') from e


def compile_train_step(config, devices):
  """(compiled train step, number of parameters, mesh) for `config` on `devices`."""
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  model = registry.build(config.model)
  abstract, shardings, _ = state_lib.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
  batch = {key: jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=sharding.batch_sharding(mesh))
           for key, spec in pipeline.batch_spec(config).items()}
  with jax.set_mesh(mesh):
    compiled = p_train.lower(checkpoint.abstract_with_shardings(abstract, shardings), batch).compile()
  return compiled, sum(math.prod(x.shape) for x in jax.tree.leaves(abstract.params)), mesh


def report(config, devices, compiled, num_params: int, mesh, topology: str, num_slices: int) -> dict:
  """Per-chip memory and FLOPs of the compiled step, and whether it fits in HBM."""
  kind = devices[0].device_kind
  hbm = next((size for key, size in _HBM_BYTES if key in kind.lower()), 0.0)
  if devices[0].platform == 'cpu':  # host memory, shared by the CPU devices of this process
    hbm = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / len(devices)
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  tokens = config.batch_size * flops.tokens_per_example(config)
  live = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
          + memory.temp_size_in_bytes)
  peak = max(memory.peak_memory_in_bytes, live)  # the larger of XLA's peak and all buffers at once: conservative
  model_flops = flops.flops_per_step(config, num_params)
  chip_peak = flops.peak_flops_per_device(devices[0])
  return {'topology': topology, 'num_slices': num_slices, 'chips': len(devices), 'device_kind': kind,
          'hosts': len({d.process_index for d in devices}), 'params': num_params,
          'mesh': dict(mesh.shape),
          'batch_tokens': tokens, 'argument_gib': memory.argument_size_in_bytes / 2**30,
          'output_gib': memory.output_size_in_bytes / 2**30, 'alias_gib': memory.alias_size_in_bytes / 2**30,
          'temp_gib': memory.temp_size_in_bytes / 2**30, 'xla_peak_gib': memory.peak_memory_in_bytes / 2**30,
          'total_gib': peak / 2**30, 'hbm_gib': hbm / 2**30, 'fits': bool(hbm) and peak <= hbm,
          'model_flops_per_step': model_flops,  # 6N + 12LdT per token (flops.flops_per_step)
          'xla_flops_per_chip': float(cost.get('flops', 0.0)),  # XLA counts a scanned (while) body once
          'step_seconds_at_50pct_mfu': model_flops / len(devices) / (0.5 * chip_peak) if chip_peak else None}
