"""Orbax checkpoints of the train state and the grain data-iterator position, in `<workdir>/checkpoints`, and
`load_pretrained`: the parameters of another run for init_from."""
import contextlib
import logging
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from lm import config as config_lib, models, optim
from lm.config import ConfigError

BEST_DIR = 'best'  # <workdir>/best/<step>: the best checkpoint so far (one), see monitors.BestCheckpoint


class SaveError(RuntimeError):
  """A checkpoint could not be written (read-only or full disk, ...): the run stops rather than go on unsaved."""


def _save_error(directory: str, what: str, error: Exception) -> SaveError:
  reason = ' '.join(str(error).split())[:300] or type(error).__name__
  return SaveError(f'{directory}: cannot {what} ({reason}); check free space and write permission there')


class Checkpointer:
  """Saves every `checkpoint_every_steps` (async), keeps the last K, restores the latest onto given shardings."""

  def __init__(self, workdir: str, config):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, enable_async_checkpointing=config.async_checkpoints, create=True)
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise _save_error(self.directory, 'create the checkpoint directory', e) from e

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator) -> None:
    """Starts writing state + data position for `step` (returns before the write ends when async)."""
    if step in self.manager.all_steps():
      return
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
    try:
      self.manager.save(step, args=args)  # also reports a failure of the previous asynchronous save
    except Exception as e:  # noqa: BLE001 (OSError, tensorstore and orbax errors alike)
      raise _save_error(self.directory, f'write checkpoint {step} (or finish the one before)', e) from e

  def restore(self, step: int, abstract_state, data_iterator):
    """Restores `step` onto the shardings in `abstract_state` (ShapeDtypeStructs); moves the iterator in place."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              data=grain.checkpoint.CheckpointRestore(data_iterator))
    return self.manager.restore(step, args=args)['state']

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` (unreadable) to <workdir>/checkpoints_unreadable/<step>[.N] (process 0 moves, every
    process waits for it); returns the new path."""
    import shutil
    target = os.path.join(os.path.dirname(self.directory), 'checkpoints_unreadable', str(step))
    suffix = 0
    while os.path.exists(target + (f'.{suffix}' if suffix else '')):
      suffix += 1
    target += f'.{suffix}' if suffix else ''
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f'lm_set_aside_{step}')
    self.manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until pending writes are committed; SaveError if one failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise _save_error(self.directory, 'finish writing a checkpoint', e) from e

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    self.wait()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what orbax restores onto."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@contextlib.contextmanager
def _quiet_orbax():
  """Hides orbax's warnings about items it is not asked to read (the data iterator, step metadata)."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def flatten(tree) -> dict:
  """{"block_0/attn/query/kernel": leaf} of a parameter tree (the one path naming, optim.path_name)."""
  return {optim.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflat(flat: dict) -> dict:
  tree = {}
  for name, leaf in flat.items():
    *parents, last = name.split('/')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = leaf
  return tree


def _mismatch_hint(init_from: str, config) -> str:
  """'; model.d_ff=512 here but 1024 there' for the model keys that differ from the pretrained run's config."""
  theirs = config_lib.init_from_config(init_from).model
  differ = [f'model.{k}={config.model[k]!r} here but {theirs[k]!r} there' for k in sorted(config.model.keys())
            if k in theirs and k != 'num_labels' and config.model[k] != theirs[k]]
  return '; ' + ', '.join(differ) if differ else ''


def load_pretrained(init_from: str, params, config) -> dict:
  """{path: array} of every leaf of `params` (arrays or ShapeDtypeStructs with shardings) whose path and shape the
  latest checkpoint of run `init_from` also has, restored onto that leaf's sharding; `merge_params` puts them in.
  Prints loaded / newly initialised / dropped.

  Only task heads (models.TASK_HEADS) may be new. A path present in both with different shapes, or a non-head
  parameter the checkpoint lacks, is a ConfigError naming it and the model keys that differ.
  """
  directory = os.path.join(os.path.abspath(init_from), 'checkpoints')
  step = ocp.CheckpointManager(directory).latest_step() if os.path.isdir(directory) else None
  if step is None:
    raise ConfigError(f'init_from={init_from!r}: no checkpoint in {directory}; train that run first')
  path = os.path.join(directory, str(step), 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  with _quiet_orbax():
    saved = flatten(checkpointer.metadata(path).item_metadata.tree['params'])
  ours = flatten(params)
  for name in sorted(set(saved) & set(ours)):
    if tuple(saved[name].shape) != tuple(ours[name].shape):
      raise ConfigError(f'init_from: parameter {name} has shape {tuple(saved[name].shape)} in {init_from} but '
                        f'{tuple(ours[name].shape)} in this model{_mismatch_hint(init_from, config)}')
  loaded = sorted(set(saved) & set(ours))
  missing = [name for name in sorted(set(ours) - set(saved)) if name.split('/')[0] not in models.TASK_HEADS]
  if missing:
    unused = sorted(set(saved) - set(ours))
    raise ConfigError(f'init_from: {init_from} has no parameter {missing[0]} ({len(missing)} of this model\'s '
                      f'pretrained parameters are missing; unused there: {", ".join(unused[:4]) or "none"}): a run of '
                      f'another layout or version{_mismatch_hint(init_from, config)}; convert it or pretrain again')
  target = {name: jax.ShapeDtypeStruct(ours[name].shape, ours[name].dtype, sharding=ours[name].sharding)
            for name in loaded}
  restored = restore_params(path, _unflat(target))
  _print_init_table(init_from, step, saved, ours, loaded)
  return flatten(restored)


def state_item(directory: str, step: int) -> str:
  """The folder of the train state in checkpoint `step` of a manager's `directory`: `state` (the Composite of the
  training checkpoints) or `default` (best checkpoints, which hold the state alone)."""
  for item in ('state', 'default'):
    path = os.path.join(directory, str(step), item)
    if os.path.isdir(path):
      return path
  raise ConfigError(f'{os.path.join(directory, str(step))}: holds no train state; not an lm checkpoint')


def restore_params(path: str, target):
  """The `params` (or the subset of them that `target` names) of the train state saved at `path`, restored onto
  target's ShapeDtypeStructs (shape, dtype, sharding). The optimizer state is not read."""
  target = {'params': target}
  with _quiet_orbax():
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  return restored['params']


def merge_params(params, loaded: dict):
  """`params` with the leaves named in `loaded` ({'block_0/attn/query/kernel': array}) replaced."""
  flat = flatten(params)
  return jax.tree.unflatten(jax.tree.structure(params), [loaded.get(name, leaf) for name, leaf in flat.items()])


def _print_init_table(init_from: str, step: int, saved: dict, ours: dict, loaded: list) -> None:
  """The loaded / newly initialised / dropped table of init_from."""
  if jax.process_index() != 0:
    return
  rows = (('loaded', loaded, ours), ('newly initialised', sorted(set(ours) - set(saved)), ours),
          ('dropped (unused)', sorted(set(saved) - set(ours)), saved))
  print(f'init_from {init_from} (step {step}):', flush=True)
  print(f'  {"":18} {"tensors":>8} {"parameters":>12}  names', flush=True)
  for label, names, shapes in rows:
    count = sum(int(np.prod(shapes[n].shape)) for n in names)
    if label == 'loaded':
      listed = ', '.join(sorted({n.split('/')[0] for n in names}))
    else:
      listed = ', '.join(names[:8]) + (f', ... ({len(names) - 8} more)' if len(names) > 8 else '')
    print(f'  {label:18} {len(names):8d} {count:12,d}  {listed}', flush=True)
