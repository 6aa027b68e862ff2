"""A run's workdir: the files training writes beside the checkpoints (config.json, the tokenizer), and loading a run
for inference (lm.generate, lm.evaluate, lm.fill_mask, to_hf): config.json, the tokenizer and the parameters of one
checkpoint, without the training data pipeline or the optimizer state."""
import json
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from lm.config import resume
from lm.data import tokenizer as tokenizer_lib
from lm.errors import CheckpointError, UsageError
from lm.models import registry
from lm.parallel import sharding
from lm.store import checkpoint, paths, pretrained


class LoadedRun(NamedTuple):
  config: ml_collections.ConfigDict
  tokenizer: tokenizer_lib.Tokenizer
  model: object
  params: dict
  step: int
  mesh: jax.sharding.Mesh


def parse_mesh(text: str) -> dict:
  """'data,fsdp,tensor' sizes (e.g. '1,2,4'; -1 = the remaining devices) -> config.mesh values; '' = data=-1."""
  if not text:
    return {'data': -1, 'fsdp': 1, 'tensor': 1}
  try:
    sizes = [int(part) for part in text.split(',')]
  except ValueError:
    sizes = []
  if len(sizes) != len(sharding.MESH_AXES):
    raise UsageError(f'--mesh={text!r}: give three sizes data,fsdp,tensor such as 1,1,8 (-1 = the rest)')
  return dict(zip(sharding.MESH_AXES, sizes))


def _checkpoint_step(workdir: str, folder: str, step: int | None, best: bool) -> int:
  """The requested (or latest) step present in `folder`; CheckpointError / UsageError otherwise."""
  steps = ocp.CheckpointManager(folder).all_steps() if paths.path(folder).is_dir() else []
  if not steps:
    raise CheckpointError(f'--workdir={workdir}: no checkpoint in {folder}; train first'
                      + (' with --config.best_metric set' if best else ''))
  step = max(steps) if step is None else step
  if step not in steps:
    raise UsageError(f'--step={step}: no such checkpoint in {folder}; there are {sorted(steps)}')
  return step


def load(workdir: str, step: int | None = None, best: bool = False, mesh: str = '') -> LoadedRun:
  """The run in `workdir` at checkpoint `step` (default: the latest), or its best checkpoint (`best`, see
  config.best_metric). Parameters are placed on `mesh` ('data,fsdp,tensor', see parse_mesh; default: replicated on
  every device) by the model's logical axis rules. An LmError (one line) if anything is missing."""
  config_path = paths.path(workdir) / 'config.json'
  if not config_path.is_file():
    raise UsageError(f'--workdir={workdir}: no config.json there; give the workdir of a training run')
  config = resume.from_saved(json.loads(config_path.read_text()))
  folder = os.path.join(paths.absolute(workdir), checkpoint.BEST_DIR if best else 'checkpoints')
  step = _checkpoint_step(workdir, folder, step, best)
  tokenizer = tokenizer_lib.load_run_tokenizer(workdir)
  config.mesh.update(parse_mesh(mesh), dcn_data=1)
  device_mesh = sharding.make_mesh(config.mesh)
  model = registry.build(config.model)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))['params'])
  target = checkpoint.abstract_with_shardings(nn.unbox(boxed), sharding.logical_shardings(
      boxed, device_mesh, sharding.logical_rules(config.mesh)))
  try:
    params = checkpoint.restore_params(checkpoint.state_item(folder, step),
                                       checkpoint.persistent_params(target, config.model))
  except (ValueError, FileNotFoundError) as e:
    raise CheckpointError(f'{folder}/{step}: cannot restore its parameters into model {config.model.type} '
                      f'({" ".join(str(e).split())[:300]})') from e
  if config.model.lora_rank:  # a LoRA run's checkpoints hold its adapters and heads: the base is init_from's
    params = _with_base(config, target, params)
  return LoadedRun(config, tokenizer, model, params, step, device_mesh)


def _with_base(config, target, adapters):
  """The full parameters of a LoRA run: init_from's base parameters with the run's adapters and heads."""
  saved = checkpoint.flatten(adapters)
  base = {k: v for k, v in checkpoint.flatten(target).items() if k not in saved}
  loaded = pretrained.load_pretrained(config.init_from, checkpoint.unflatten(base), config, report=False)
  return checkpoint.merge_params(target, {**loaded, **saved})


def write_run_files(config, workdir: str, tokenizer) -> None:
  """config.json (the resolved config) and the tokenizer, so the workdir is self-contained (process 0 writes)."""
  if jax.process_index() != 0:
    return
  with paths.atomic_output(os.path.join(workdir, 'config.json')) as tmp:
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
  tokenizer.save_in(workdir)
