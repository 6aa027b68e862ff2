"""Training end to end through `python -m lm.main`, resume semantics, and the train step's accumulation."""
import functools
import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from lm.models import registry
from lm.parallel import sharding
from lm.training import optim, state as state_lib, step as step_lib

from runs import read_metrics

TINY = '--config=configs/gpt_tiny.py:test'


@pytest.fixture(scope='module')
def trained(gpt_run):
  return gpt_run


@pytest.mark.slow
def test_training_writes_everything_and_loss_falls(trained):
  workdir, stdout = trained
  records = read_metrics(workdir)
  train_losses = [r['train/loss'] for r in records if 'train/loss' in r]
  initial = np.log(1024)  # an untrained model predicts ~uniformly over the 1024-token vocabulary
  assert train_losses[-1] < train_losses[0] and train_losses[-1] < 0.85 * initial, train_losses
  assert {'train/tokens_per_sec', 'train/mfu', 'train/grad_norm', 'train/learning_rate'} <= set(records[0])
  last = records[-1]
  assert last['step'] == 20 and np.isclose(last['eval/perplexity'], np.exp(last['eval/loss']), rtol=1e-4)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '20']
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert json.load(open(os.path.join(workdir, 'config.json')))['model']['d_model'] == 64
  assert os.path.isfile(os.path.join(workdir, 'tokenizer.model'))
  assert 'step 20/20 | loss' in stdout and 'MFU' in stdout and 'ETA' in stdout
  assert '--- sample' in stdout and 'eval/perplexity' in stdout


@pytest.mark.slow
def test_resume_continues_and_writes_no_step_twice(trained, lm_cli, tmp_path):
  workdir = str(tmp_path / 'wd')
  shutil.copytree(trained[0], workdir)
  result = lm_cli(TINY, f'--workdir={workdir}', '--config.num_train_steps=30')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from checkpoint step 20' in result.stdout
  steps = [r['step'] for r in read_metrics(workdir)]
  assert len(steps) == len(set(steps)) and steps == sorted(steps) and steps[-1] == 30
  assert '30' in os.listdir(os.path.join(workdir, 'checkpoints'))


@pytest.mark.slow
def test_resume_after_lost_steps_recomputes_them_exactly(trained, lm_cli, tmp_path):
  """Drop the step-20 checkpoint (as if killed after step 19): the rerun of steps 11..20 matches the original."""
  workdir = str(tmp_path / 'wd')
  shutil.copytree(trained[0], workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '20'))
  original = {r['step']: r for r in read_metrics(workdir)}
  result = lm_cli(TINY, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from checkpoint step 10' in result.stdout
  rerun = read_metrics(workdir)
  assert [r['step'] for r in rerun] == sorted(original)  # each step once
  for record in rerun:
    np.testing.assert_allclose(record['train/loss'], original[record['step']]['train/loss'], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('override,needle', [
    ('--config.grad_accum_steps=3', 'batch_size'),  # rejected by validation
    ('--config.model.d_model=128', 'model.d_model'),  # valid alone, but not the shape of the run being resumed
])
def test_bad_override_leaves_existing_checkpoints_untouched(trained, lm_cli, override, needle):
  workdir = trained[0]
  before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(workdir, '**'), recursive=True)}
  result = lm_cli(TINY, f'--workdir={workdir}', override, timeout=120)
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  after = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(workdir, '**'), recursive=True)}
  assert before == after


def _step_setup(config, mesh):
  model = registry.build(config.model)
  abstract, shardings, init_fn = state_lib.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
  with jax.set_mesh(mesh):
    state = init_fn(jax.random.PRNGKey(config.seed))
  return state, p_train


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(tiny_config, tiny_data):
  from lm.data import pipeline
  mesh = sharding.make_mesh(tiny_config.mesh, devices=jax.devices()[:1])
  batch = next(pipeline.train_iterator(tiny_config, tiny_data[1], 0, 1))
  results = []
  for accum in (1, 4):
    config = tiny_config.copy_and_resolve_references()
    config.grad_accum_steps = accum
    state, p_train = _step_setup(config, mesh)
    with jax.set_mesh(mesh):
      state, metrics = p_train(state, sharding.global_batch(batch, mesh))
    adam_mu = state.opt_state[1][0].mu  # = (1 - b1) * (clipped) gradient after one step: linear in the gradient
    results.append((float(metrics['train/loss']), jax.device_get(adam_mu), jax.device_get(state.params)))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)  # the same loss ...
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-8), results[0][1], results[1][1])  # ... grads
  # Adam's first update is ~lr·g/|g|: a coordinate whose gradient is ~1e-9 (summation noise) can move by a visible
  # fraction of lr either way, so the updated parameters agree to 1e-4, not bitwise.
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-4), results[0][2], results[1][2])


@pytest.mark.slow
def test_llama_style_decoder_trains_and_samples(lm_cli, tmp_path):
  workdir = str(tmp_path / 'llama')
  result = lm_cli('--config=configs/llama_tiny.py:test', f'--workdir={workdir}', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = [r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r]
  assert losses[-1] < 0.85 * np.log(1024), losses
  params = json.load(open(os.path.join(workdir, 'config.json')))['model']
  assert (params['norm_type'], params['activation'], params['num_kv_heads']) == ('rmsnorm', 'swiglu', 2)
  assert '--- sample' in result.stdout
  from lm.store import workdir as workdir_lib
  loaded = workdir_lib.load(workdir).params
  key = loaded['block_0']['attn']['key']
  assert key['kernel'].shape == (64, 2, 16) and 'bias' not in key
  assert 'lm_head' in loaded and 'fc_gate' in loaded['block_0']['mlp']


def test_trainer_runs_its_hooks_in_process_and_resumes(tiny_config, tiny_data, tmp_path, capsys):
  """The loop in-process (8 CPU devices): each hook at its cadence, an extra hook without touching the loop, samples at
  the end, and a second run in the same workdir resumes where the first stopped."""
  from lm.training import hooks, loop

  class CountSteps(hooks.Hook):
    def __init__(self):
      self.steps = []

    def after_step(self, trainer, ctx):
      self.steps.append((ctx.step, ctx.eval_metrics is not None))

  config = tiny_config.copy_and_resolve_references()
  config.num_train_steps, config.log_every_steps, config.eval_every_steps = 6, 2, 3
  config.checkpoint_every_steps, config.num_samples, config.sample_max_new_tokens = 3, 1, 4
  workdir = str(tmp_path / 'wd')
  counter = CountSteps()
  trainer = loop.Trainer(config, workdir, extra_hooks=(counter,))
  summary = trainer.train()
  for hook in trainer.hooks:
    hook.after_run(trainer, summary)
  assert counter.steps == [(1, False), (2, False), (3, True), (4, False), (5, False), (6, True)]
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == [2, 3, 4, 6] and 'eval/loss' in records[1] and 'train/loss' in records[1]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']
  assert np.isfinite(summary['train/loss']) and summary['eval/loss'] == records[-1]['eval/loss']
  assert '--- sample (prompt ' in capsys.readouterr().out
  config.num_train_steps, config.num_samples = 8, 0
  assert 'train/loss' in loop.run(config, workdir)
  assert [r['step'] for r in read_metrics(workdir)] == [2, 3, 4, 6, 8]


def test_adafactor_steps_are_relative_and_weight_decay_is_scaled_by_the_learning_rate(tiny_config):
  """optimizer.name='adafactor': an update's RMS is lr x the parameter's RMS (the step is relative to the
  parameter), and decoupled weight decay takes lr x weight_decay x param per step, as with AdamW (optax's
  Adafactor alone would take weight_decay x param)."""
  import jax.numpy as jnp

  from lm.training import optim
  config = tiny_config.copy_and_resolve_references()
  config.optimizer.name, config.optimizer.schedule, config.optimizer.warmup_steps = 'adafactor', 'constant', 0
  config.optimizer.learning_rate, config.optimizer.weight_decay, config.optimizer.grad_clip_norm = 1e-2, 0.5, 0.0
  params = {'block_0': {'mlp': {'kernel': jnp.full((4, 4), 3.0)}}, 'ln_final': {'scale': jnp.full((4,), 3.0)}}
  tx = optim.build(config)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['block_0']['mlp']['kernel'], -1e-2 * 0.5 * 3.0, rtol=1e-6)  # decay only
  assert not np.any(updates['ln_final']['scale'])  # norm scales are not decayed
  config.optimizer.weight_decay = 0.0
  tx = optim.build(config)
  ones = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  np.testing.assert_allclose(updates['block_0']['mlp']['kernel'], -1e-2 * 3.0, rtol=1e-5)
