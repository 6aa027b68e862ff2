"""TrainState, the ONE train step (every objective), the eval step and the training loop."""
import functools
import json
import math
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import parameter_overview
from flax.training import train_state
from jax.sharding import PartitionSpec as P

from lm import (checkpoint, config as config_lib, metrics, models, monitors, objectives, optim, preemption, sampling,
                sharding)
from lm.data import pipeline


class TrainState(train_state.TrainState):
  """flax TrainState plus the base dropout rng (per-step keys are folded from it with the step)."""
  rng: jax.Array


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or inf."""


def forward(apply_fn, params, batch: dict, *, config, train: bool, rng=None) -> dict:
  """The model's outputs for a batch; a second dropout view under 'second_view' if an objective needs one."""
  rngs = {'dropout': rng} if train else None
  with nn.logical_axis_rules(sharding.logical_rules(config.mesh)):
    outputs = apply_fn({'params': params}, batch, train=train, rngs=rngs)
    if any(objectives.OBJECTIVES[name].views > 1 for name in config.objectives):
      second_rngs = {'dropout': jax.random.fold_in(rng, 1)} if train else None
      outputs['second_view'] = apply_fn({'params': params}, batch, train=train, rngs=second_rngs)
  return outputs


def _objective_terms(outputs, batch, denominators: dict, config):
  """Weighted total loss and per-objective means (`<name>_loss`, `<name>_accuracy`, ...)."""
  total, out = 0.0, {}
  for name, weight in config.objectives.items():
    sums = objectives.OBJECTIVES[name].sums(outputs, batch, config)
    total += weight * sums['loss'] / denominators[name]
    out.update({f'{name}_{key}': value / denominators[name] for key, value in sums.items()})
  return total, out


def _split_microbatches(x, accum: int):
  """[B, ...] -> [accum, B/accum, ...], microbatch j = rows j, j+accum, ... so each stays spread over devices."""
  x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(x, P(None, sharding.BATCH_AXES))


def train_step(state: TrainState, batch: dict, *, config, schedule):
  """One optimizer update on a global batch (gradient accumulation over grad_accum_steps microbatches inside).

  Every objective goes through here: `config.objectives` names them and their weights.
  """
  accum = config.grad_accum_steps
  denominators = {name: objectives.OBJECTIVES[name].denominator(batch) for name in config.objectives}
  step_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params, micro, rng):
    outputs = forward(state.apply_fn, params, micro, config=config, train=True, rng=rng)
    return _objective_terms(outputs, micro, denominators, config)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accum == 1:
    (loss, terms), grads = grad_fn(state.params, batch, step_rng)
  else:
    micro = jax.tree.map(functools.partial(_split_microbatches, accum=accum), batch)

    def body(carry, xs):
      out = grad_fn(state.params, xs[0], jax.random.fold_in(step_rng, xs[1]))
      return jax.tree.map(jnp.add, carry, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params, first, step_rng))
    ((loss, terms), grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
  new_state = state.apply_gradients(grads=grads)
  out = {'train/loss': loss, **{f'train/{k}': v for k, v in terms.items()},
         'train/grad_norm': optax.tree.norm(grads), 'train/param_norm': optax.tree.norm(new_state.params),
         'train/learning_rate': schedule(state.step)}
  skipped = optim.skip_counts(new_state.opt_state)
  if skipped is not None:
    out['train/skipped_steps'], out['train/skipped_in_a_row'] = skipped
  return new_state, out


def eval_step(params, batch: dict, *, apply_fn, config) -> dict:
  """Per-objective SUMS and denominators over one eval batch (accumulated on the host)."""
  outputs = forward(apply_fn, params, batch, config=config, train=False)
  out = {}
  for name in config.objectives:
    obj = objectives.OBJECTIVES[name]
    out[name] = {**obj.sums(outputs, batch, config), 'denominator': obj.denominator(batch)}
    if obj.eval_counts:
      out[name]['counts'] = obj.eval_counts(outputs, batch)
  return out


def evaluate(p_eval, params, eval_batches: list, weights: dict, prefix: str = 'eval/') -> dict:
  """<prefix><name>_loss, <name>_accuracy..., <prefix>loss (weighted), perplexity (clm), and an objective's
  summarized counts (classify: accuracy, f1, macro_f1 unprefixed by the name) over all batches."""
  totals = None
  for batch in eval_batches:
    sums = p_eval(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  out, loss = {}, 0.0
  for name, sums in totals.items():
    counts = sums.pop('counts', None)
    out.update({f'{prefix}{name}_{k}': float(v / sums['denominator']) for k, v in sums.items() if k != 'denominator'})
    loss += weights[name] * out[f'{prefix}{name}_loss']
    if counts is not None:
      out.update({f'{prefix}{k}': v for k, v in objectives.OBJECTIVES[name].summarize(counts).items()})
  out[f'{prefix}loss'] = loss
  if 'clm' in totals:
    out[f'{prefix}perplexity'] = math.exp(min(out[f'{prefix}clm_loss'], 80.0))
  return out


def abstract_state(config, model, tx, mesh):
  """(abstract unboxed TrainState, its shardings, init fn): parameters are born sharded by the jitted init."""
  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({'params': params_rng}, models.example_batch(config))
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx, rng=dropout_rng)

  boxed = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  shardings = sharding.logical_shardings(boxed, mesh, sharding.logical_rules(config.mesh))
  init_fn = jax.jit(lambda rng: nn.unbox(init(rng)), out_shardings=shardings)
  return nn.unbox(boxed), shardings, init_fn


def jit_steps(config, model, shardings, mesh):
  """(train step, eval step), jitted with explicit shardings; the train step donates the state."""
  batch_sharding = sharding.batch_sharding(mesh)
  step_fn = functools.partial(train_step, config=config,
                              schedule=optim.learning_rate_schedule(config.optimizer, config.num_train_steps))
  p_train = jax.jit(step_fn, in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                    donate_argnums=0)
  eval_fn = functools.partial(eval_step, apply_fn=model.apply, config=config)
  p_eval = jax.jit(eval_fn, in_shardings=(shardings.params, batch_sharding))
  return p_train, p_eval


def _write_workdir_files(config, workdir: str, tokenizer) -> None:
  """config.json (the resolved config) and tokenizer.model, so the workdir is self-contained."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  tokenizer.save_in(workdir)


def _restore_or_init(config, workdir, ckpt, abstract, shardings, init_fn, train_iter):
  """Resume order: this workdir's latest checkpoint, else init_from's parameters on a fresh state, else scratch."""
  latest = ckpt.latest_step()
  if latest is not None:
    saved = os.path.join(workdir, 'config.json')
    if os.path.exists(saved):
      with open(saved) as f:
        config_lib.check_resume_compatible(config, json.load(f))
    return _restore_newest_good(ckpt, checkpoint.abstract_with_shardings(abstract, shardings), train_iter)
  if config.init_from:
    print(f'No checkpoint in {ckpt.directory}: initialising from {config.init_from}, fresh optimizer', flush=True)
    target = checkpoint.abstract_with_shardings(abstract.params, shardings.params)
    loaded = checkpoint.load_pretrained(config.init_from, target, config)  # checked before anything compiles
    state = init_fn(jax.random.PRNGKey(config.seed))
    return state.replace(params=checkpoint.merge_params(state.params, loaded)), 0
  print(f'No checkpoint in {ckpt.directory}: starting from scratch', flush=True)
  return init_fn(jax.random.PRNGKey(config.seed)), 0


def _restore_newest_good(ckpt, target, train_iter):
  """(state, step) of the newest checkpoint that restores. Newer ones that fail (a truncated or missing file) are
  reported with their path and moved aside to checkpoints_unreadable/ (never deleted) so that their steps can be
  written again. If none restores (e.g. a config that does not fit them) nothing is moved: ConfigError."""
  failed = []
  for step in sorted(ckpt.manager.all_steps(), reverse=True):
    print(f'Resuming from checkpoint step {step} in {ckpt.directory}', flush=True)
    try:
      state = ckpt.restore(step, target, train_iter)
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types for a damaged file)
      failed.append((step, ' '.join(str(e).split())[:300]))
      continue
    for bad, reason in failed:
      print(f'warning: checkpoint {ckpt.directory}/{bad} cannot be restored ({reason}); moved to '
            f'{ckpt.set_aside(bad)}; resumed from step {step} instead', flush=True)
    return state, step
  step, reason = failed[0]
  raise config_lib.ConfigError(f'{ckpt.directory}/{step}: cannot restore it into this config ({reason}); use a '
                               'new --workdir')


def _report_parameters(params) -> int:
  """Prints clu's parameter overview and prints the total; returns the parameter count."""
  print(parameter_overview.get_parameter_overview(params, include_stats=False), flush=True)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f'Model: {count:,} parameters ({count / 1e6:.1f}M)', flush=True)
  return count


def _log_train(writer, progress, step: int, pending: list, last_ckpt: int, max_skips: int = 0) -> float:
  """Averages the metrics of the steps since the last report, writes them, prints the progress line."""
  host = jax.device_get(pending)
  scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
  skipping = 'train/skipped_steps' in host[-1]
  if skipping:  # nonfinite_policy='skip': the loss of the steps that counted; stop after max_skips in a row
    finite = [float(m['train/loss']) for m in host if math.isfinite(float(m['train/loss']))]
    scalars['train/skipped_steps'] = float(host[-1]['train/skipped_steps'])
    in_a_row = int(host[-1]['train/skipped_in_a_row'])
    if in_a_row > max_skips:  # apply_if_finite has now applied a non-finite update: never save these weights
      raise NonFiniteLossError(f'{in_a_row} non-finite steps in a row at step {step} (max_skipped_steps={max_skips}): '
                               'lower optimizer.learning_rate or set optimizer.grad_clip_norm; the last good '
                               f'checkpoint is step {last_ckpt}')
    if not finite:  # every step of this report was skipped: nothing to average yet
      writer.write_scalars(step, {k: v for k, v in scalars.items() if math.isfinite(v)})
      print(f'step {step}: non-finite loss, update skipped ({int(scalars["train/skipped_steps"])} so far, '
            f'{in_a_row} in a row)', flush=True)
      return math.nan
    scalars['train/loss'] = float(np.mean(finite)) if finite else math.nan
  loss = scalars['train/loss']
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f'train/loss is {loss} at step {step}'
        + (f' ({int(scalars["train/skipped_steps"])} updates skipped so far)' if skipping else '')
        + ': lower optimizer.learning_rate or set optimizer.grad_clip_norm; the last good checkpoint is step '
        f'{last_ckpt}')
  scalars.update(progress.update(step))
  writer.write_scalars(step, scalars)
  print(progress.line(step, loss, scalars), flush=True)
  return loss


class Run:
  """Everything one training run holds: mesh, data, model, compiled steps, checkpointer and writer."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config.mesh)
    self.tokenizer, train_rows, eval_rows = pipeline.prepare(config)
    self.model = models.build(config.model)
    self.weights = dict(config.objectives)
    tx = optim.build(config)
    abstract, self.shardings, init_fn = abstract_state(config, self.model, tx, self.mesh)
    self.train_iter = pipeline.train_iterator(config, train_rows)
    self.eval_batches = [sharding.global_batch(b, self.mesh) for b in pipeline.eval_batches(config, eval_rows)]
    self.sample_prompts = sampling.DEFAULT_PROMPTS[:config.num_samples]
    if config.data.task == 'sft':  # held-out instructions in the training template
      self.sample_prompts = [eval_rows.prompt(i) for i in range(min(config.num_samples, len(eval_rows)))]
    self.ckpt = checkpoint.Checkpointer(workdir, config)
    with jax.set_mesh(self.mesh):
      self.state, self.start_step = _restore_or_init(config, workdir, self.ckpt, abstract, self.shardings, init_fn,
                                                     self.train_iter)
    _write_workdir_files(config, workdir, self.tokenizer)
    self.p_train, self.p_eval = jit_steps(config, self.model, self.shardings, self.mesh)
    self.best = monitors.BestCheckpoint(workdir, config, self.start_step) if config.best_metric else None
    self.forgetting = None
    if config.forgetting_every_steps and config.init_from and monitors.converted(config.init_from):
      print(f'Forgetting monitor off: {config.init_from} was converted from Hugging Face, so lm does not have its '
            'pretraining data', flush=True)
    elif config.forgetting_every_steps and config.init_from:
      monitor_config, batches = monitors.pretraining_eval(config, self.mesh)
      self.forgetting = (jit_steps(monitor_config, self.model, self.shardings, self.mesh)[1], batches,
                         dict(monitor_config.objectives))

  def train(self) -> dict:
    """Runs from the restored step to num_train_steps; returns the last train and eval metrics."""
    config = self.config
    num_params = _report_parameters(self.state.params)
    writer = metrics.create_writer(self.workdir, self.start_step)
    tokens_per_step = config.batch_size * config.seq_len
    progress = metrics.Progress(config.num_train_steps, self.start_step, tokens_per_step,
                                metrics.flops_per_token(config, num_params) * tokens_per_step)
    self.preemption = preemption.PreemptionWatch()
    try:
      if self.best and self.best.exhausted:
        print(f'Early-stopped before: no better {config.best_metric} in the last {config.early_stopping_patience} '
              f'evals (best at step {self.best.best_step}); nothing to do', flush=True)
        return {}
      if self.forgetting and self.start_step == 0:
        self.evaluate_forgetting(self.state, writer, 0)  # the pretrained model's own score, before any update
      return self._loop(writer, progress)
    finally:  # also on errors: pending checkpoint writes finish, metrics are flushed
      self.preemption.close()
      writer.close()
      self.ckpt.close()
      if self.best:
        self.best.close()

  def _loop(self, writer, progress) -> dict:
    config, state = self.config, self.state
    pending, summary, last_ckpt = [], {}, self.start_step
    for step in range(self.start_step + 1, config.num_train_steps + 1):
      last = step == config.num_train_steps
      with jax.set_mesh(self.mesh):
        state, step_metrics = self.p_train(state, sharding.global_batch(next(self.train_iter), self.mesh))
      pending.append(step_metrics)
      if self.preemption.reached(step):
        self._stop_for_preemption(writer, progress, step, pending, last_ckpt, state)
        summary['preempted_at'] = step
        break
      save = step % config.checkpoint_every_steps == 0 or last
      report = step % config.log_every_steps == 0 or save
      if step == self.start_step + 1 and not report:  # keep compile time out of tokens/s
        jax.block_until_ready(step_metrics)
        progress.restart_clock(step)
      if report:
        summary['train/loss'] = _log_train(writer, progress, step, pending, last_ckpt, self.config.max_skipped_steps)
        pending = []
      periodic_eval = bool(config.eval_every_steps) and step % config.eval_every_steps == 0
      stop = False
      if periodic_eval or last:
        eval_metrics = self.evaluate(state, writer, step)
        summary.update(eval_metrics)
        stop = self.best.update(step, eval_metrics, state) if self.best else False
      forgetting = bool(self.forgetting) and (step % config.forgetting_every_steps == 0 or last or stop)
      if forgetting:
        summary.update(self.evaluate_forgetting(state, writer, step))
      save = save or stop
      if save:
        writer.flush()
        self.ckpt.save(step, state, self.train_iter)
        last_ckpt = step
      if stop:
        print(f'Early stopping at step {step}: no better {config.best_metric} in {config.early_stopping_patience} '
              f'evals; the best (step {self.best.best_step}) is in {self.best.manager.directory}', flush=True)
        break
      if save or periodic_eval or forgetting:  # keep eval and checkpoint time out of tokens/s
        progress.restart_clock(step)
    self.state = state
    return summary

  def _stop_for_preemption(self, writer, progress, step: int, pending: list, last_ckpt: int, state) -> None:
    """Logs the pending steps, writes checkpoint `step` and waits until it is committed."""
    if pending:
      _log_train(writer, progress, step, pending, last_ckpt, self.config.max_skipped_steps)
    writer.flush()
    self.ckpt.save(step, state, self.train_iter)
    self.ckpt.wait()
    print(f'Preempted (SIGTERM): checkpoint {step} written to {self.ckpt.directory}; run the same command to resume',
          flush=True)

  def evaluate(self, state, writer, step: int) -> dict:
    """Runs the fixed eval batches, writes eval/* and prints them."""
    with jax.set_mesh(self.mesh):
      out = evaluate(self.p_eval, state.params, self.eval_batches, self.weights)
    writer.write_scalars(step, out)
    print(f'eval @ step {step}: ' + ' | '.join(f'{k} {v:.4f}' for k, v in out.items()), flush=True)
    return out

  def evaluate_forgetting(self, state, writer, step: int) -> dict:
    """The init_from run's pretraining objective on its eval data: eval/pretrain_loss, ..."""
    p_eval, batches, weights = self.forgetting
    with jax.set_mesh(self.mesh):
      out = evaluate(p_eval, state.params, batches, weights, prefix='eval/pretrain_')
    writer.write_scalars(step, out)
    print(f'forgetting @ step {step}: ' + ' | '.join(f'{k} {v:.4f}' for k, v in out.items()), flush=True)
    return out

  def print_samples(self) -> None:
    """Prints config.num_samples continuations of fixed prompts (SFT: held-out instructions) from the final model."""
    config = self.config
    prompts = self.sample_prompts
    with jax.set_mesh(self.mesh):
      texts = sampling.sample_texts(self.model, self.state.params, self.tokenizer, prompts,
                                    max_new_tokens=config.sample_max_new_tokens,
                                    temperature=config.sample_temperature, seed=config.seed,
                                    batch_multiple=sharding.data_parallel_size(self.mesh),
                                    rules=sharding.logical_rules(config.mesh))
    for prompt, text in zip(prompts, texts):
      if jax.process_index() == 0:
        print(f'--- sample (prompt {prompt!r}) ---\n{text}', flush=True)


def run(config, workdir: str) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the final metrics."""
  experiment = Run(config, workdir)
  summary = experiment.train()
  if config.num_samples and 'preempted_at' not in summary:
    experiment.print_samples()
  return summary
