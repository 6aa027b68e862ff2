"""Device mesh from `config.mesh`, logical axis rules, shardings of the train state and batches, and host transfers.

One code path for 1 device and for a pod: a 1-device run is a (1, 1, 1) mesh.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lm.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')  # the batch is always split over the data-parallel axes (each process feeds its rows)
# Logical axis -> mesh axes, t5x style: the defaults of `config.mesh.rules` ('batch' is fixed to BATCH_AXES). A mesh
# axis serves one dimension per array: in activations whose batch dimension took fsdp, `embed` stays replicated.
DEFAULT_RULES = (
    ('batch', BATCH_AXES),
    ('length', None),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('vocab', 'tensor'),
    ('layers', None),
)
# The model dimension behind each logical axis, named in divisibility errors.
_AXIS_KEYS = {'vocab': 'model.vocab_size', 'embed': 'model.d_model', 'mlp': 'model.d_ff', 'heads': 'model.num_heads',
              'kv': 'model.d_model/model.num_heads', 'layers': 'model.num_layers', 'length': 'model.max_len'}


def logical_rules(mesh_cfg) -> tuple:
  """The rule table of `config.mesh.rules` (logical axis -> comma-separated mesh axes, '' = replicated)."""
  rules = [('batch', BATCH_AXES)]
  for name, _ in DEFAULT_RULES[1:]:
    text = mesh_cfg.rules[name]
    axes = tuple(part.strip() for part in text.split(',') if part.strip())
    for axis in axes:
      if axis not in MESH_AXES:
        raise ConfigError(f'mesh.rules.{name}={text!r}: {axis!r} is not a mesh axis; give comma-separated names '
                          f"from {MESH_AXES}, or '' to replicate")
    rules.append((name, axes[0] if len(axes) == 1 else (axes or None)))
  return tuple(rules)


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Resolves `config.mesh` (-1 = the remaining devices) to (data, fsdp, tensor) for `num_devices` devices; the
  data size includes the mesh.dcn_data slices."""
  sizes = {axis: int(mesh_cfg[axis]) for axis in MESH_AXES}
  free = [axis for axis, size in sizes.items() if size == -1]
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise ConfigError(f'mesh.{axis}={size} must be a positive size or -1 (the remaining devices)')
  if len(free) > 1:
    raise ConfigError(f'mesh: only one axis may be -1, got {free}')
  slices = int(mesh_cfg.dcn_data)
  if slices < 1 or num_devices % slices:
    raise ConfigError(f'mesh.dcn_data={slices} must be >= 1 and divide the {num_devices} devices')
  per_slice = num_devices // slices
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if per_slice % fixed:
      raise ConfigError(f'mesh.{free[0]}=-1: {per_slice} devices per slice are not divisible by the other axes '
                        f'({fixed})')
    sizes[free[0]] = per_slice // fixed
  elif fixed != per_slice:
    raise ConfigError(f'mesh: data*fsdp*tensor={fixed} but there are {per_slice} devices per slice '
                      f'({num_devices} / mesh.dcn_data={slices}); make the product {per_slice} or set one axis to -1')
  sizes['data'] *= slices
  return tuple(sizes[axis] for axis in MESH_AXES)


def _by_process(devices) -> bool:
  """True where the slow-network granules are processes (GPU/CPU hosts), not TPU slices (device.slice_index)."""
  return len({getattr(d, 'slice_index', 0) for d in devices}) == 1


def num_slices(devices) -> int:
  """Granules joined by the slow network: TPU slices, else processes (GPU/CPU hosts)."""
  if _by_process(devices):
    return len({d.process_index for d in devices})
  return len({d.slice_index for d in devices})


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A `Mesh(('data', 'fsdp', 'tensor'))` over `devices` (default: all), with automatic (GSPMD) axes. With
  mesh.dcn_data > 1 the data axis spans the slices (or hosts): a hybrid mesh whose other axes stay inside one."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  slices = int(mesh_cfg.dcn_data)
  if slices == 1:
    try:
      return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    except NotImplementedError:  # an axis that cuts a physical TPU axis (e.g. tensor=4 on a 16x16 slice)
      from jax.experimental import mesh_utils
      grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
      return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
  if num_slices(devices) != slices:
    raise ConfigError(f'mesh.dcn_data={slices} but the devices form {num_slices(devices)} slices (TPU slices, or '
                      'processes elsewhere); set it to that number')
  from jax.experimental import mesh_utils
  grid = mesh_utils.create_hybrid_device_mesh((shape[0] // slices, *shape[1:]), (slices, 1, 1), devices,
                                              process_is_granule=_by_process(devices))
  return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def _shards(axes, axis_sizes) -> int:
  """How many pieces one dimension is cut into by its PartitionSpec entry (None, a mesh axis or a tuple of them)."""
  axes = (axes,) if isinstance(axes, str) else (axes or ())
  return math.prod(axis_sizes[a] for a in axes)


def check_divisible(boxed_tree, axis_sizes: dict, rules: tuple) -> None:
  """ConfigError naming the model key, the mesh axes and the rule when a parameter dimension (logical names, see
  nn.Partitioned) does not split evenly over the mesh axes its logical axis maps to."""
  leaves = jax.tree_util.tree_flatten_with_path(boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    if not isinstance(leaf, nn.Partitioned):
      continue
    spec = nn.logical_to_mesh_axes(leaf.names, rules)
    for size, axes, name in zip(leaf.value.shape, spec, leaf.names):
      shards = _shards(axes, axis_sizes)
      if size % shards:
        where = '*'.join(f'mesh.{a}' for a in ((axes,) if isinstance(axes, str) else axes))
        raise ConfigError(f'{_AXIS_KEYS.get(name, name)}={size} is not divisible by {where}={shards} (parameter '
                          f"{jax.tree_util.keystr(path)}, rule mesh.rules.{name}); change one of them or set "
                          f"--config.mesh.rules.{name}=''")


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  """Number of batch shards: data * fsdp."""
  return mesh.shape['data'] * mesh.shape['fsdp']


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batches are split along their leading dimension over data and fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fits(shape: tuple, spec: P, mesh: jax.sharding.Mesh) -> bool:
  """Whether an array of `shape` can take `spec`: one entry per dimension, each divisible by its mesh axes."""
  return len(shape) == len(spec) and all(size % _shards(axes, mesh.shape) == 0 for size, axes in zip(shape, spec))


def logical_shardings(boxed_tree, mesh: jax.sharding.Mesh, rules: tuple = DEFAULT_RULES):
  """NamedShardings for a tree whose leaves carry logical axis names (`nn.Partitioned`); others are replicated.
  Empty nodes stay empty (optax's MaskedNode, the missing state of a frozen parameter, boxed or not), so the result
  has the structure of the unboxed tree. A boxed optimizer-state leaf that is not its parameter's shape and does
  not fit the parameter's sharding (Adafactor's factored second moments: row and column vectors, [1] placeholders)
  is replicated; parameters themselves are checked against the mesh before this (config validation)."""
  def sharding_of(leaf):
    if isinstance(leaf, nn.Partitioned) and not jax.tree.leaves(leaf.value):
      return leaf.value  # a boxed MaskedNode (optax keeps no state for a frozen parameter)
    names = leaf.names if isinstance(leaf, nn.Partitioned) else ()
    spec = nn.logical_to_mesh_axes(names, rules)
    if names and not _fits(getattr(leaf.value, 'shape', ()), spec, mesh):
      spec = P()
    return jax.sharding.NamedSharding(mesh, spec)
  return jax.tree.map(sharding_of, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def global_batch(local_batch: dict, mesh: jax.sharding.Mesh) -> dict:
  """Assembles each process's local numpy batch into global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def to_host(x) -> np.ndarray:
  """A global jax.Array as one numpy array on every process (gathered when it spans other processes' devices)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
