"""Extractive question answering: SQuAD's metrics and post-processing on hand-made cases, windows of long contexts
(the answer across a window boundary), the tfds squad and jsonl sources, bad records, and the offline demo trained
sharded (2,2,2) like on one device, then answered through lm.answer's library."""
import json

import ml_collections
import numpy as np
import pytest

from lm.data import qa
from lm.errors import DataError
from lm.inference import span_answers, text_metrics


def test_squad_scores_normalise_and_take_the_best_gold_answer():
  assert text_metrics.squad_normalize('The  Cat, sat!') == 'cat sat'
  scores = text_metrics.squad_scores(['the cat', 'a dog ran', '', 'x'], [['Cat', 'a cat'], ['dog'], [], ['y']])
  # exact: 1, 0, 1 (no answer, empty prediction), 0; F1: 1, 2*(1/2*1)/(1/2+1) = 2/3, 1, 0
  assert scores['exact_match'] == pytest.approx(50.0)
  assert scores['f1'] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)


def _window(context_tokens: list[tuple[int, int]], length: int, start: dict, end: dict):
  """(start logits, end logits, offsets) of a window whose context tokens sit at positions 2.. (0 = [CLS])."""
  offsets = np.full((length, 2), -1, np.int32)
  offsets[2:2 + len(context_tokens)] = context_tokens
  starts, ends = np.zeros(length, np.float32), np.zeros(length, np.float32)
  for position, value in start.items():
    starts[position] = value
  for position, value in end.items():
    ends[position] = value
  return starts, ends, offsets


def test_post_processing_takes_the_best_valid_span_over_windows_and_the_null_answer():
  context = 'alpha beta gamma delta epsilon'
  spans = [(0, 5), (5, 10), (10, 16), (16, 22), (22, 30)]
  first = _window(spans[:3], 8, {2: 1.0, 4: 5.0}, {3: 1.0, 2: 6.0})  # best pair 4..2 has end < start: invalid
  second = _window(spans[2:], 8, {3: 4.0}, {4: 4.0, 3: 1.0})  # 'delta epsilon' (positions 3..4) scores 8
  found = span_answers.best_answer(context, [first, second], n_best=3, max_answer_len=5)
  assert (found.text, found.score, found.start) == ('delta epsilon', 8.0, 17)
  # one token at most: 'alpha' alone (start 1 + end 6 in the first window) beats 'delta' (4 + 1) and 'epsilon'
  assert span_answers.best_answer(context, [first, second], n_best=3, max_answer_len=1).text == 'alpha'
  # the null score (position 0 of each window, the lowest over windows) beats the best span by more than 1
  null_first, null_second = (_window(spans[:3], 8, {0: 7.0}, {0: 3.0}), _window(spans[2:], 8, {0: 6.0, 3: 2.0},
                                                                                  {0: 5.0, 4: 1.0}))
  assert span_answers.best_answer(context, [null_first, null_second], allow_null=True).text == ''
  assert span_answers.best_answer(context, [null_first, null_second], allow_null=True,
                                  null_threshold=10.0).text == 'delta epsilon'
  assert span_answers.best_answer(context, [null_first, null_second]).text == 'delta epsilon'  # SQuAD v1.1


def _config(seq_len: int, doc_stride: int, max_query_len: int = 8) -> ml_collections.ConfigDict:
  from lm.config import base
  config = base.qa(base.bert(base.get_config()))
  config.seq_len, config.data.doc_stride, config.data.max_query_len = seq_len, doc_stride, max_query_len
  return config


def test_long_contexts_become_overlapping_windows_that_hold_the_answer_or_point_at_cls(tiny_data):
  tokenizer = tiny_data[0]
  context = ' '.join(f'word{i}' for i in range(60)) + ' the answer is here. ' + ' '.join(f'x{i}' for i in range(40))
  start = context.index('answer is')
  record = qa.QaRecord('q', 'Where is it?', context, ('answer is',), (start,))
  features = qa.QaFeatures(qa.Records((record,), 'f'), tokenizer, _config(48, 16))
  ids, _ = tokenizer.encode_with_offsets(context)
  question = len(tokenizer.encode('Where is it?'))
  room = 48 - question - 3
  assert len(features) == 1 + -(-(len(ids) - room) // (room - 16))  # windows overlapping by doc_stride tokens
  holding = []
  for i in range(len(features)):
    row, offsets = features[i], features.offsets(i)
    assert row['inputs'][0] == tokenizer.cls_id and row['token_types'][question + 2] == 1
    s, e = int(row['start_positions']), int(row['end_positions'])
    if s:
      holding.append(i)
      assert context[offsets[s, 0]:offsets[e, 1]].strip() == 'answer is'
    else:
      assert e == 0  # not wholly inside this window: both at [CLS]
  assert holding  # and a window that cuts it (across its boundary) points at [CLS]
  cut = [i for i in range(len(features)) if i not in holding and (features.offsets(i)[:, 0] >= 0).any() and
         features.offsets(i)[features.offsets(i)[:, 0] >= 0][:, 0].min() <= start <
         features.offsets(i)[:, 1].max() < start + len('answer is')]
  assert all(int(features[i]['start_positions']) == 0 for i in cut)


def test_jsonl_records_and_their_errors(tmp_path):
  good = {'id': 'a', 'question': 'Who?', 'context': 'Ada wrote it.', 'answers': {'text': ['Ada'], 'answer_start': [0]}}
  none = {'question': 'When?', 'context': 'Nobody knows.', 'answers': {'text': [], 'answer_start': []}}
  path = tmp_path / 'squad.jsonl'
  path.write_text(json.dumps(good) + '\n' + json.dumps(none) + '\n')
  config = _config(64, 16).data
  config.source, config.path, config.eval_fraction = 'jsonl', str(path), 0.0
  records = qa.get_records(config, 'train')
  assert [r.answers for r in records] == [('Ada',), ()] and records[0].id == 'a' and records[1].id.endswith(':2')
  bad = dict(good, answers={'text': ['wrote'], 'answer_start': [0]})
  path.write_text(json.dumps(good) + '\n' + json.dumps(bad) + '\n')
  with pytest.raises(DataError, match=r"squad.jsonl:2 answer 'wrote' is not at answer_start=0") as e:
    qa.get_records(config, 'train')
  assert '\n' not in str(e.value)
  path.write_text(json.dumps({'question': 'Who?', 'answers': good['answers']}) + '\n')
  with pytest.raises(DataError, match=r"squad.jsonl:1 has no field 'context'"):
    qa.get_records(config, 'train')


@pytest.mark.slow  # the fast tier is at its limit
def test_tfds_squad_v2_with_mock_data():
  import tensorflow_datasets as tfds
  config = _config(64, 16).data
  config.source, config.tfds_name, config.train_split, config.eval_split = 'tfds', 'squad/v2.0', 'train', 'validation'
  with tfds.testing.mock_data(num_examples=6):
    records = qa.get_records(config, 'eval')
  assert len(records) == 6 and all(isinstance(r.context, str) and isinstance(r.question, str) for r in records)
  assert all(len(r.answers) == len(r.starts) for r in records)


@pytest.mark.slow  # parses the standard library (seconds); the demo's training test shares it
def test_the_demo_questions_are_answerable_and_split_by_file():
  questions = qa.docstring_questions(0.2)
  assert len(questions['train']) > 1000 and len(questions['eval']) > 150
  for record in questions['train'][:200] + questions['eval'][:50]:
    qa.check_answers(record, record.id)  # every gold span is where it says
    assert record.question.startswith('What does ') and record.question.endswith(' return?')
  train_files = {r.id.split(':')[0] for r in questions['train']}
  assert not train_files & {r.id.split(':')[0] for r in questions['eval']}
  baseline = text_metrics.squad_scores([qa.first_sentence_baseline(r) for r in questions['eval']],
                                       [r.answers for r in questions['eval']])
  assert baseline['exact_match'] == 0.0 and 10 < baseline['f1'] < 60


@pytest.mark.slow
def test_the_demo_trains_sharded_like_one_device_and_answers(tmp_path):
  """bert_tiny_qa:test from scratch: (2,2,2) losses equal one device's; a short run reports eval/exact_match and
  eval/f1 over whole questions (lm.answer's library: tests/test_convert.py, on converted QA models)."""
  from test_sharded import run_sharded_like_one_device

  from configs import bert_tiny_qa
  config = bert_tiny_qa.get_config('test')
  config.model.dropout = 0.1
  rows, _, _ = run_sharded_like_one_device(config, str(tmp_path / 'wd'))
  last = rows[-1]
  assert {'eval/exact_match', 'eval/f1', 'eval/span_loss'} <= set(last) and 0 <= last['eval/f1'] <= 100
