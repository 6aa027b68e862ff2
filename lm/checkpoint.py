"""Orbax checkpoints of the train state and the grain data-iterator position, in `<workdir>/checkpoints`."""
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves every `checkpoint_every_steps` (async), keeps the last K, restores the latest onto given shardings."""

  def __init__(self, workdir: str, config):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, enable_async_checkpointing=config.async_checkpoints, create=True)
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator) -> None:
    """Starts writing state + data position for `step` (returns before the write ends when async)."""
    if step in self.manager.all_steps():
      return
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator))
    self.manager.save(step, args=args)

  def restore(self, step: int, abstract_state, data_iterator):
    """Restores `step` onto the shardings in `abstract_state` (ShapeDtypeStructs); moves the iterator in place."""
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              data=grain.checkpoint.CheckpointRestore(data_iterator))
    return self.manager.restore(step, args=args)['state']

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what orbax restores onto."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
