"""Loading a run for inference (fill-mask now; generation and evaluation later): config.json, tokenizer.model and
the parameters of a checkpoint, without the training data pipeline."""
import json
import os
from typing import NamedTuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from lm import checkpoint, models, optim, sharding, train
from lm.config import ConfigError
from lm.data import tokenizer as tokenizer_lib


class LoadedRun(NamedTuple):
  config: ml_collections.ConfigDict
  tokenizer: tokenizer_lib.Tokenizer
  model: object
  params: dict
  step: int
  mesh: jax.sharding.Mesh


def load(workdir: str, step: int | None = None) -> LoadedRun:
  """The run in `workdir` at checkpoint `step` (default: the latest). ConfigError (one line) if anything is missing."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise ConfigError(f'--workdir={workdir}: no config.json there; give the workdir of a training run')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  tokenizer = tokenizer_lib.Tokenizer.load(os.path.join(workdir, 'tokenizer.model'))
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'))
  steps = manager.all_steps()
  if not steps:
    raise ConfigError(f'--workdir={workdir}: no checkpoint in {workdir}/checkpoints; train first')
  step = max(steps) if step is None else step
  if step not in steps:
    raise ConfigError(f'--step={step}: no such checkpoint in {workdir}/checkpoints; there are {sorted(steps)}')
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1  # inference: local devices, replicated params
  mesh = sharding.make_mesh(config.mesh)
  model = models.build(config.model)
  abstract, shardings, _ = train.abstract_state(config, model, optim.build(config), mesh)
  target = checkpoint.abstract_with_shardings(abstract, shardings)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  manager.close()
  return LoadedRun(config, tokenizer, model, state.params, step, mesh)
