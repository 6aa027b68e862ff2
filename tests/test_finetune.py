"""Fine-tuning: init_from, classification end to end, freezing, layer-wise LR decay, early stopping, SFT."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.data import classification, instructions, pipeline
from lm.models import layers, registry
from lm.parallel import sharding
from lm.store import pretrained, workdir as workdir_lib
from lm.training import loop, optim, state as state_lib, step as step_lib

from runs import read_metrics

FINETUNE = '--config=configs/bert_tiny_finetune.py:test'


def _one_error(result, needle: str):
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  return errors[0]


REAL_FINETUNE = ('--config=configs/bert_tiny_finetune.py', '--config.num_train_steps=80',
                 '--config.eval_every_steps=80', '--config.forgetting_every_steps=40',  # eval: at 40 still chance
                 '--config.forgetting_eval_steps=2', '--config.seq_len=64')  # 128: 0.83 at step 80, 64: 0.75


@pytest.fixture(scope='module')
def finetuned(bert_tiny_run, lm_cli, tmp_path_factory):
  """The real bert_tiny_finetune at 64 tokens (its 128 take 1.7x as long), 80 steps, from the real bert_tiny
  pretrained for 40 steps (~1 + 1.5 min)."""
  workdir = str(tmp_path_factory.mktemp('ft') / 'wd')
  result = lm_cli(*REAL_FINETUNE, f'--workdir={workdir}', f'--config.init_from={bert_tiny_run[0]}', timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stdout


@pytest.mark.slow
def test_finetune_beats_chance_and_logs_everything(finetuned):
  workdir, stdout = finetuned
  records = read_metrics(workdir)
  evals = [r for r in records if 'eval/accuracy' in r]
  chance = 1 / len(classification.STDLIB_PACKAGES)
  best = max(r['eval/accuracy'] for r in evals)
  assert best >= 0.6 and best > chance + 0.2, [r['eval/accuracy'] for r in evals]
  assert {'eval/macro_f1', 'eval/classify_loss', 'eval/loss'} <= set(evals[-1])
  forgetting = [r for r in records if 'eval/pretrain_loss' in r]
  assert [r['step'] for r in forgetting] == [0, 40, 80] and 'eval/pretrain_mlm_loss' in forgetting[0]
  assert 'newly initialised' in stdout and 'class_head/dense/kernel' in stdout
  best_steps = os.listdir(os.path.join(workdir, 'best'))
  best_step = max(evals, key=lambda r: r['eval/accuracy'])['step']  # the first of equals: a tie is no new best
  assert best_steps == [str(best_step)], (best_steps, evals)
  assert workdir_lib.load(workdir, best=True).step == best_step


@pytest.mark.slow
def test_init_from_loads_encoder_exactly_and_new_head_fresh(bert_run, capsys, tmp_path):
  from configs import bert_tiny_finetune
  config = bert_tiny_finetune.get_config('test')
  config.init_from = bert_run[0]
  run = loop.Trainer(config, str(tmp_path / 'wd'))
  pretrained = workdir_lib.load(bert_run[0]).params
  ours = jax.device_get(run.state.params)
  jax.tree.map(np.testing.assert_array_equal, pretrained, {k: v for k, v in ours.items() if k != 'class_head'})
  assert set(ours) - set(pretrained) == {'class_head'}
  assert ours['class_head']['dense']['kernel'].shape == (64, 4)
  assert int(run.state.step) == 0 and not any(np.any(x) for x in jax.tree.leaves(run.state.opt_state[1][0].mu))
  table = capsys.readouterr().out
  assert 'loaded' in table and 'newly initialised         2' in table and 'dropped (unused)          0' in table


@pytest.mark.slow
def test_init_from_refuses_an_override_that_contradicts_the_pretrained_architecture(bert_run, lm_cli, tmp_path):
  """The config file's model keys give way to init_from's (bert_tiny_finetune:test states bert_tiny:test's anyway);
  one given on the command line that contradicts the pretrained run is an error naming it, before anything runs."""
  result = lm_cli(FINETUNE, f'--workdir={tmp_path / "wd"}', f'--config.init_from={bert_run[0]}',
                  '--config.model.d_ff=128', timeout=300)
  line = _one_error(result, f'model.d_ff=128 contradicts init_from={bert_run[0]}, whose model.d_ff is 256')
  assert 'drop --config.model.d_ff' in line
  assert not os.path.exists(tmp_path / 'wd')


@pytest.mark.slow
def test_init_from_must_be_a_run(lm_cli, tmp_path):
  result = lm_cli(FINETUNE, f'--workdir={tmp_path / "wd"}', f'--config.init_from={tmp_path}', timeout=120)
  _one_error(result, 'init_from=')


@pytest.mark.slow
def test_restart_resumes_its_own_checkpoint_before_init_from(finetuned, bert_tiny_run, lm_cli, tmp_path):
  import shutil
  workdir = str(tmp_path / 'wd')
  shutil.copytree(finetuned[0], workdir)
  result = lm_cli(*REAL_FINETUNE, f'--workdir={workdir}', f'--config.init_from={bert_tiny_run[0]}',
                  '--config.num_train_steps=82', timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from checkpoint step 80' in result.stdout and 'newly initialised' not in result.stdout
  steps = [r['step'] for r in read_metrics(workdir)]
  assert steps == sorted(set(steps)) and steps[-1] == 82


@pytest.mark.slow
def test_early_stopping_stops_when_the_metric_stalls(bert_run, lm_cli, tmp_path):
  """With a zero learning rate eval/accuracy never improves after the first eval: patience 2 stops at the 3rd."""
  workdir = str(tmp_path / 'wd')
  args = (FINETUNE, f'--workdir={workdir}', f'--config.init_from={bert_run[0]}', '--config.optimizer.learning_rate=0',
          '--config.early_stopping_patience=2', '--config.num_train_steps=60', '--config.forgetting_every_steps=0')
  result = lm_cli(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Early stopping at step 30' in result.stdout
  assert read_metrics(workdir)[-1]['step'] == 30 and os.listdir(os.path.join(workdir, 'best')) == ['10']
  again = lm_cli(*args)  # a rerun does not train on
  assert again.returncode == 0 and 'Early-stopped before' in again.stdout, again.stdout[-2000:]


def _tiny_state(config):
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  model = registry.build(config.model)
  _, shardings, init_fn = state_lib.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
  with jax.set_mesh(mesh):
    state = init_fn(jax.random.PRNGKey(config.seed))
  return state, p_train, mesh


def _train_steps(config, rows, steps: int):
  state, p_train, mesh = _tiny_state(config)
  before = jax.device_get(state.params)
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  for _ in range(steps):
    with jax.set_mesh(mesh):
      state, _ = p_train(state, sharding.global_batch(next(iterator), mesh))
  return before, jax.device_get(state.params), state


@pytest.mark.slow
def test_frozen_parameters_do_not_move_and_have_no_optimizer_state(tiny_config, tiny_data):
  config = tiny_config.copy_and_resolve_references()
  config.optimizer.freeze_embeddings, config.optimizer.freeze_layers = True, 1
  before, after, state = _train_steps(config, tiny_data[1], 3)
  for name in ('embeddings', 'block_0'):
    jax.tree.map(np.testing.assert_array_equal, before[name], after[name])
  for name in ('block_1', 'ln_final'):
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before[name], after[name])
    assert all(jax.tree.leaves(changed)), (name, changed)
  adam_mu = state.opt_state.inner_states['train'].inner_state[1][0].mu
  assert isinstance(adam_mu['embeddings'], type(adam_mu['block_0'])) and not jax.tree.leaves(adam_mu['block_0'])
  assert jax.tree.leaves(adam_mu['block_1'])  # the trained blocks keep moments


@pytest.mark.slow
@pytest.mark.parametrize('scan', [False, True])
def test_layer_decay_scales_updates_per_layer(tiny_config, tiny_data, scan):
  """Adam's first update is lr·sign(g) per coordinate, so |update| / lr is the layer's factor exactly."""
  config = tiny_config.copy_and_resolve_references()
  config.optimizer.layer_decay, config.optimizer.weight_decay, config.optimizer.grad_clip_norm = 0.5, 0.0, 0.0
  config.model.scan_layers = scan
  before, after, state = _train_steps(config, tiny_data[1], 1)
  lr = float(optim.learning_rate_schedule(config.optimizer, config.num_train_steps)(0))

  def factor(old, new):
    moves = np.concatenate([np.abs(np.ravel(a - b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old))])
    return float(np.median(moves[moves > 0])) / lr

  if scan:  # one stacked array per parameter, layer i at index i
    per_layer = [factor(*(jax.tree.map(lambda x, i=i: x[i], p['blocks']) for p in (before, after))) for i in range(2)]
  else:
    per_layer = [factor(before[f'block_{i}'], after[f'block_{i}']) for i in range(2)]
  measured = [factor(before['embeddings'], after['embeddings']), *per_layer,
              factor(before['ln_final'], after['ln_final'])]
  np.testing.assert_allclose(measured, [0.125, 0.25, 0.5, 1.0], rtol=0.02)


def test_classification_examples_bert_pair_layout(tiny_data):
  from configs import bert_tiny_finetune
  config = bert_tiny_finetune.get_config('test')
  tokenizer = tiny_data[0]
  records = classification.Records(1, lambda i: ('import os', 'print(x)', 3), 4, 'fp')
  example = classification.ClassificationExamples(records, tokenizer, config)[0]
  a, b = tokenizer.encode('import os'), tokenizer.encode('print(x)')
  n = len(a) + len(b) + 3
  assert example['inputs'][:n].tolist() == [5, *a, 6, *b, 6] and not example['inputs'][n:].any()
  assert example['token_types'][:n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
  assert example['segment_ids'].tolist() == [1] * n + [0] * (config.seq_len - n)
  assert int(example['label']) == 3 and float(example['example_weight']) == 1.0
  long = classification.Records(1, lambda i: ('x = 1\n' * 200, 'y', 0), 4, 'fp')
  example = classification.ClassificationExamples(long, tokenizer, config)[0]
  assert example['segment_ids'].all() and example['inputs'][-1] == 6  # cut from the longer text, [SEP] kept


def test_decoder_head_reads_the_last_real_token(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.model.num_labels = 3
  model = registry.build(config.model)
  tokens = jnp.asarray([[10, 11, 12, 13, 0, 0, 0, 0]], jnp.int32)
  batch = {'inputs': tokens, 'segment_ids': (tokens > 0).astype(jnp.int32)}
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch))['params']
  logits = model.apply({'params': params}, batch)['class_logits']
  shorter = {'inputs': tokens[:, :4], 'segment_ids': batch['segment_ids'][:, :4]}
  np.testing.assert_allclose(logits, model.apply({'params': params}, shorter)['class_logits'], atol=1e-5)
  other_pad = {'inputs': tokens.at[0, 5].set(99), 'segment_ids': batch['segment_ids']}
  np.testing.assert_allclose(logits, model.apply({'params': params}, other_pad)['class_logits'], atol=1e-5)


def test_file_records_map_string_labels_and_hold_out_eval(tmp_path):
  from configs import bert_tiny_finetune
  path = tmp_path / 'data.csv'
  rows = ''.join(f'"text {i}, with comma",{"pos" if i % 3 else "neg"}\n' for i in range(200))
  path.write_text('text,label\n' + rows)
  data = bert_tiny_finetune.get_config('test').data
  data.source, data.path, data.eval_fraction, data.max_documents = 'csv', str(path), 0.2, 0
  train_records, eval_records = (classification.get_records(data, s) for s in ('train', 'eval'))
  assert train_records.num_labels == 2 and train_records.label_names == ('neg', 'pos')
  assert len(train_records) + len(eval_records) == 200 and 20 < len(eval_records) < 60
  texts = {train_records[i][0] for i in range(len(train_records))}
  assert not texts & {eval_records[i][0] for i in range(len(eval_records))}
  for text, text_b, label in (train_records[i] for i in range(5)):
    index = int(text.split()[1].rstrip(','))
    assert text == f'text {index}, with comma' and text_b == '' and label == (1 if index % 3 else 0)


def test_tfds_sentence_pairs_via_mock_data():
  import tensorflow_datasets as tfds

  from configs import bert_classify
  data = bert_classify.get_config('mnli,tiny').data
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    records = classification.get_records(data, 'eval')
    text, text_b, label = records[0]
  assert records.num_labels == 3 and records.label_names == ('entailment', 'neutral', 'contradiction')
  assert isinstance(text, str) and isinstance(text_b, str) and text_b and 0 <= label < 3


def test_embedded_task_is_balanced_and_split_by_file():
  from configs import bert_tiny_finetune
  data = bert_tiny_finetune.get_config().data
  train_records, eval_records = (classification.get_records(data, s) for s in ('train', 'eval'))
  for records in (train_records, eval_records):
    counts = np.bincount([records[i][2] for i in range(len(records))], minlength=4)
    assert len(set(counts)) == 1 and counts[0] > 50, counts
  assert not {train_records[i][0] for i in range(len(train_records))} & {eval_records[i][0]
                                                                          for i in range(len(eval_records))}


def test_sft_loss_mask_covers_exactly_the_response(tiny_data):
  tokenizer = tiny_data[0]
  prompt = instructions.format_prompt('Add one.', 'x = 1')
  records = instructions.Records([(prompt, 'x + 1')], 'fp')
  row = instructions.InstructionExamples(records, tokenizer, 64)[0]
  response = tokenizer.encode('x + 1') + [tokenizer.eos_id]
  weighted = row['targets'][row['weights'] > 0].tolist()
  assert weighted == response
  first = len(tokenizer.encode(prompt)) - 1  # the input position whose target is the first response token
  assert np.flatnonzero(row['weights']).tolist() == list(range(first, first + len(response)))
  np.testing.assert_array_equal(row['inputs'][1:first + len(response)], row['targets'][:first + len(response) - 1])
  assert row['segment_ids'].sum() == len(tokenizer.encode(prompt)) + len(response) - 1


@pytest.mark.slow
def test_sft_run_loss_falls_and_samples_use_the_template(gpt_tiny_run, lm_cli, tmp_path):
  """The real gpt_tiny_sft (LR preset 'tiny', 1e-3) for 30 steps of 8 rows x 128 positions (99% of the demo's
  records fit) from the real gpt_tiny pretrained for 10 (the test shape's 64 positions cannot hold a prompt and its
  response). Its loss per 10 steps: 7.27, 5.91, 5.38."""
  workdir = str(tmp_path / 'wd')
  result = lm_cli('--config=configs/gpt_tiny_sft.py:tiny', f'--workdir={workdir}',
                  f'--config.init_from={gpt_tiny_run[0]}', '--config.seq_len=128', '--config.forgetting_eval_steps=2',
                  '--config.num_train_steps=30', '--config.eval_every_steps=30', '--config.forgetting_every_steps=30',
                  '--config.num_samples=1', '--config.sample_max_new_tokens=8', '--config.batch_size=8', timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  records = read_metrics(workdir)
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert len(losses) == 3 and losses[-1] < 0.85 * losses[0], losses
  assert any('eval/pretrain_loss' in r for r in records) and any('eval/perplexity' in r for r in records)
  assert '### Instruction:' in result.stdout and '### Response:' in result.stdout


def test_whole_split_eval_counts_every_example_once_across_processes():
  from configs import bert_tiny_finetune
  config = bert_tiny_finetune.get_config('test')
  _, _, eval_rows = pipeline.prepare(config)
  assert len(eval_rows) % config.batch_size  # the last batch needs padding
  labels = []
  for process in (0, 1):
    batches = pipeline.eval_batches(config, eval_rows, process, 2)
    assert len(batches) == -(-len(eval_rows) // config.batch_size)
    weights = np.concatenate([b['example_weight'] for b in batches])
    labels.append(np.concatenate([b['label'] for b in batches])[weights > 0])
    assert set(np.unique(weights)) <= {0.0, 1.0}
  assert len(labels[0]) + len(labels[1]) == len(eval_rows)
  expected = [int(eval_rows[i]['label']) for i in range(len(eval_rows))]
  assert sorted(labels[0].tolist() + labels[1].tolist()) == sorted(expected)
  assert labels[0].tolist() == expected[0::2][:len(labels[0])]


@pytest.mark.slow
def test_decoder_classifier_runs_from_a_gpt_workdir(gpt_run, lm_cli, tmp_path):
  workdir = str(tmp_path / 'wd')
  result = lm_cli('--config=configs/gpt_tiny_classify.py:test', f'--workdir={workdir}',
                  f'--config.init_from={gpt_run[0]}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'class_head/dense/kernel' in result.stdout and 'model.num_labels=4 from the data' in result.stdout
  last = read_metrics(workdir)[-1]
  assert last['step'] == 20 and {'eval/accuracy', 'eval/macro_f1', 'eval/pretrain_perplexity'} <= set(last)


@pytest.mark.slow
def test_sst2_config_trains_on_mocked_tfds(bert_run, tmp_path):
  """configs/bert_classify.py:sst2 end to end on tfds mock data (no download): labels and their count from tfds."""
  import tensorflow_datasets as tfds

  from configs import bert_classify
  from lm.config import inherit, validation as config_lib
  config = bert_classify.get_config('sst2,tiny')
  config.init_from, config.seq_len, config.batch_size, config.num_train_steps = bert_run[0], 32, 8, 4
  changed = inherit.adopt_pretrained(config)  # the test-sized encoder it starts from: its sizes, not bert_tiny's
  assert changed['model.d_model'] == (256, 64) and config.model.num_layers == 2
  config.eval_every_steps, config.checkpoint_every_steps, config.forgetting_every_steps = 2, 4, 4
  config.forgetting_eval_steps = 1
  config_lib.validate(config, num_devices=jax.device_count(), process_count=1)  # all 8 test devices: data-parallel
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    summary = loop.run(config, str(tmp_path / 'wd'))
  assert config.model.num_labels == 2 and 0.0 <= summary['eval/accuracy'] <= 1.0 and 'eval/f1' in summary
  assert 'eval/pretrain_loss' in summary


@pytest.mark.slow
def test_init_from_refuses_to_reinitialise_a_pretrained_parameter(bert_run):
  """Only task heads may be new: a body parameter the checkpoint lacks (another layout) is an error, not a silent
  fresh init."""
  from lm.config import resume
  from lm.errors import ConfigError
  config = resume.init_from_config(bert_run[0])
  params = jax.device_get(workdir_lib.load(bert_run[0]).params)
  params['adapter'] = {'kernel': np.zeros((2, 2), np.float32)}
  params = jax.tree.map(jnp.asarray, params)
  with pytest.raises(ConfigError, match=r'has no parameter adapter/kernel \(1 of'):
    pretrained.load_pretrained(bert_run[0], params, config)
  del params['adapter']  # a parameter of another shape (a config that bypassed inherit.adopt_pretrained)
  params['block_0']['mlp']['fc_in']['bias'] = jnp.zeros((128,))
  config.model.d_ff = 128
  with pytest.raises(ConfigError, match=r'parameter block_0/mlp/fc_in/bias has shape \(256,\) .* but \(128,\) in this '
                                        r'model; model.d_ff=128 here but 256 there'):
    pretrained.load_pretrained(bert_run[0], params, config)


def test_freeze_masks_by_pattern_and_all_but_head():
  from configs import bert_tiny_finetune
  params = {'embeddings': {'token': {'embedding': 0}}, 'block_0': {'attn': {'query': {'kernel': 0}}},
            'block_1': {'mlp': {'fc_in': {'kernel': 0, 'bias': 0}}}, 'pooler': {'dense': {'kernel': 0}},
            'class_head': {'dense': {'kernel': 0, 'bias': 0}}}
  o = bert_tiny_finetune.get_config('test').optimizer
  o.freeze_patterns = r'attn/query, fc_in/bias$'
  frozen = {layers.path_name(p) for p, f in jax.tree_util.tree_flatten_with_path(optim.frozen_mask(params, o))[0] if f}
  assert frozen == {'block_0/attn/query/kernel', 'block_1/mlp/fc_in/bias'}
  o.freeze_patterns, o.freeze_all_but_head = '', True
  frozen = jax.tree_util.tree_flatten_with_path(optim.frozen_mask(params, o))[0]
  assert {layers.path_name(p) for p, f in frozen if not f} == {'class_head/dense/kernel', 'class_head/dense/bias'}


def test_f1_scores_from_a_confusion_matrix():
  from lm import objectives
  binary = objectives.f1_scores({'confusion': np.array([[5, 1], [2, 2]])})  # rows: true class, columns: predicted
  assert binary['accuracy'] == 0.7
  np.testing.assert_allclose(binary['f1'], 2 * 2 / (2 * 2 + 1 + 2))  # class 1: tp 2, fp 1, fn 2
  np.testing.assert_allclose(binary['macro_f1'], (2 * 5 / (2 * 5 + 2 + 1) + 4 / 7) / 2)
  three = objectives.f1_scores({'confusion': np.array([[3, 0, 0], [0, 0, 0], [1, 0, 0]])})
  assert 'f1' not in three and three['accuracy'] == 0.75
  np.testing.assert_allclose(three['macro_f1'], (6 / 7 + 0.0) / 2)  # class 1 never occurs: left out of the mean


def test_sft_demo_split_does_not_depend_on_where_lm_is_installed(tmp_path):
  """The demo records' ids are relative to the package, so a clone in another folder holds out the same records."""
  import shutil

  from lm.config import base
  from lm.data import sources
  ids = [rid for rid, _ in sources.read_jsonl([instructions.DEMO_FILE], {}, os.path.dirname(instructions.DEMO_FILE))]
  assert ids[0] == 'sft_demo.jsonl:1' and len(ids) == 120
  copy = tmp_path / 'elsewhere' / 'sft_demo.jsonl'
  copy.parent.mkdir()
  shutil.copy(instructions.DEMO_FILE, copy)
  assert [rid for rid, _ in sources.read_jsonl([str(copy)], {}, str(copy.parent))] == ids
  data = base.get_config().data
  data.task, data.eval_fraction = 'sft', 0.15
  held_out = instructions.get_records(data, 'eval')
  assert len(held_out) + len(instructions.get_records(data, 'train')) == 120
  assert len(held_out) == sum(sources.is_eval_document(i, 0.15) for i in ids)
