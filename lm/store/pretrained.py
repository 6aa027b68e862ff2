"""init_from: the parameters of another run that match this model, restored onto this run's shardings, with the
loaded / newly initialised / dropped table."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from lm.config import resume
from lm.errors import ConfigError
from lm.models import registry
from lm.store import checkpoint, paths


def _mismatch_hint(init_from: str, config) -> str:
  """'; model.d_ff=512 here but 1024 there' for the model keys that differ from the pretrained run's config."""
  theirs = resume.init_from_config(init_from).model
  differ = [f'model.{k}={config.model[k]!r} here but {theirs[k]!r} there' for k in sorted(config.model.keys())
            if k in theirs and k != 'num_labels' and config.model[k] != theirs[k]]
  return '; ' + ', '.join(differ) if differ else ''


def load_pretrained(init_from: str, params, config, report: bool = True) -> dict:
  """{path: array} of every leaf of `params` (arrays or ShapeDtypeStructs with shardings) whose path and shape the
  latest checkpoint of run `init_from` also has, restored onto that leaf's sharding; `merge_params` puts them in.
  Prints loaded / newly initialised / dropped (unless not `report`).

  Only task heads (registry.TASK_HEADS) and LoRA adapters may be new. A path present in both with different shapes,
  or another parameter the checkpoint lacks, is a ConfigError naming it and the model keys that differ.
  """
  directory = os.path.join(paths.absolute(init_from), 'checkpoints')
  step = ocp.CheckpointManager(directory).latest_step() if paths.path(directory).is_dir() else None
  if step is None:
    raise ConfigError(f'init_from={init_from!r}: no checkpoint in {directory}; train that run first')
  path = os.path.join(directory, str(step), 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  with checkpoint.quiet_orbax():
    saved = checkpoint.flatten(checkpointer.metadata(path).item_metadata.tree['params'])
  ours = checkpoint.flatten(params)
  for name in sorted(set(saved) & set(ours)):
    if tuple(saved[name].shape) != tuple(ours[name].shape):
      raise ConfigError(f'init_from: parameter {name} has shape {tuple(saved[name].shape)} in {init_from} but '
                        f'{tuple(ours[name].shape)} in this model{_mismatch_hint(init_from, config)}')
  loaded = sorted(set(saved) & set(ours))
  missing = [name for name in sorted(set(ours) - set(saved)) if not registry.added_by_finetuning(name)]
  if missing:
    unused = sorted(set(saved) - set(ours))
    raise ConfigError(f'init_from: {init_from} has no parameter {missing[0]} ({len(missing)} of this model\'s '
                      f'pretrained parameters are missing; unused there: {", ".join(unused[:4]) or "none"}): a run of '
                      f'another layout or version{_mismatch_hint(init_from, config)}; convert it or pretrain again')
  target = {name: jax.ShapeDtypeStruct(ours[name].shape, ours[name].dtype, sharding=ours[name].sharding)
            for name in loaded}
  restored = checkpoint.restore_params(path, checkpoint.unflatten(target))
  if report:
    _print_init_table(init_from, step, saved, ours, loaded)
  return checkpoint.flatten(restored)


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
