"""Fine-tuning monitors called by the train loop after evaluations.

`BestCheckpoint` keeps the state with the best `config.best_metric` in `<workdir>/best` and decides early stopping
(`config.early_stopping_patience`); after a resume it rebuilds its record from metrics.jsonl, which the writer has
already cut back to the restored step. `pretraining_eval` gives the config and batches with which the train loop
evaluates the init_from run's own pretraining objective on that run's eval data (`eval/pretrain_loss`,
`eval/pretrain_<objective>_...`) to watch catastrophic forgetting.
"""
import math
import os

import orbax.checkpoint as ocp

from lm import checkpoint, config as config_lib, metrics, sharding
from lm.data import pipeline, tokenizer as tokenizer_lib



def lower_is_better(metric: str) -> bool:
  """Loss and perplexity metrics improve downwards, the rest (accuracy, f1, ...) upwards."""
  return 'loss' in metric or 'perplexity' in metric


class BestCheckpoint:
  """Tracks config.best_metric over evaluations, saves the best state, and says when patience has run out."""

  def __init__(self, workdir: str, config, start_step: int):
    self.metric, self.patience = config.best_metric, config.early_stopping_patience
    self.sign = -1.0 if lower_is_better(self.metric) else 1.0
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), checkpoint.BEST_DIR), options=options)
    for step in self.manager.all_steps():  # saved after the checkpoint we resume from: not part of this history
      if step > start_step:
        self.manager.delete(step)
    self.best, self.best_step, self.evals_since_best = -math.inf, None, 0
    for row in metrics.read_rows(workdir, start_step):
      if self.metric in row:
        self._record(row['step'], row[self.metric])

  def _record(self, step: int, value: float) -> bool:
    if self.sign * value > self.best:
      self.best, self.best_step, self.evals_since_best = self.sign * value, step, 0
      return True
    self.evals_since_best += 1
    return False

  @property
  def exhausted(self) -> bool:
    """True when early stopping is on and the last `patience` evaluations brought no new best."""
    return bool(self.patience) and self.evals_since_best >= self.patience

  def update(self, step: int, eval_metrics: dict, state) -> bool:
    """Records one evaluation (saving the state if it is the best); returns True if training should stop."""
    if self.metric not in eval_metrics:
      raise config_lib.ConfigError(f'best_metric={self.metric!r} is not an eval metric of this run; choose from '
                                   f'{sorted(eval_metrics)}')
    if self._record(step, eval_metrics[self.metric]):
      self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
      self.manager.wait_until_finished()
      print(f'New best {self.metric} {eval_metrics[self.metric]:.4f} at step {step}: saved to '
            f'{self.manager.directory}', flush=True)
    return self.exhausted

  def close(self) -> None:
    self.manager.close()


def converted(workdir: str) -> bool:
  """True for a workdir made by lm.convert from_hf (its tokenizer is a Hugging Face tokenizer.json)."""
  return os.path.isfile(os.path.join(workdir, 'tokenizer.json'))


def pretraining_eval(config, mesh) -> tuple:
  """(config of the init_from run's pretraining eval, its global eval batches) for the forgetting monitor.

  The pretrained run's objectives and data, with this run's model, tokenizer, batch size and
  forgetting_eval_steps batches; the caller evaluates them with `prefix='eval/pretrain_'`.
  """
  monitor = config_lib.init_from_config(config.init_from)
  monitor.batch_size, monitor.eval_steps = config.batch_size, config.forgetting_eval_steps
  monitor.model = config.model
  monitor.data.tokenizer = tokenizer_lib.given_path(config)
  tokenizer = tokenizer_lib.get_tokenizer(monitor)
  rows = pipeline.prepare_eval(monitor, tokenizer)
  return monitor, [sharding.global_batch(b, mesh) for b in pipeline.eval_batches(monitor, rows)]
