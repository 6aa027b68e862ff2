"""BERT pretraining end to end (MLM + NSP through the one train loop), resume, SimCSE, fill-mask."""
import os
import shutil

import jax
import numpy as np
import pytest

from lm import objectives

from runs import read_metrics

BERT = '--config=configs/bert_tiny.py:test'


@pytest.mark.slow
def test_mlm_and_nsp_train_and_report_their_metrics(bert_run):
  workdir, stdout = bert_run
  records = read_metrics(workdir)
  train = [r for r in records if 'train/loss' in r]
  for key in ('train/mlm_loss', 'train/mlm_accuracy', 'train/nsp_loss', 'train/nsp_accuracy', 'train/mfu'):
    assert key in train[0], key
  assert np.isclose(train[0]['train/loss'], train[0]['train/mlm_loss'] + train[0]['train/nsp_loss'], rtol=1e-5)
  mlm = [r['train/mlm_loss'] for r in train]
  assert mlm[-1] < 0.9 * mlm[0] and mlm[-1] < 0.9 * np.log(1024), mlm  # the full bert_tiny: see WORKSPACE.md
  evals = [r for r in records if 'eval/mlm_loss' in r]
  assert evals and {'eval/nsp_accuracy', 'eval/loss'} <= set(evals[-1]) and 'eval/perplexity' not in evals[-1]
  assert 'eval/mlm_accuracy' in stdout


@pytest.mark.slow
def test_bert_resume_recomputes_lost_steps_exactly(bert_run, lm_cli, tmp_path):
  workdir = str(tmp_path / 'wd')
  shutil.copytree(bert_run[0], workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '40'))
  original = {r['step']: r for r in read_metrics(workdir)}
  result = lm_cli(BERT, f'--workdir={workdir}', '--config.num_train_steps=40', '--config.optimizer.learning_rate=3e-3')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from checkpoint step 30' in result.stdout
  rerun = read_metrics(workdir)
  assert [r['step'] for r in rerun] == sorted(original)
  for record in rerun:  # masks, NSP pairs and dropout are reproduced
    np.testing.assert_allclose(record['train/loss'], original[record['step']]['train/loss'], rtol=1e-5)


@pytest.mark.slow
def test_fill_mask_prints_top_k_for_each_mask(bert_run, lm_cli):
  result = lm_cli(f'--workdir={bert_run[0]}', '--text=import [MASK] as [MASK]', '--top_k=3', module='lm.fill_mask',
                  timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith('[MASK]')]
  assert len(lines) == 2 and all(l.count("'") >= 6 for l in lines), result.stdout


@pytest.mark.slow
def test_fill_mask_rejects_a_decoder_workdir_and_text_without_mask(bert_run, lm_cli, tmp_path):
  result = lm_cli(f'--workdir={bert_run[0]}', '--text=no mask here', module='lm.fill_mask', timeout=120)
  assert result.returncode == 2 and 'error: --text' in result.stderr
  result = lm_cli(f'--workdir={tmp_path}', '--text=[MASK]', module='lm.fill_mask', timeout=120)
  assert result.returncode == 2 and 'no config.json' in result.stderr


@pytest.mark.slow
def test_simcse_contrastive_loss_decreases(lm_cli, tmp_path):
  workdir = str(tmp_path / 'wd')
  result = lm_cli('--config=configs/bert_tiny.py:simcse,test', f'--workdir={workdir}', '--config.num_train_steps=30',
                  '--config.optimizer.learning_rate=3e-3')
  assert result.returncode == 0, result.stderr[-3000:]
  losses = [r['train/contrastive_loss'] for r in read_metrics(workdir) if 'train/contrastive_loss' in r]
  assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize('dropout', [pytest.param(0.0, marks=pytest.mark.slow), 0.1])
def test_contrastive_views_differ_only_by_dropout(dropout):
  """step.forward makes the second view from the same params and batch; only the dropout key differs."""
  import flax.linen as nn

  from configs import bert_tiny
  from lm.models import registry
  from lm.training import step as step_lib
  config = bert_tiny.get_config('simcse,test')
  config.model.dropout = dropout
  model = registry.build(config.model)
  batch = {'inputs': jax.random.randint(jax.random.PRNGKey(0), (4, 16), 7, 1024)}
  params = nn.unbox(model.init(jax.random.PRNGKey(1), batch))['params']
  outputs = step_lib.forward(model.apply, params, batch, config=config, train=True, rng=jax.random.PRNGKey(2))
  one, two = outputs['pooled'], outputs['second_view']['pooled']
  if dropout:
    assert not np.allclose(one, two, atol=1e-4)
  else:
    np.testing.assert_array_equal(one, two)
  sums = objectives.contrastive_sums(outputs, batch, config)
  assert sums['loss'].shape == () and 0 <= float(sums['accuracy']) <= 4


@pytest.mark.slow
def test_bert_tiny_cuts_mlm_loss_by_20_percent_in_40_steps(bert_tiny_run):
  """The real bert_tiny config (vocab 8192, 128 positions; 16 rows a step in the fixture), shortened to 40 steps."""
  mlm = [r['train/mlm_loss'] for r in read_metrics(bert_tiny_run[0]) if 'train/mlm_loss' in r]
  assert len(mlm) == 4 and mlm[-1] < 0.8 * mlm[0], mlm  # mlm[0] is the mean over steps 1-10
