"""The training loop: one `Trainer` holds a run (mesh, data, model, compiled steps, checkpointer, writer) and runs
steps; every periodic action (logging, eval, best checkpoint, forgetting, checkpoints, preemption, samples) is a
hook of training/hooks.py."""
import json

import jax
import numpy as np
from clu import parameter_overview

from lm.config import resume
from lm.data import pipeline
from lm.errors import CheckpointError
from lm.inference import sampling
from lm.models import registry
from lm.parallel import sharding
from lm.perf import flops
from lm.store import checkpoint, paths, pretrained, workdir as workdir_lib, writers
from lm.training import hooks as hooks_lib, optim, progress as progress_lib, state as state_lib, step as step_lib


def restore_or_init(config, workdir, ckpt, abstract, shardings, init_fn):
  """Resume order: this workdir's latest checkpoint, else init_from's parameters on a fresh state, else scratch."""
  latest = ckpt.latest_step()
  if latest is not None:
    saved = paths.path(workdir) / 'config.json'
    if saved.exists():
      resume.check_resume_compatible(config, json.loads(saved.read_text()))
    state, step = _restore_newest_good(ckpt, checkpoint.abstract_with_shardings(abstract, shardings))
    if config.model.lora_rank:  # the checkpoint holds adapters and heads: the frozen base is init_from's
      fresh = init_fn(jax.random.PRNGKey(config.seed)).params
      state = state.replace(params=_with_pretrained(config, abstract, shardings, fresh, state.params))
    return state, step
  if config.init_from:
    print(f'No checkpoint in {ckpt.directory}: initialising from {config.init_from}, fresh optimizer', flush=True)
    state = init_fn(jax.random.PRNGKey(config.seed))
    return state.replace(params=_with_pretrained(config, abstract, shardings, state.params)), 0
  print(f'No checkpoint in {ckpt.directory}: starting from scratch', flush=True)
  return init_fn(jax.random.PRNGKey(config.seed)), 0


def _with_pretrained(config, abstract, shardings, params, restored=None):
  """`params` with init_from's parameters loaded in (checked before anything compiles), then `restored` (the
  adapters and heads of a LoRA checkpoint) over them."""
  target = checkpoint.abstract_with_shardings(abstract.params, shardings.params)
  loaded = pretrained.load_pretrained(config.init_from, target, config)
  return checkpoint.merge_params(params, {**loaded, **checkpoint.flatten(restored or {})})


def _restore_newest_good(ckpt, target):
  """(state, step) of the newest checkpoint that restores. Newer ones that fail (a truncated or missing file) are
  reported with their path and moved aside to checkpoints_unreadable/ (never deleted) so that their steps can be
  written again. If none restores (e.g. a config that does not fit them) nothing is moved: CheckpointError."""
  failed = []
  for step in sorted(ckpt.manager.all_steps(), reverse=True):
    print(f'Resuming from checkpoint step {step} in {ckpt.directory}', flush=True)
    try:
      state = ckpt.restore(step, target)
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types for a damaged file)
      failed.append((step, ' '.join(str(e).split())[:300]))
      continue
    for bad, reason in failed:
      print(f'warning: checkpoint {ckpt.directory}/{bad} cannot be restored ({reason}); moved to '
            f'{ckpt.set_aside(bad)}; resumed from step {step} instead', flush=True)
    return state, step
  step, reason = failed[0]
  raise CheckpointError(f'{ckpt.directory}/{step}: cannot restore it into this config ({reason}); use a new '
                        '--workdir')


def report_parameters(params) -> int:
  """Prints clu's parameter overview and the total; returns the parameter count."""
  print(parameter_overview.get_parameter_overview(params, include_stats=False), flush=True)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f'Model: {count:,} parameters ({count / 1e6:.1f}M)', flush=True)
  return count


def _sample_prompts(config, eval_rows) -> list[str]:
  """Fixed prompts for the end-of-run samples; SFT: held-out instructions in the training template."""
  if config.data.task == 'sft':
    return [eval_rows.prompt(i) for i in range(min(config.num_samples, len(eval_rows)))]
  return list(sampling.DEFAULT_PROMPTS[:config.num_samples])


class Trainer:
  """Everything one training run holds: mesh, data, model, compiled steps, checkpointer, writer and hooks."""

  def __init__(self, config, workdir: str, extra_hooks: tuple = ()):
    self.config, self.workdir = config, workdir
    self.mesh = sharding.make_mesh(config.mesh)
    self.tokenizer, train_rows, eval_rows = pipeline.prepare(config)
    self.model = registry.build(config.model)
    tx = optim.build(config)
    abstract, self.shardings, init_fn = state_lib.abstract_state(config, self.model, tx, self.mesh)
    eval_batches = {name: [sharding.global_batch(b, self.mesh) for b in batches]
                    for name, batches in pipeline.eval_sets(config, eval_rows).items()}
    self.ckpt = checkpoint.Checkpointer(workdir, config)
    with jax.set_mesh(self.mesh):
      self.state, self.start_step = restore_or_init(config, workdir, self.ckpt, abstract, self.shardings, init_fn)
    # The data position is the step: any process count resumes with the same global batches.
    self.train_iter = pipeline.train_iterator(config, train_rows, start_step=self.start_step)
    workdir_lib.write_run_files(config, workdir, self.tokenizer)
    self.p_train, self.p_eval = step_lib.jit_steps(config, self.model, self.shardings, self.mesh)
    self.last_checkpoint, self.pending = self.start_step, []
    self.writer = self.progress = None  # made when training starts
    self.hooks = hooks_lib.default_hooks(self, eval_batches, _sample_prompts(config, eval_rows),
                                         eval_rows) + list(extra_hooks)

  def train(self) -> dict:
    """Runs from the restored step to num_train_steps; returns the last train and eval metrics."""
    config = self.config
    num_params = report_parameters(self.state.params)
    self.writer = writers.create_writer(self.workdir, self.start_step)
    tokens_per_step = config.batch_size * flops.tokens_per_example(config)
    self.progress = progress_lib.Progress(config.num_train_steps, self.start_step, tokens_per_step,
                                          flops.flops_per_step(config, num_params))
    try:
      if not all(hook.before_loop(self) for hook in self.hooks):
        return {}
      return self._loop()
    finally:  # also on errors: pending checkpoint writes finish, metrics are flushed
      for hook in self.hooks:
        hook.close()
      self.writer.close()
      self.ckpt.close()

  def _loop(self) -> dict:
    summary = {}
    for step in range(self.start_step + 1, self.config.num_train_steps + 1):
      with jax.set_mesh(self.mesh):
        self.state, step_metrics = self.p_train(self.state, sharding.global_batch(next(self.train_iter), self.mesh))
      self.pending.append(step_metrics)
      ctx = hooks_lib.StepContext(step=step, last=step == self.config.num_train_steps, summary=summary)
      for hook in self.hooks:
        hook.after_step(self, ctx)
        if ctx.halt:
          break
      if ctx.halt or ctx.stop:
        if ctx.stop:
          print(ctx.stop, flush=True)
        break
      if ctx.busy:  # keep eval and checkpoint time out of tokens/s
        self.progress.restart_clock(step)
    return summary


def run(config, workdir: str) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the final metrics."""
  trainer = Trainer(config, workdir)
  summary = trainer.train()
  for hook in trainer.hooks:
    hook.after_run(trainer, summary)
  return summary
