"""Periodic actions of the train loop, one object each. The loop (training/loop.py) only runs steps and calls hooks.

Every hook has its own cadence and gets a `StepContext` after each step, in the order of `default_hooks`:

  Preemption        SIGTERM (or jax's multi-process preemption notice): log, save, wait for the commit, stop
  TrainLog          every log_every_steps (and at each checkpoint): averaged train/* metrics, the progress line
  Evaluation        every eval_every_steps and at the end: eval/* over the fixed eval batches
  GenerationEval    with each evaluation (seq2seq, generation_eval_examples > 0): decode a fixed held-out subset,
                    eval/bleu and eval/rouge1, rouge2, rougeLsum against the reference texts
  TaskEval          with each evaluation (data.task qa or tag): the head's predictions on the eval batches ->
                    eval/exact_match, eval/f1 (whole questions) or eval/entity_f1, entity_precision, entity_recall
  BestCheckpoint    after each evaluation: <workdir>/best and early stopping (best_metric, early_stopping_patience)
  ForgettingEval    every forgetting_every_steps: init_from's own pretraining objective (eval/pretrain_*)
  Checkpoint        every checkpoint_every_steps, at the end and on an early stop: the orbax checkpoint
  Samples           after the run: num_samples texts from the final model

A hook may stop the run (`ctx.stop = message`; `ctx.halt` also skips the hooks after it), say that it took time that
is not training (`ctx.busy`: the throughput clock restarts), and add to the run's summary. Adding a periodic action
is a new class here and one line in `default_hooks`; the loop does not change.
"""
import dataclasses
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from lm.config import resume
from lm.data import pipeline, tokenizer as tokenizer_lib
from lm.errors import ConfigError, NonFiniteLossError
from lm.inference import sampling, seq2seq_decoding, task_eval, text_metrics
from lm.parallel import sharding
from lm.store import checkpoint, paths, writers
from lm.training import preemption, step as step_lib


@dataclasses.dataclass
class StepContext:
  """What the hooks of one step share."""
  step: int
  last: bool  # the run's final step
  summary: dict  # the run's latest metrics (returned by the loop)
  eval_metrics: dict | None = None  # set by Evaluation when it ran at this step
  stop: str | None = None  # set to a message to stop after this step (printed by the loop)
  halt: bool = False  # stop now: skip the remaining hooks of this step
  busy: bool = False  # time went to something other than training: restart the throughput clock


class Hook:
  """A periodic action; override what it needs."""

  def before_loop(self, trainer) -> bool:
    """Called once before the first step; False means there is nothing to train."""
    del trainer
    return True

  def after_step(self, trainer, ctx: StepContext) -> None:
    """Called after every step."""

  def after_run(self, trainer, summary: dict) -> None:
    """Called once after training ended and the checkpoints are committed."""

  def close(self) -> None:
    """Releases what the hook holds; called on every exit of the loop, errors included."""


def log_train(trainer, step: int) -> float:
  """Averages the metrics of the steps since the last report, writes them, prints the progress line; returns the
  loss. NonFiniteLossError (naming the last good checkpoint) on a NaN/inf loss or too many skipped steps."""
  host = jax.device_get(trainer.pending)
  trainer.pending = []
  scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
  skipping = 'train/skipped_steps' in host[-1]
  hint = ('lower optimizer.learning_rate or set optimizer.grad_clip_norm; the last good checkpoint is step '
          f'{trainer.last_checkpoint}')
  if skipping:  # nonfinite_policy='skip': the loss of the steps that counted; stop after max_skips in a row
    finite = [float(m['train/loss']) for m in host if math.isfinite(float(m['train/loss']))]
    scalars['train/skipped_steps'] = float(host[-1]['train/skipped_steps'])
    in_a_row, max_skips = int(host[-1]['train/skipped_in_a_row']), trainer.config.max_skipped_steps
    if in_a_row > max_skips:  # apply_if_finite has now applied a non-finite update: never save these weights
      raise NonFiniteLossError(f'{in_a_row} non-finite steps in a row at step {step} (max_skipped_steps={max_skips}): '
                               + hint)
    if not finite:  # every step of this report was skipped: nothing to average yet
      trainer.writer.write_scalars(step, {k: v for k, v in scalars.items() if math.isfinite(v)})
      print(f'step {step}: non-finite loss, update skipped ({int(scalars["train/skipped_steps"])} so far, '
            f'{in_a_row} in a row)', flush=True)
      return math.nan
    scalars['train/loss'] = float(np.mean(finite)) if finite else math.nan
  loss = scalars['train/loss']
  if not math.isfinite(loss):
    skipped = f' ({int(scalars["train/skipped_steps"])} updates skipped so far)' if skipping else ''
    raise NonFiniteLossError(f'train/loss is {loss} at step {step}{skipped}: {hint}')
  scalars.update(trainer.progress.update(step))
  trainer.writer.write_scalars(step, scalars)
  print(trainer.progress.line(step, loss, scalars), flush=True)
  return loss


class Preemption(Hook):
  """SIGTERM -> log the pending steps, write checkpoint `step`, wait until it is committed, stop (exit 0)."""

  def __init__(self):
    self.watch = preemption.PreemptionWatch()

  def after_step(self, trainer, ctx: StepContext) -> None:
    if not self.watch.reached(ctx.step):
      return
    if trainer.pending:
      log_train(trainer, ctx.step)
    trainer.writer.flush()
    trainer.ckpt.save(ctx.step, trainer.state, trainer.train_iter)
    trainer.ckpt.wait()
    print(f'Preempted (SIGTERM): checkpoint {ctx.step} written to {trainer.ckpt.directory}; run the same command to '
          'resume', flush=True)
    ctx.summary['preempted_at'] = ctx.step
    ctx.halt = True

  def close(self) -> None:
    self.watch.close()


class TrainLog(Hook):
  """Every log_every_steps, and at every checkpoint step: the train metrics and the progress line."""

  def __init__(self, config):
    self.log_every, self.save_every, self.num_steps = (config.log_every_steps, config.checkpoint_every_steps,
                                                       config.num_train_steps)

  def after_step(self, trainer, ctx: StepContext) -> None:
    step = ctx.step
    report = step % self.log_every == 0 or step % self.save_every == 0 or ctx.last
    if step == trainer.start_step + 1 and not report:  # keep compile time out of tokens/s
      jax.block_until_ready(trainer.pending[-1])
      trainer.progress.restart_clock(step)
    if report:
      ctx.summary['train/loss'] = log_train(trainer, step)


def _print_metrics(title: str, step: int, metrics: dict) -> None:
  print(f'{title} @ step {step}: ' + ' | '.join(f'{k} {v:.4f}' for k, v in metrics.items()), flush=True)


class Evaluation(Hook):
  """Every eval_every_steps (0 = never) and at the end: the eval objectives over the fixed eval batches."""

  def __init__(self, config, p_eval, batches: list | dict):
    """`batches`: the eval batches, or {source name: its batches} of a data.mixture ('' = the one source)."""
    self.every, self.p_eval = config.eval_every_steps, p_eval
    self.sets = batches if isinstance(batches, dict) else {'': batches}
    self.weights = dict(config.objectives)

  def evaluate(self, trainer, step: int) -> dict:
    """Runs the eval batches on the current state, writes eval/* (and eval/<source>/* for each source of a
    mixture, eval/* then being their pool) and prints them."""
    with jax.set_mesh(trainer.mesh):
      totals = {name: step_lib.eval_totals(self.p_eval, trainer.state.params, b) for name, b in self.sets.items()}
    out = {}
    if len(totals) > 1:
      for name, sums in totals.items():
        out.update(step_lib.summarize(sums, self.weights, prefix=f'eval/{name}/'))
    out.update(step_lib.summarize(jax.tree.map(lambda *x: sum(x), *totals.values()), self.weights))
    trainer.writer.write_scalars(step, out)
    _print_metrics('eval', step, out)
    return out

  def after_step(self, trainer, ctx: StepContext) -> None:
    periodic = bool(self.every) and ctx.step % self.every == 0
    if periodic or ctx.last:
      ctx.eval_metrics = self.evaluate(trainer, ctx.step)
      ctx.summary.update(ctx.eval_metrics)
      ctx.busy = True


class GenerationEval(Hook):
  """With every evaluation: decode the first generation_eval_examples held-out sources (greedy, or
  generation_num_beams beams) and score them against their reference texts (text_metrics: eval/bleu,
  eval/rouge1, eval/rouge2, eval/rougeLsum). Runs after Evaluation, so best_metric may be eval/bleu."""

  def __init__(self, config, eval_rows):
    rows = [eval_rows[i] for i in range(min(config.generation_eval_examples, len(eval_rows)))]
    self.config = config
    self.sources = seq2seq_decoding.sources_of([r['encoder_inputs'] for r in rows],
                                               [r['encoder_segment_ids'] for r in rows])
    self.references = [eval_rows.target_text(i) for i in range(len(rows))]
    self.max_new_tokens = config.generation_max_new_tokens or eval_rows.target_len

  def predictions(self, trainer) -> list[str]:
    """The decoded texts of the fixed sources with the current parameters."""
    return seq2seq_decoding.generate_texts(trainer.model, trainer.state.params, trainer.tokenizer, self.sources,
                                           max_new_tokens=self.max_new_tokens,
                                           num_beams=self.config.generation_num_beams, mesh=trainer.mesh,
                                           mesh_config=self.config.mesh)

  def after_step(self, trainer, ctx: StepContext) -> None:
    if ctx.eval_metrics is None:
      return
    scores = {f'eval/{k}': v for k, v in text_metrics.all_metrics(self.predictions(trainer), self.references).items()}
    trainer.writer.write_scalars(ctx.step, scores)
    _print_metrics(f'generation ({len(self.sources)} examples)', ctx.step, scores)
    ctx.eval_metrics.update(scores)
    ctx.summary.update(scores)
    ctx.busy = True


class TaskEval(Hook):
  """With every evaluation: the QA or tagging head's predictions on the eval batches, scored as the task is
  (task_eval.scores: SQuAD exact match / F1 over whole questions, or entity precision / recall / F1). Runs after
  Evaluation, so best_metric may be eval/f1 or eval/entity_f1."""

  def __init__(self, trainer, eval_batches: list, eval_rows):
    self.config, self.batches, self.rows = trainer.config, eval_batches, eval_rows
    self.p_predict = task_eval.predict_fn(trainer.model, trainer.config)

  def after_step(self, trainer, ctx: StepContext) -> None:
    if ctx.eval_metrics is None:
      return
    with jax.set_mesh(trainer.mesh):
      outputs = task_eval.collect(self.p_predict, trainer.state.params, self.batches, len(self.rows))
    scores = {f'eval/{k}': v for k, v in task_eval.scores(self.config, self.rows, outputs).items()}
    trainer.writer.write_scalars(ctx.step, scores)
    _print_metrics(self.config.data.task, ctx.step, scores)
    ctx.eval_metrics.update(scores)
    ctx.summary.update(scores)
    ctx.busy = True


def lower_is_better(metric: str) -> bool:
  """Loss and perplexity metrics improve downwards, the rest (accuracy, f1, ...) upwards."""
  return 'loss' in metric or 'perplexity' in metric


class BestCheckpoint(Hook):
  """Tracks config.best_metric over evaluations, keeps the best state in <workdir>/best, and stops the run when
  early_stopping_patience evaluations in a row bring no new best. After a resume it rebuilds its record from
  metrics.jsonl (which the writer has cut back to the restored step)."""

  def __init__(self, workdir: str, config, start_step: int):
    self.metric, self.patience = config.best_metric, config.early_stopping_patience
    self.sign = -1.0 if lower_is_better(self.metric) else 1.0
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    self.model_cfg = config.model
    self.manager = ocp.CheckpointManager(os.path.join(paths.absolute(workdir), checkpoint.BEST_DIR),
                                        options=options)
    for step in self.manager.all_steps():  # saved after the checkpoint we resume from: not part of this history
      if step > start_step:
        self.manager.delete(step)
    self.best, self.best_step, self.evals_since_best = -math.inf, None, 0
    for row in writers.read_rows(workdir, start_step):
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
      raise ConfigError(f'best_metric={self.metric!r} is not an eval metric of this run; choose from '
                        f'{sorted(eval_metrics)}')
    if self._record(step, eval_metrics[self.metric]):
      self.manager.save(step, args=ocp.args.StandardSave(checkpoint.persistent_state(state, self.model_cfg)),
                        force=True)
      self.manager.wait_until_finished()
      print(f'New best {self.metric} {eval_metrics[self.metric]:.4f} at step {step}: saved to '
            f'{self.manager.directory}', flush=True)
    return self.exhausted

  def before_loop(self, trainer) -> bool:
    if self.exhausted:
      print(f'Early-stopped before: no better {self.metric} in the last {self.patience} evals (best at step '
            f'{self.best_step}); nothing to do', flush=True)
      return False
    return True

  def after_step(self, trainer, ctx: StepContext) -> None:
    if ctx.eval_metrics is not None and self.update(ctx.step, ctx.eval_metrics, trainer.state):
      ctx.stop = (f'Early stopping at step {ctx.step}: no better {self.metric} in {self.patience} evals; the best '
                  f'(step {self.best_step}) is in {self.manager.directory}')

  def close(self) -> None:
    self.manager.close()


def converted(workdir: str) -> bool:
  """True for a workdir made by lm.convert from_hf (its tokenizer is a Hugging Face tokenizer.json)."""
  return (paths.path(workdir) / 'tokenizer.json').is_file()


def pretraining_eval(config, mesh) -> tuple:
  """(config of the init_from run's pretraining eval, its global eval batches) for the forgetting monitor.

  The pretrained run's objectives and data, with this run's model, tokenizer, batch size and
  forgetting_eval_steps batches; the caller evaluates them with `prefix='eval/pretrain_'`.
  """
  monitor = resume.init_from_config(config.init_from)
  monitor.batch_size, monitor.eval_steps = config.batch_size, config.forgetting_eval_steps
  monitor.model = config.model
  monitor.data.tokenizer = tokenizer_lib.given_path(config)
  tokenizer = tokenizer_lib.get_tokenizer(monitor)
  rows = pipeline.prepare_eval(monitor, tokenizer)
  return monitor, [sharding.global_batch(b, mesh) for b in pipeline.eval_batches(monitor, rows)]


class ForgettingEval(Hook):
  """Catastrophic forgetting: init_from's own pretraining objectives on its own eval data (eval/pretrain_*), before
  the first update, every forgetting_every_steps, at the end and on an early stop."""

  def __init__(self, config, model, shardings, mesh):
    monitor_config, self.batches = pretraining_eval(config, mesh)
    self.p_eval = step_lib.jit_steps(monitor_config, model, shardings, mesh)[1]
    self.weights, self.every = dict(monitor_config.objectives), config.forgetting_every_steps

  def evaluate(self, trainer, step: int) -> dict:
    """The init_from run's pretraining objective on its eval data: eval/pretrain_loss, ..."""
    with jax.set_mesh(trainer.mesh):
      out = step_lib.evaluate(self.p_eval, trainer.state.params, self.batches, self.weights, prefix='eval/pretrain_')
    trainer.writer.write_scalars(step, out)
    _print_metrics('forgetting', step, out)
    return out

  def before_loop(self, trainer) -> bool:
    if trainer.start_step == 0:
      self.evaluate(trainer, 0)  # the pretrained model's own score, before any update
    return True

  def after_step(self, trainer, ctx: StepContext) -> None:
    if ctx.step % self.every == 0 or ctx.last or ctx.stop:
      ctx.summary.update(self.evaluate(trainer, ctx.step))
      ctx.busy = True


class Checkpoint(Hook):
  """Every checkpoint_every_steps, at the end and when the run stops early: state + data position (orbax)."""

  def __init__(self, config):
    self.every = config.checkpoint_every_steps

  def after_step(self, trainer, ctx: StepContext) -> None:
    if ctx.step % self.every == 0 or ctx.last or ctx.stop:
      trainer.writer.flush()
      trainer.ckpt.save(ctx.step, trainer.state, trainer.train_iter)
      trainer.last_checkpoint = ctx.step
      ctx.busy = True


class Samples(Hook):
  """After a run that was not preempted: continuations of fixed prompts (SFT: held-out instructions)."""

  def __init__(self, config, prompts: list[str]):
    self.config, self.prompts = config, prompts

  def after_run(self, trainer, summary: dict) -> None:
    if 'preempted_at' in summary:
      return
    c = self.config
    with jax.set_mesh(trainer.mesh):
      texts = sampling.sample_texts(trainer.model, trainer.state.params, trainer.tokenizer, self.prompts,
                                    max_new_tokens=c.sample_max_new_tokens, temperature=c.sample_temperature,
                                    seed=c.seed, batch_multiple=sharding.data_parallel_size(trainer.mesh),
                                    rules=sharding.logical_rules(c.mesh))
    for prompt, text in zip(self.prompts, texts):
      if jax.process_index() == 0:
        print(f'--- sample (prompt {prompt!r}) ---\n{text}', flush=True)


def default_hooks(trainer, eval_batches: list, sample_prompts: list[str], eval_rows=None) -> list[Hook]:
  """The hooks of a run of `trainer.config`, in the order they run after each step."""
  config = trainer.config
  hooks = [Preemption(), TrainLog(config), Evaluation(config, trainer.p_eval, eval_batches)]
  if config.data.task == 'seq2seq' and config.generation_eval_examples:
    hooks.append(GenerationEval(config, eval_rows))
  if config.data.task in task_eval.TASKS:
    hooks.append(TaskEval(trainer, eval_batches[''], eval_rows))
  if config.best_metric:
    hooks.append(BestCheckpoint(trainer.workdir, config, trainer.start_step))
  if config.forgetting_every_steps and config.init_from and converted(config.init_from):
    print(f'Forgetting monitor off: {config.init_from} was converted from Hugging Face, so lm does not have its '
          'pretraining data', flush=True)
  elif config.forgetting_every_steps and config.init_from:
    hooks.append(ForgettingEval(config, trainer.model, trainer.shardings, trainer.mesh))
  hooks.append(Checkpoint(config))
  if config.num_samples:
    hooks.append(Samples(config, sample_prompts))
  return hooks
