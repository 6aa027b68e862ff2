"""Orbax checkpoints of the train state (and the grain data-iterator position, saved but not needed to resume) in
`<workdir>/checkpoints`; restoring the parameters alone (for inference and init_from, see pretrained.py)."""
import contextlib
import logging
import os

import grain
import jax
import orbax.checkpoint as ocp

from lm.errors import CheckpointError, SaveError
from lm.models import layers, registry
from lm.store import paths

BEST_DIR = 'best'  # <workdir>/best/<step>: the best checkpoint so far (one), see training/hooks.BestCheckpoint


def _save_error(directory: str, what: str, error: Exception) -> SaveError:
  reason = ' '.join(str(error).split())[:300] or type(error).__name__
  return SaveError(f'{directory}: cannot {what} ({reason}); check free space and write permission there')


class Checkpointer:
  """Saves every `checkpoint_every_steps` (async), keeps the last K, restores the latest onto given shardings."""

  def __init__(self, workdir: str, config):
    self.model_cfg = config.model
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, enable_async_checkpointing=config.async_checkpoints, create=True)
    self.directory = os.path.join(paths.absolute(workdir), 'checkpoints')
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
    state = persistent_state(state, self.model_cfg)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
    try:
      self.manager.save(step, args=args)  # also reports a failure of the previous asynchronous save
    except Exception as e:  # noqa: BLE001 (OSError, tensorstore and orbax errors alike)
      raise _save_error(self.directory, f'write checkpoint {step} (or finish the one before)', e) from e

  def restore(self, step: int, abstract_state):
    """Restores the train state of `step` onto the shardings in `abstract_state` (ShapeDtypeStructs). The saved
    data-iterator position is not read: training derives it from the step (pipeline.train_iterator), so a run
    resumes with any process count; it stays in the checkpoint for tools that read grain state."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(persistent_state(abstract_state, self.model_cfg)))
    return self.manager.restore(step, args=args)['state']

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` (unreadable) to <workdir>/checkpoints_unreadable/<step>[.N] (process 0 moves, every
    process waits for it); returns the new path."""
    target = os.path.join(os.path.dirname(self.directory), 'checkpoints_unreadable', str(step))
    suffix = 0
    while paths.path(target + (f'.{suffix}' if suffix else '')).exists():
      suffix += 1
    target += f'.{suffix}' if suffix else ''
    if jax.process_index() == 0:
      paths.move(os.path.join(self.directory, str(step)), target)
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


def persistent_params(params, model_cfg):
  """The parameters a checkpoint holds: all of them, or under LoRA (model.lora_rank) only the adapters and task
  heads — the frozen base is init_from's, loaded from there again on resume and by workdir.load."""
  if not model_cfg.lora_rank:
    return params
  return unflatten({k: v for k, v in flatten(params).items() if registry.added_by_finetuning(k)})


def persistent_state(state, model_cfg):
  """The train state as a checkpoint holds it (`persistent_params` of its parameters)."""
  return state if not model_cfg.lora_rank else state.replace(params=persistent_params(state.params, model_cfg))


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what orbax restores onto."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


@contextlib.contextmanager
def quiet_orbax():
  """Hides orbax's warnings about items it is not asked to read (the data iterator, step metadata)."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def flatten(tree) -> dict:
  """{"block_0/attn/query/kernel": leaf} of a parameter tree (the one path naming, layers.path_name)."""
  return {layers.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict) -> dict:
  """The nested parameter dict of {'block_0/attn/query/kernel': leaf} (`flatten`'s inverse for dict trees)."""
  tree = {}
  for name, leaf in flat.items():
    *parents, last = name.split('/')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = leaf
  return tree


def state_item(directory: str, step: int) -> str:
  """The folder of the train state in checkpoint `step` of a manager's `directory`: `state` (the Composite of the
  training checkpoints) or `default` (best checkpoints, which hold the state alone)."""
  for item in ('state', 'default'):
    path = os.path.join(directory, str(step), item)
    if paths.path(path).is_dir():
      return path
  raise CheckpointError(f'{os.path.join(directory, str(step))}: holds no train state; not an lm checkpoint')


def restore_params(path: str, target):
  """The `params` (or the subset of them that `target` names) of the train state saved at `path`, restored onto
  target's ShapeDtypeStructs (shape, dtype, sharding). The optimizer state is not read."""
  target = {'params': target}
  with quiet_orbax():
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  return restored['params']


def merge_params(params, loaded: dict):
  """`params` with the leaves named in `loaded` ({'block_0/attn/query/kernel': array}) replaced."""
  flat = flatten(params)
  return jax.tree.unflatten(jax.tree.structure(params), [loaded.get(name, leaf) for name, leaf in flat.items()])
