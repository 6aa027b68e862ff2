"""Loading a run for inference (fill-mask now; generation and evaluation later): config.json, tokenizer.model and
the parameters of a checkpoint, without the training data pipeline."""
import json
import os
from typing import NamedTuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from lm import checkpoint, models, monitors, optim, sharding, train
from lm import config as config_lib
from lm.config import ConfigError
from lm.data import tokenizer as tokenizer_lib


class LoadedRun(NamedTuple):
  config: ml_collections.ConfigDict
  tokenizer: tokenizer_lib.Tokenizer
  model: object
  params: dict
  step: int
  mesh: jax.sharding.Mesh


def load(workdir: str, step: int | None = None, best: bool = False) -> LoadedRun:
  """The run in `workdir` at checkpoint `step` (default: the latest), or its best checkpoint (`best`, see
  config.best_metric). ConfigError (one line) if anything is missing."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise ConfigError(f'--workdir={workdir}: no config.json there; give the workdir of a training run')
  with open(config_path) as f:
    config = config_lib.from_saved(json.load(f))
  tokenizer = tokenizer_lib.Tokenizer.load(os.path.join(workdir, 'tokenizer.model'))
  folder = os.path.join(os.path.abspath(workdir), monitors.BEST_DIR if best else 'checkpoints')
  manager = ocp.CheckpointManager(folder)
  steps = manager.all_steps()
  if not steps:
    raise ConfigError(f'--workdir={workdir}: no checkpoint in {folder}; train first'
                      + (' with --config.best_metric set' if best else ''))
  step = max(steps) if step is None else step
  if step not in steps:
    raise ConfigError(f'--step={step}: no such checkpoint in {folder}; there are {sorted(steps)}')
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1  # inference: local devices, replicated params
  mesh = sharding.make_mesh(config.mesh)
  model = models.build(config.model)
  abstract, shardings, _ = train.abstract_state(config, model, optim.build(config), mesh)
  target = checkpoint.abstract_with_shardings(abstract, shardings)
  if best:  # best checkpoints hold the state alone, the others also the data-iterator position
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  else:
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  manager.close()
  return LoadedRun(config, tokenizer, model, state.params, step, mesh)
