"""Token classification: entity-level F1 as seqeval computes it, the Python-tokenize demo's tags, labels on first
sub-tokens, the jsonl and tfds conll2003 sources, bad records, and the demo trained sharded (2,2,2) like on one
device, then tagged through lm.tag's library."""
import json
import random

import numpy as np
import pytest

from lm.data import tagging
from lm.errors import DataError
from lm.inference import entity_metrics

GOLD = [['B-PER', 'I-PER', 'O', 'B-LOC', 'I-LOC', 'I-LOC'], ['O', 'I-ORG', 'I-ORG', 'O', 'B-MISC', 'B-MISC'],
        ['B-PER', 'O']]
PREDICTED = [['B-PER', 'I-PER', 'O', 'B-LOC', 'I-LOC', 'O'], ['O', 'B-ORG', 'I-ORG', 'O', 'B-MISC', 'I-MISC'],
             ['I-PER', 'O']]


def test_entity_scores_equal_seqeval():
  # seqeval 1.2.2 (precision_score, recall_score, f1_score; default mode) on GOLD / PREDICTED: 0.6, 0.5, 6/11.
  # An I- after O or another type begins an entity (I-ORG, I-PER); B-MISC B-MISC are two entities.
  scores = entity_metrics.entity_scores(GOLD, PREDICTED)
  assert scores == pytest.approx({'entity_precision': 0.6, 'entity_recall': 0.5, 'entity_f1': 6 / 11})
  assert entity_metrics.entities(GOLD[1]) == {('ORG', 1, 2), ('MISC', 4, 4), ('MISC', 5, 5)}
  seqeval = pytest.importorskip('seqeval.metrics', reason='seqeval (optional) compares random sequences too')
  rng = random.Random(0)
  tags = ['O', 'B-A', 'I-A', 'B-B', 'I-B']
  for _ in range(300):
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 4))]
    predicted = [[rng.choice(tags) for _ in sentence] for sentence in gold]
    ours = entity_metrics.entity_scores(gold, predicted)
    assert ours['entity_f1'] == pytest.approx(seqeval.f1_score(gold, predicted))
    assert ours['entity_precision'] == pytest.approx(seqeval.precision_score(gold, predicted))


def test_python_lines_are_tagged_by_tokenize():
  lines = tagging.python_line_tags("if x.y > 2:  # note\n    return os.path.join('a', b)\n")
  assert lines[0] == (1, ['if', 'x', '.', 'y', '>', '2', ':'],
                      ['B-KEYWORD', 'B-NAME', 'I-NAME', 'I-NAME', 'O', 'B-NUMBER', 'O'])
  assert lines[1][1:] == (['return', 'os', '.', 'path', '.', 'join', '(', "'a'", ',', 'b', ')'],
                          ['B-KEYWORD', 'B-NAME', 'I-NAME', 'I-NAME', 'I-NAME', 'I-NAME', 'O', 'B-STRING', 'O',
                           'B-NAME', 'O'])


def _data_config(path, **overrides):
  from lm.config import base
  config = base.tag(base.bert(base.get_config()))
  config.data.update(source='jsonl', path=str(path), eval_fraction=0.0, **overrides)
  return config


def test_labels_go_on_first_sub_tokens_and_long_sentences_are_cut(tiny_data, tmp_path):
  path = tmp_path / 'ner.jsonl'
  rows = [{'tokens': ['Guido', 'van', 'Rossum', 'wrote', 'Python'], 'tags': ['B-PER', 'I-PER', 'I-PER', 'O', 'B-MISC']},
          {'tokens': ['word'] * 40, 'tags': ['O'] * 40}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  config = _data_config(path)
  config.seq_len = 24
  records = tagging.get_records(config.data, 'train')
  assert records.tag_names == ('O', 'B-MISC', 'B-PER', 'I-PER')
  tokenizer = tiny_data[0]
  examples = tagging.TagExamples(records, tokenizer, config)
  row, positions = examples[0], examples.word_positions(0)
  assert row['inputs'][0] == tokenizer.cls_id and np.all(positions[:-1] < positions[1:])
  assert [records.tag_names[t] for t in row['tags'][positions]] == rows[0]['tags']
  assert row['tag_weights'].sum() == 5 and np.all(row['tag_weights'][positions] == 1)
  assert examples.num_truncated == 1 and (examples.word_positions(1) == -1).sum() > 0
  config.data.label_all_subtokens = True
  every = tagging.TagExamples(records, tokenizer, config)[0]
  assert every['tag_weights'].sum() == (every['segment_ids'].sum() - 2)  # every sub-token but [CLS] and [SEP]
  later = range(positions[0] + 1, positions[1])  # 'Guido's later pieces continue it as I-PER
  assert all(records.tag_names[every['tags'][p]] == 'I-PER' for p in later)


@pytest.mark.parametrize('row, message', [
    ({'tokens': ['a', 'b'], 'tags': ['O']}, r'ner.jsonl:2 has 2 tokens but 1 tags'),
    ({'tokens': ['a'], 'tags': ['PER']}, r"ner.jsonl:2 has the tag 'PER', which is not IOB2"),
    ({'tokens': ['a'], 'tags': ['B-ORG']}, r"ner.jsonl:2 has the tag 'B-ORG', which is not among the 3 tags"),
])
def test_bad_records_are_one_line_errors_naming_the_line(tmp_path, row, message):
  path = tmp_path / 'ner.jsonl'
  path.write_text(json.dumps({'tokens': ['x', 'y'], 'tags': ['B-PER', 'I-PER']}) + '\n' + json.dumps(row) + '\n')
  config = _data_config(path, tag_names='O,B-PER,I-PER')
  with pytest.raises(DataError, match=message) as e:
    tagging.get_records(config.data, 'train')
  assert '\n' not in str(e.value)


class _MockSentences:
  """tfds.data_source's stand-in under mock_data: conll2003's real features (tag names from its metadata) and
  sentences whose words and tags line up (the random mock draws their lengths apart)."""

  def __init__(self, builder, split):
    self.dataset_info, self.split = builder.info, split

  def __len__(self) -> int:
    return 5

  def __getitem__(self, i):
    names = self.dataset_info.features['ner'].feature.names
    return {'tokens': np.array([b'EU', b'rejects', b'German', b'call'], object),
            'ner': np.array([names.index('B-ORG'), 0, names.index('B-MISC'), 0])}


def _mock_source(builder, split, *args, **kwargs):  # patched in as DatasetBuilder.as_data_source
  del args, kwargs
  return _MockSentences(builder, split)


@pytest.mark.slow  # the fast tier is at its limit
def test_tfds_conll2003_with_mock_data():
  import tensorflow_datasets as tfds
  config = _data_config('')
  config.data.update(source='tfds', tfds_name='conll2003', text_key='tokens', label_key='ner',
                     eval_split='validation')
  with tfds.testing.mock_data(as_data_source_fn=_mock_source):
    records = tagging.get_records(config.data, 'eval')
  assert len(records) == 5 and records.tag_names[0] == 'O' and 'B-PER' in records.tag_names
  assert records.tag_strings(0) == ['B-ORG', 'O', 'B-MISC', 'O'] and records.words[0] == ('EU', 'rejects', 'German',
                                                                                           'call')


@pytest.mark.slow
def test_the_demo_trains_sharded_like_one_device_and_tags(tmp_path):
  """bert_tiny_tag:test from scratch: (2,2,2) losses equal one device's; a short run reports eval/entity_f1 and
  saves its tag names; lm.tag's library tags a line; the baseline tagger scores the held-out lines."""
  from test_sharded import run_sharded_like_one_device

  from configs import bert_tiny_tag
  from lm.inference import task_eval
  from lm.store import workdir
  config = bert_tiny_tag.get_config('test')
  config.model.dropout = 0.1
  rows, train_rows, eval_rows = run_sharded_like_one_device(config, str(tmp_path / 'wd'))
  tagger = tagging.most_frequent_tag_baseline(train_rows.records)
  baseline = entity_metrics.entity_scores([eval_rows.records.tag_strings(i) for i in range(len(eval_rows))],
                                          [tagger(words) for words in eval_rows.records.words])
  assert 0.3 < baseline['entity_f1'] < 0.95
  last = rows[-1]
  assert {'eval/entity_f1', 'eval/entity_precision', 'eval/tag_loss'} <= set(last)
  run = workdir.load(str(tmp_path / 'wd'))
  assert run.config.data.tag_names == ','.join(tagging.tag_set(tagging.DEMO_TAGS))
  words = task_eval.split_words("x = os.path.join(a, 'b')", 'python')
  tags = task_eval.tag(run, words)
  assert words[:4] == ['x', '=', 'os', '.'] and len(tags) == len(words) and set(tags) <= set(tagging.tag_set(
      tagging.DEMO_TAGS))
