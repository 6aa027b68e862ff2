"""Device mesh from `config.mesh`, logical axis rules, and shardings of the train state and batches.

One code path for 1 device and for a pod: a 1-device run is a (1, 1, 1) mesh.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lm.config import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
# Logical axis -> mesh axis, t5x style. A logical axis may list several rules: the first whose mesh axis is not
# already used by another dimension of the same array wins (so `embed` is fsdp-sharded in parameters, and
# replicated in activations whose batch dimension already took fsdp).
LOGICAL_RULES = (
    ('batch', BATCH_AXES),
    ('length', None),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('vocab', 'tensor'),
    ('layers', None),
)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Resolves `config.mesh` (-1 = the remaining devices) to (data, fsdp, tensor) for `num_devices` devices."""
  sizes = {axis: int(mesh_cfg[axis]) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise ConfigError(f'mesh.{axis}={size} must be a positive size or -1 (the remaining devices)')
  if len(free) > 1:
    raise ConfigError(f'mesh: only one axis may be -1, got {free}')
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ConfigError(f'mesh.{free[0]}=-1: {num_devices} devices are not divisible by the other axes ({fixed})')
    sizes[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ConfigError(f'mesh: data*fsdp*tensor={fixed} but there are {num_devices} devices; '
                      f'make the product {num_devices} or set one axis to -1')
  return tuple(sizes[axis] for axis in MESH_AXES)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A `Mesh(('data', 'fsdp', 'tensor'))` over `devices` (default: all), with automatic (GSPMD) axes."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices)


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  """Number of batch shards: data * fsdp."""
  return mesh.shape['data'] * mesh.shape['fsdp']


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batches are split along their leading dimension over data and fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(boxed_tree, mesh: jax.sharding.Mesh):
  """NamedShardings for a tree whose leaves carry logical axis names (`nn.Partitioned`); others are replicated."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def global_batch(local_batch: dict, mesh: jax.sharding.Mesh) -> dict:
  """Assembles each process's local numpy batch into global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out
