"""Tests of lm.data.seq2seq: (source, target) records of every source and the encoder-decoder batch contract."""
import ast
import importlib.util
import json
import os
import struct

import numpy as np
import pytest

from lm.config import base
from lm.data import seq2seq, sources, tokenizer as tokenizer_lib
from lm.errors import DataError

EOS = tokenizer_lib.EOS_ID


@pytest.fixture(scope='module')
def tokenizer():
  """A 600-piece SentencePiece model trained in-process on a few kB of English, German and code (about 1 s)."""
  text = open(os.path.join(os.path.dirname(__file__), '..', 'README.md'), encoding='utf-8').read()
  text += '\nDas ist ein kleiner Satz. Übersetze diesen Text ins Deutsche, bitte.\ndef f(x):\n  return x + 1\n'
  settings = dict(tokenizer_lib._TRAIN_SETTINGS, vocab_size=600, model_type='bpe', input_sentence_size=2000, seed=0)
  return tokenizer_lib.train_tokenizer([text], settings)


def seq2seq_config(**data):
  """The base config with the seq2seq data keys (target_len, source_key, target_key, task_prefix) and `data`."""
  config = base.get_config()
  config.seq_len = 32
  config.data.target_len = 16
  config.data.source_key, config.data.target_key, config.data.task_prefix = 'source', 'target', ''
  config.data.eval_path, config.data.max_documents = '', 0
  config.data.update(data)
  return config


def both(data):
  return seq2seq.get_records(data, 'train'), seq2seq.get_records(data, 'eval')


def write_jsonl(path, rows):
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  return str(path)


def test_jsonl_records_round_trip_with_held_out_and_explicit_eval(tmp_path):
  rows = [{'source': f'Guten Tag {i}', 'target': f'good day {i}', 'extra': i} for i in range(200)]
  data = seq2seq_config(source='jsonl', path=write_jsonl(tmp_path / 'a.jsonl', rows), eval_fraction=0.2).data
  train, eval_ = both(data)
  assert len(train) + len(eval_) == 200 and 20 < len(eval_) < 70
  pairs = [train[i] for i in range(len(train))] + [eval_[i] for i in range(len(eval_))]
  assert sorted(pairs) == sorted((r['source'], r['target']) for r in rows)
  assert not {train[i] for i in range(len(train))} & {eval_[i] for i in range(len(eval_))}
  assert eval_.record_id(0).startswith(str(tmp_path / 'a.jsonl') + ':')
  assert both(data)[1].fingerprint == eval_.fingerprint != train.fingerprint
  data.eval_path = write_jsonl(tmp_path / 'eval.jsonl', [{'source': 'Hallo', 'target': 'hello'}])
  train, eval_ = both(data)
  assert len(train) == 200 and list(eval_) == [('Hallo', 'hello')]
  data.max_documents = 7
  assert len(seq2seq.get_records(data, 'train')) == 7


def test_csv_and_tsv_records_round_trip(tmp_path):
  (tmp_path / 'a.csv').write_text('id,de,en\n' + ''.join(f'{i},"Zeile {i}, mit Komma","line {i}, with comma"\n'
                                                          for i in range(50)))
  (tmp_path / 'b.tsv').write_text('de\ten\nEins\tone\n')
  data = seq2seq_config(source='csv', path=f'{tmp_path}/a.csv,{tmp_path}/b.tsv', source_key='de', target_key='en',
                        eval_fraction=0.0).data
  train = seq2seq.get_records(data, 'train')
  assert len(train) == 51 and train[3] == ('Zeile 3, mit Komma', 'line 3, with comma') and train[50] == ('Eins', 'one')
  assert train.record_id(0) == f'{tmp_path}/a.csv:2'


@pytest.mark.parametrize('line, match', [
    ({'source': 'a'}, r"^data.target_key: .*bad.jsonl:2 has no field 'target' \(has \['source'\]\); set "
                      r'--config.data.target_key'),
    ({'text': 'a', 'target': 'b'}, r"^data.source_key: .*bad.jsonl:2 has no field 'source'"),
    ({'source': 'a', 'target': 3}, r"^data.target_key: .*bad.jsonl:2 field 'target' is a int, not a string; .*"
                                   r'--config.data.target_key'),
    ({'source': 'a', 'target': '  '}, r"^data.target_key: .*bad.jsonl:2 has an empty 'target'"),
])
def test_bad_jsonl_record_is_one_line_naming_file_line_and_field(tmp_path, line, match):
  path = write_jsonl(tmp_path / 'bad.jsonl', [{'source': 'x', 'target': 'y'}, line])
  with pytest.raises(DataError, match=match) as e:
    seq2seq.get_records(seq2seq_config(source='jsonl', path=path, eval_fraction=0.0).data, 'train')
  assert '\n' not in str(e.value)


def test_bad_csv_record_names_file_line_and_column(tmp_path):
  (tmp_path / 'bad.csv').write_text('source,target\nx,y\nz\n')
  data = seq2seq_config(source='csv', path=str(tmp_path / 'bad.csv'), eval_fraction=0.0).data
  with pytest.raises(DataError, match=r"^data.target_key: .*bad.csv:3 has no column 'target' .*set "
                                      r'--config.data.target_key'):
    seq2seq.get_records(data, 'train')
  (tmp_path / 'bad.csv').write_text('source,target\nx,y\nz,\n')
  with pytest.raises(DataError, match=r"^data.target_key: .*bad.csv:3 has an empty 'target'"):
    seq2seq.get_records(data, 'train')


def test_examples_follow_the_batch_contract(tokenizer):
  config = seq2seq_config(task_prefix='translate German to English: ')
  records = seq2seq.Records([('Guten Tag', 'good day')], 'fp')
  examples = seq2seq.Seq2SeqExamples(records, tokenizer, config)
  ex = examples[0]
  assert {k: (v.dtype, v.shape) for k, v in ex.items()} == {
      'encoder_inputs': (np.int32, (32,)), 'encoder_segment_ids': (np.int32, (32,)), 'targets': (np.int32, (16,)),
      'inputs': (np.int32, (16,)), 'weights': (np.float32, (16,)), 'segment_ids': (np.int32, (16,)),
      'example_weight': (np.float32, ())}
  source_ids = tokenizer.encode('translate German to English: Guten Tag') + [EOS]
  target_ids = tokenizer.encode('good day') + [EOS]
  n, m = len(source_ids), len(target_ids)
  assert ex['encoder_inputs'].tolist() == source_ids + [0] * (32 - n)
  assert ex['encoder_segment_ids'].tolist() == [1] * n + [0] * (32 - n)
  assert ex['targets'].tolist() == target_ids + [0] * (16 - m)
  np.testing.assert_array_equal(ex['inputs'], np.concatenate([[0], ex['targets'][:-1]]))  # shifted, start = pad 0
  assert ex['weights'].tolist() == [1.0] * m + [0.0] * (16 - m) and ex['segment_ids'].tolist() == [1] * m + [0] * (
      16 - m)
  assert ex['example_weight'] == 1.0 and examples.source_text(0) == 'Guten Tag' and examples.target_text(0) == \
      'good day'
  assert examples.num_truncated_sources == examples.num_truncated_targets == 0
  config.data.target_len = 0  # 0 = seq_len
  assert seq2seq.Seq2SeqExamples(records, tokenizer, config)[0]['targets'].shape == (32,)


def test_long_pairs_are_truncated_with_eos_last_and_counted(tokenizer):
  long = ' '.join(['the model reads every word'] * 20)
  records = seq2seq.Records([('short', 'short'), (long, 'short'), ('short', long), (long, long)], 'fp')
  examples = seq2seq.Seq2SeqExamples(records, tokenizer, seq2seq_config())
  assert examples.num_truncated_sources == 2 and examples.num_truncated_targets == 2
  ex = examples[3]
  assert ex['encoder_inputs'].tolist() == tokenizer.encode(long)[:31] + [EOS]
  assert ex['targets'].tolist() == tokenizer.encode(long)[:15] + [EOS]
  assert ex['weights'].sum() == 16 and ex['encoder_segment_ids'].sum() == 32
  assert examples[1]['targets'].tolist()[:len(tokenizer.encode('short')) + 1] == tokenizer.encode('short') + [EOS]


@pytest.mark.slow  # parses every standard-library file
def test_embedded_code_summaries_hide_the_docstring_and_split_by_file():
  data = seq2seq_config(source='embedded', eval_fraction=0.2).data
  train, eval_ = both(data)
  assert len(train) > 2000 and len(eval_) > 200
  train_files = {train.record_id(i).split(':')[0] for i in range(len(train))}
  eval_files = {eval_.record_id(i).split(':')[0] for i in range(len(eval_))}
  assert not train_files & eval_files
  assert all(sources.is_eval_document(f, 0.2) for f in eval_files)
  assert not {train[i][0] for i in range(len(train))} & {eval_[i][0] for i in range(len(eval_))}
  for records in (train, eval_):
    for i in range(0, len(records), 7):
      source, target = records[i]
      function = ast.parse(source).body[0]
      assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) and ast.get_docstring(function) is None
      assert len(source) <= seq2seq.MAX_SOURCE_CHARS and len(target.split()) >= 3 and target not in source
      assert '\n' not in target and '  ' not in target and '. ' not in target.replace('e.g. ', '').replace('i.e. ', '')
      assert function.name == records.record_id(i).rsplit(':', 1)[1]
  data.code_target = 'name'  # the copying warm-up: the same functions, each one's name as words for its target
  names = both(data)
  for records, named in zip((train, eval_), names):
    assert len(named) == len(records) and named.fingerprint != records.fingerprint
    for i in range(0, len(records), 7):
      source, words = named[i]
      assert source == records[i][0] and named.record_id(i) == records.record_id(i)
      assert words == seq2seq.first_name_baseline(source) and all(word in source for word in words.split())


@pytest.mark.slow
def test_code_packages_add_training_functions_only():
  """data.code_packages: an installed package's functions join the training split (ids 'package/path:line:name'),
  the held-out standard-library split is the same records; a package that is not installed is one line."""
  plain = seq2seq_config(source='embedded', eval_fraction=0.2).data
  more = seq2seq_config(source='embedded', eval_fraction=0.2).data
  more.code_packages = 'ml_collections'
  (train, eval_), (train_more, eval_more) = both(plain), both(more)
  assert [eval_[i] for i in range(len(eval_))] == [eval_more[i] for i in range(len(eval_more))]
  added = [i for i in range(len(train_more)) if train_more.record_id(i).startswith('ml_collections/')]
  assert len(train_more) == len(train) + len(added) and len(added) > 20
  assert train_more.fingerprint != train.fingerprint and eval_more.fingerprint != eval_.fingerprint
  source, target = train_more[added[0]]
  assert ast.get_docstring(ast.parse(source).body[0]) is None and target not in source
  more.code_packages = 'no_such_package_here'
  with pytest.raises(DataError, match="data.code_packages: 'no_such_package_here' is not an installed package"):
    both(more)


def test_one_function_becomes_code_without_docstring_and_first_sentence():
  text = ('class A:\n'
          '    @property\n'
          '    def get_terminal_size(self, fallback=(80, 24)):\n'
          '        """Get the size of the\n'
          '        terminal window. More details, e.g. here.\n\n'
          '        Second paragraph."""\n'
          '        x = 1\n'
          '        return x\n'
          '    def short(self):\n'
          '        """Too short a body."""\n'
          '        return 1\n'
          '    def two_words(self):\n'
          '        """Two words.\n        Then more."""\n'
          '        x = 1\n'
          '        return x\n')
  [(line, name, source, target)] = seq2seq.file_summaries(text)
  assert (line, name, target) == (3, 'get_terminal_size', 'Get the size of the terminal window.')
  assert source == '@property\ndef get_terminal_size(self, fallback=(80, 24)):\n    x = 1\n    return x'
  assert seq2seq.first_name_baseline(source) == 'get terminal size'
  assert seq2seq.first_name_baseline('async def __aenter__(self):\n  pass') == 'aenter'
  assert seq2seq.first_sentence('Compare, e.g. two lists. Then stop.') == 'Compare, e.g. two lists.'


def write_mo(path, messages: dict[str, str]) -> str:
  """A GNU .mo file of `messages` (msgid -> msgstr, sorted by msgid as msgfmt does): header, two tables, strings."""
  keys = sorted(messages)
  ids = [k.encode() for k in keys]
  strs = [messages[k].encode() for k in keys]
  n = len(keys)
  start = 7 * 4 + 16 * n  # after the header and both (length, offset) tables
  offsets, blob = [], b''
  for s in ids + strs:
    offsets.append((len(s), start + len(blob)))
    blob += s + b'\0'
  header = struct.pack('<7I', 0x950412de, 0, n, 28, 28 + 8 * n, 0, 0)
  table = b''.join(struct.pack('<2I', *o) for o in offsets)
  path.write_bytes(header + table + blob)
  return str(path)


MO_HEADER = 'Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n'


def test_gettext_catalog_pairs_skip_header_plurals_and_empty_translations(tmp_path):
  path = write_mo(tmp_path / 'de.mo', {
      '': MO_HEADER, 'Save': 'Sichern', 'Delete selected items': 'Ausgewählte Einträge löschen',
      'month name\x04May': 'Mai', 'one item\0%d items': 'ein Eintrag\0%d Einträge', 'Untranslated': ''})
  assert sorted(seq2seq.read_catalog(path)) == [('Delete selected items', 'Ausgewählte Einträge löschen'),
                                                ('May', 'Mai'), ('Save', 'Sichern')]
  data = seq2seq_config(source='gettext', path=f'{path},{path}', eval_fraction=0.5).data
  train, eval_ = both(data)
  assert sorted(list(train) + list(eval_)) == sorted(seq2seq.read_catalog(path))  # repeats kept once
  assert all(sources.is_eval_document(eval_.record_id(i), 0.5) for i in range(len(eval_)))
  (tmp_path / 'not.mo').write_bytes(b'not a catalog at all')
  data.path = str(tmp_path / 'not.mo')
  with pytest.raises(DataError, match=r'^data.path: .*not.mo is not a GNU gettext .mo catalog'):
    seq2seq.get_records(data, 'train')


@pytest.mark.skipif(importlib.util.find_spec('django') is None, reason='django (a test extra) is not installed')
def test_django_german_catalogs_give_real_pairs():
  paths = seq2seq.django_catalogs('de')
  assert paths[0] == seq2seq.django_catalog('de') and paths[0].endswith(os.path.join('de', 'LC_MESSAGES',
                                                                                    'django.mo'))
  assert any(os.sep + 'admin' + os.sep in p for p in paths)
  data = seq2seq_config(source='gettext', path=','.join(paths), eval_fraction=0.1).data
  train, eval_ = both(data)
  assert len(train) > 500 and len(eval_) > 30
  assert dict(list(train) + list(eval_)).get('Save') == 'Sichern'
  with pytest.raises(DataError, match=r"^data.path: Django has no catalog for language 'xx'"):
    seq2seq.django_catalog('xx')


def test_django_catalog_without_django_says_to_install_it(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(DataError, match=r'pip install django \(the translation demo.s corpus\)'):
    seq2seq.django_catalogs('de')


@pytest.mark.parametrize('name, source_key, target_key', [
    ('wmt14_translate/de-en', 'de', 'en'), ('cnn_dailymail', 'article', 'highlights')])
def test_tfds_pairs_via_mock_data(name, source_key, target_key, tokenizer):
  import tensorflow_datasets as tfds
  config = seq2seq_config(source='tfds', tfds_name=name, source_key=source_key, target_key=target_key,
                          eval_split='', eval_fraction=0.3)
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    train, eval_ = both(config.data)
    pairs = list(train) + list(eval_)
    example = seq2seq.Seq2SeqExamples(eval_, tokenizer, config)[0]
    config.data.target_key = 'summary'
    with pytest.raises(DataError, match=rf"^data.target_key: tfds '{name}' examples have no field 'summary'"):
      seq2seq.get_records(config.data, 'train')
  assert len(pairs) == 20 and 0 < len(eval_) < 20
  assert all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)
  assert example['encoder_inputs'][example['encoder_segment_ids'].sum() - 1] == EOS


def test_unknown_source_and_empty_split_are_refused(tmp_path):
  with pytest.raises(DataError, match=r"^data.source: 'text' has no \(source, target\) pairs; use one of"):
    seq2seq.get_records(seq2seq_config(source='text').data, 'train')
  path = write_jsonl(tmp_path / 'a.jsonl', [{'source': 'a', 'target': 'b'}])
  with pytest.raises(DataError, match=r"^data: the eval split of 'jsonl' has no \(source, target\) pairs"):
    seq2seq.get_records(seq2seq_config(source='jsonl', path=path, eval_fraction=0.0).data, 'eval')


def test_split_identifiers_writes_compound_names_as_words_for_the_encoder():
  code = 'def get_terminal_size(self):\n    return HTTPServer2(self._parse_header(line), x)'
  assert seq2seq.split_identifiers(code) == ('def get terminal size(self):\n    return http server 2(self.parse '
                                             'header(line), x)')
  data = base.get_config().data
  data.task_prefix = 'summarize: '
  assert seq2seq.encoder_text(data, code) == 'summarize: ' + code  # off by default
  data.split_identifiers = True
  assert seq2seq.encoder_text(data, code).startswith('summarize: def get terminal size(self):')


def test_fine_tune_held_out_files_seen_in_pretraining_are_found():
  """A fine-tune holding out more standard-library files than its pretraining run evaluates on files that run read;
  t5_tiny holds out what t5_tiny_summarize_code evaluates on."""
  from configs import t5_tiny, t5_tiny_summarize_code
  pretrained, fine_tune = t5_tiny.get_config().data, t5_tiny_summarize_code.get_config().data
  assert sources.eval_files_seen_in_pretraining(pretrained, fine_tune) == []
  pretrained.eval_fraction = 0.05
  seen = sources.eval_files_seen_in_pretraining(pretrained, fine_tune)
  assert seen and all(sources.is_eval_document(f, 0.1) and not sources.is_eval_document(f, 0.05) for f in seen)
  fine_tune.source = 'jsonl'
  assert sources.eval_files_seen_in_pretraining(pretrained, fine_tune) == []


def test_names_warm_up_config_validates_and_a_bad_code_target_is_one_line():
  """t5_tiny_summarize_code:names (the copying warm-up) is a valid run; data.code_target outside its choices, or
  'name' on another source than the embedded demo (where it would do nothing), is refused naming the key."""
  from configs import t5_tiny_summarize_code
  from lm.config import validation
  from lm.errors import ConfigError
  config = t5_tiny_summarize_code.get_config('names')
  assert (config.data.code_target, config.data.task_prefix, config.seq_len) == ('name', 'name: ', 64)
  validation.validate(config, num_devices=1, process_count=1)
  config.data.code_target = 'names'
  with pytest.raises(ConfigError, match='data.code_target'):
    validation.validate(config, num_devices=1, process_count=1)
  config.data.code_target, config.data.source, config.data.path = 'name', 'jsonl', 'pairs.jsonl'
  with pytest.raises(ConfigError, match="data.code_target='name' picks the targets of the embedded code demo"):
    validation.validate(config, num_devices=1, process_count=1)  # would be ignored: refused instead
