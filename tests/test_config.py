"""Every config file loads and validates; bad values fail with one line naming the key."""
import glob
import importlib.util
import os
import re

import pytest

from lm.config import base, validation as config_lib

from runs import REPO

CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(REPO, 'configs', '*.py')) if not p.endswith('__init__.py'))


def load(path: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location('cfg_under_test', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_config_files_exist():
  names = {os.path.basename(p) for p in CONFIG_FILES}
  assert {'gpt_tiny.py', 'gpt_small.py', 'bert_tiny.py', 'bert_base.py', 'bert_tiny_finetune.py',
          'gpt_tiny_sft.py'} <= names
  assert 'base.py' not in names  # the schema lives in the library: lm/config/base.py


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_every_config_loads_and_validates(path):
  config = load(path)
  config_lib.validate(config, num_devices=1, process_count=1)
  config_lib.validate(config, num_devices=8, process_count=1)  # the same file on a data-parallel host


def test_gpt_small_is_the_gpt2_small_shape():
  m = load(os.path.join(REPO, 'configs', 'gpt_small.py')).model
  assert (m.num_layers, m.num_heads, m.d_model, m.d_ff, m.max_len) == (12, 12, 768, 3072, 1024)


def test_every_base_key_has_a_comment():
  source = open(os.path.join(REPO, 'lm', 'config', 'base.py')).read()
  lines = source[source.index('def get_config'):source.index('def bert')].splitlines()  # where keys are defined
  assignments = [l for l in lines if l.strip().startswith(('c.', 'm.', 'd.', 'o.', 'ms.')) and ' = ' in l]
  assert len(assignments) > 40
  assert all('#' in l for l in assignments), [l for l in assignments if '#' not in l]


def _bad(mutate, num_devices=1, process_count=1):
  config = base.get_config()
  mutate(config)
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config, num_devices=num_devices, process_count=process_count)
  message = str(info.value)
  assert '\n' not in message
  return message


def test_batch_not_divisible_by_data_parallel_size():
  def mutate(c):
    c.batch_size = 12
  assert 'batch_size=12' in _bad(mutate, num_devices=8)


def test_batch_not_divisible_with_accumulation():
  def mutate(c):
    c.batch_size, c.grad_accum_steps = 16, 3
  assert 'grad_accum_steps' in _bad(mutate)


def test_mesh_size_must_match_device_count():
  def mutate(c):
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 1
  assert 'mesh' in _bad(mutate, num_devices=8)


def test_two_free_mesh_axes():
  def mutate(c):
    c.mesh.fsdp = -1
  assert 'mesh' in _bad(mutate, num_devices=8)


def test_seq_len_beyond_max_positions():
  def mutate(c):
    c.seq_len = c.model.max_len + 1
  assert 'seq_len' in _bad(mutate)


def test_unknown_key_and_wrong_type_in_a_config_file():
  def unknown(c):
    c.unlock()
    c.model.n_layers = 3
  assert 'model.n_layers' in _bad(unknown)

  def wrong_type(c):
    c.unlock()
    del c['batch_size']
    c.batch_size = '32'
  assert 'batch_size' in _bad(wrong_type)


@pytest.mark.parametrize('key,value,needle', [
    ('model.position', 'sinusoidal', 'model.position'),
    ('model.d_model', 250, 'model.d_model'),
    ('num_train_steps', 0, 'num_train_steps'),
    ('model.dropout', 1.5, 'model.dropout'),
    ('data.source', 'web', 'data.source'),
    ('data.task', 'qa', 'data.task'),
    ('model.num_labels', 3, 'model.num_labels'),  # a head only for data.task='classify'
    ('optimizer.layer_decay', 0.0, 'optimizer.layer_decay'),
    ('optimizer.adafactor_decay_rate', -0.8, 'optimizer.adafactor_decay_rate'),
    ('optimizer.freeze_layers', 9, 'optimizer.freeze_layers'),
    ('optimizer.freeze_patterns', 'block_(0', 'optimizer.freeze_patterns'),
    ('optimizer.freeze_all_but_head', True, 'freeze_all_but_head'),
    ('best_metric', 'accuracy', 'best_metric'),
    ('early_stopping_patience', 2, 'early_stopping_patience needs best_metric'),
    ('eval_steps', -1, 'eval_steps'),
])
def test_bad_values(key, value, needle):
  def mutate(c):
    *parents, leaf = key.split('.')
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  assert needle in _bad(mutate)


def test_unknown_objective():
  def mutate(c):
    c.objectives.unlock()
    c.objectives.mlmm = 1.0
  assert 'objectives.mlmm' in _bad(mutate)


def test_objective_must_fit_the_task():
  def mutate(c):
    c.objectives = {'classify': 1.0}
  assert "objectives.classify does not go with data.task='pretrain'" in _bad(mutate)

  def csv_documents(c):
    c.data.source, c.data.path = 'csv', 'train.csv'
  assert "data.source='csv' does not go with data.task='pretrain'" in _bad(csv_documents)

  def sft_on_bert(c):
    base.bert(c)
    c.data.task = 'sft'
    c.objectives = {'clm': 1.0}
  assert 'objectives.clm needs model.type' in _bad(sft_on_bert)


def test_init_from_must_be_a_workdir_of_the_same_family(tmp_path):
  def missing(c):
    c.init_from = str(tmp_path / 'nothing')
  assert 'init_from=' in _bad(missing) and 'no config.json' in _bad(missing)
  (tmp_path / 'checkpoints').mkdir()
  (tmp_path / 'config.json').write_text('{"model": {"type": "bert"}}')

  def other_family(c):
    c.init_from = str(tmp_path)
  assert "model.type='gpt' here but 'bert' in init_from=" in _bad(other_family)


@pytest.mark.parametrize('key,value,fixed', [
    ('data.code_packages', 'numpy', True), ('data.code_target', 'name', True), ('data.source_key', 'de', True),
    ('model.d_ff', 64, True), ('log_every_steps', 7, False), ('model.projection_impl', 'einsum', False),
    ('model.remat', 'full', False)])
def test_a_resume_may_change_how_the_step_computes_but_not_the_examples_or_shapes(key, value, fixed):
  """The keys that pick a seq2seq run's examples or fix the state's shapes are fixed on resume (one line naming the
  key); how the step computes (model.projection_impl, remat, ...) and the logging are free."""
  import json

  from lm.config import resume
  from lm.errors import ConfigError
  saved = json.loads(json.dumps(base.get_config().to_dict()))
  config = base.get_config()
  config.data.task = saved['data']['task'] = 'seq2seq'
  *sections, name = key.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  if not fixed:
    resume.check_resume_compatible(config, saved)
    return
  with pytest.raises(ConfigError, match=rf'^{re.escape(key)}=.* differs from .* in the run being resumed'):
    resume.check_resume_compatible(config, saved)


def test_text_source_needs_a_path():
  def mutate(c):
    c.data.source = 'text'
  assert 'data.path' in _bad(mutate)


@pytest.mark.slow
@pytest.mark.parametrize('override,needle', [
    ('--config.bach_size=3', 'bach_size'),
    ('--config.batch_size=abc', 'batch_size'),
    ('--config.model.dropot=0.1', 'dropot'),
    ('--config.seq_len=100', 'seq_len'),
    ('--config.mesh.data=2', 'mesh'),
])
def test_cli_rejects_bad_overrides_with_one_line(lm_cli, tmp_path, override, needle):
  result = lm_cli('--config=configs/gpt_tiny.py:test', f'--workdir={tmp_path / "wd"}', override, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'wd' / 'checkpoints').exists()  # nothing compiled, nothing written


def test_no_pickle_in_load_paths():
  offenders = []
  for folder in ('lm', 'launch', 'configs'):
    for dirpath, _, files in os.walk(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), folder)):
      for name in files:
        if name.endswith('.py'):
          text = open(os.path.join(dirpath, name)).read()
          if re.search(r'^\s*(import pickle|from pickle)|torch\.load\(|pickle\.loads?\(', text, re.M):
            offenders.append(name)
  assert not offenders
