"""Tests of lm.data: sources, tokenizer, packing and the grain pipeline (CPU, real data, no network)."""
import json
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lm.config import base
from lm.data import cache, packing, pipeline, sources, tokenizer as tokenizer_lib
from lm.errors import DataError

EOS = tokenizer_lib.EOS_ID


@pytest.fixture(scope='module')
def cache_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp('lm_cache'))


def small_config(cache_root, **data):
  """The base config shrunk: 1024-piece tokenizer, 60 documents per split, 64-token rows, batch 8."""
  config = base.get_config()
  config.model.vocab_size = 1024
  config.seq_len = 64
  config.batch_size = 8
  config.eval_steps = 3
  config.data.cache_dir = cache_root
  config.data.max_documents = 60
  config.data.eval_fraction = 0.1
  config.data.update(data)
  return config


@pytest.fixture(scope='module')
def prepared(cache_root):
  """(tokenizer, train rows, eval rows) of the embedded corpus, trained and tokenized once per module."""
  return pipeline.prepare(small_config(cache_root))


# --- sources ---------------------------------------------------------------------------------------------------


def test_embedded_corpus_is_real_python_split_by_document():
  data = base.get_config().data
  train, evals = sources.get_documents(data, 'train'), sources.get_documents(data, 'eval')
  text = ''.join(train)
  assert len(train) > 500 and len(evals) > 5
  assert len(text) > 5_000_000 and 'def ' in text and 'import ' in text
  train_ids = {train.doc_id(i) for i in range(len(train))}
  eval_ids = {evals.doc_id(i) for i in range(len(evals))}
  assert 'os.py' in train_ids | eval_ids and 'pydoc_data.topics:if' in train_ids | eval_ids
  assert not train_ids & eval_ids
  assert all(sources.is_eval_document(i, data.eval_fraction) for i in eval_ids)
  assert not any(sources.is_eval_document(i, data.eval_fraction) for i in train_ids)
  again = sources.get_documents(data, 'eval')
  assert again.fingerprint == evals.fingerprint and list(again) == list(evals)
  assert again.fingerprint != train.fingerprint


def test_text_source_one_file_per_document(tmp_path):
  (tmp_path / 'a').mkdir()
  contents = {f'a/{i}.txt': f'document {i}\nline two of {i}\n' for i in range(20)}
  contents['b.md'] = 'the odd one'
  for name, body in contents.items():
    (tmp_path / name).write_text(body)
  config = small_config('', source='text', path=f'{tmp_path}/a/*.txt, {tmp_path}/b.md', eval_fraction=0.3,
                        max_documents=0)
  train, evals = sources.get_documents(config.data, 'train'), sources.get_documents(config.data, 'eval')
  assert sorted(list(train) + list(evals)) == sorted(contents.values())
  # a document's id is its file's path (under tmp_path, so the split differs per run): each file is where the
  # hash of its path puts it, and both sides are non-empty here
  expected = {str(tmp_path / name) for name in contents
              if sources.is_eval_document(str(tmp_path / name), config.data.eval_fraction)}
  assert sorted(evals) == sorted(contents[os.path.relpath(p, tmp_path)] for p in expected)
  assert train and evals
  config.data.max_documents = 3
  assert len(sources.get_documents(config.data, 'train')) == 3


def test_text_source_through_the_pipeline(tmp_path, prepared):
  tokenizer = prepared[0]
  tokenizer.save(tmp_path / 'tok.model')
  for i in range(10):
    (tmp_path / f'{i}.txt').write_text(f'def f{i}(x):\n  return x + {i}\n' * 20)
  config = small_config(str(tmp_path / 'cache'), source='text', path=f'{tmp_path}/*.txt', eval_fraction=0.5,
                        tokenizer=str(tmp_path / 'tok.model'))
  _, train, evals = pipeline.prepare(config)
  assert len(train) > 0 and len(evals) > 0
  assert 'return x +' in tokenizer.decode(train[0]['inputs'])


def test_jsonl_source_one_record_per_document(tmp_path):
  records = [{'body': f'record {i}', 'id': i} for i in range(30)]
  (tmp_path / 'x.jsonl').write_text('\n'.join(json.dumps(r) for r in records) + '\n\n')
  config = small_config('', source='jsonl', path=str(tmp_path / '*.jsonl'), text_key='body', max_documents=0,
                        eval_fraction=0.2)
  train, evals = sources.get_documents(config.data, 'train'), sources.get_documents(config.data, 'eval')
  assert sorted(list(train) + list(evals)) == sorted(r['body'] for r in records)
  config.data.text_key = 'text'
  with pytest.raises(DataError, match=r"data.text_key: .*x.jsonl:1 has no field 'text'"):
    sources.get_documents(config.data, 'train')


def test_missing_glob_names_data_path(tmp_path):
  config = small_config('', source='text', path=f'{tmp_path}/nothing/*.txt')
  with pytest.raises(DataError, match=r'^data.path: no file matches .*nothing/\*\.txt'):
    sources.get_documents(config.data, 'train')
  config.data.path = ''
  with pytest.raises(DataError, match='data.path is empty'):
    sources.get_documents(config.data, 'train')
  config.data.source = 'csv'
  with pytest.raises(DataError, match='data.source'):
    sources.get_documents(config.data, 'train')


def test_tfds_source_reads_mocked_lm1b():
  config = small_config('', source='tfds', tfds_name='lm1b', text_key='text', max_documents=0)
  with tfds.testing.mock_data(num_examples=12):
    train, evals = sources.get_documents(config.data, 'train'), sources.get_documents(config.data, 'eval')
    assert len(train) == 12 and len(evals) == 12  # the 'test' split
    assert all(isinstance(d, str) and d for d in train)
    config.data.eval_split = ''  # hold out by document instead
    train, evals = sources.get_documents(config.data, 'train'), sources.get_documents(config.data, 'eval')
    assert len(train) + len(evals) == 12


def test_unprepared_tfds_fails_fast_without_network(tmp_path):
  config = small_config('', source='tfds', tfds_name='lm1b', tfds_data_dir=str(tmp_path))
  start = time.time()
  with pytest.raises(DataError, match=r"tfds dataset 'lm1b' \(split train\) is not prepared .*tfds build lm1b"):
    sources.get_documents(config.data, 'train')
  assert time.time() - start < 30
  assert not any(tmp_path.rglob('*.tfrecord*')) and not any(tmp_path.rglob('*.array_record*'))


# --- tokenizer -------------------------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_ids(prepared):
  tokenizer, _, _ = prepared
  evals = sources.get_documents(small_config('').data, 'eval')
  samples = list(evals[:5]) + ['', '  leading\tand trailing  \n\n', 'héllo 世界 🙂 \x00 [MASK] </s> <pad>']
  for text in samples:
    assert tokenizer.decode(tokenizer.encode(text)) == text
  assert [tokenizer.decode(ids) for ids in tokenizer.encode_batch(samples)] == samples
  assert tokenizer.vocab_size == 1024
  ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id,
         tokenizer.cls_id, tokenizer.sep_id)
  assert ids == (0, 1, 2, 3, 4, 5, 6)
  assert tokenizer.mask_id in tokenizer.encode('a [MASK] b')
  hello = tokenizer.encode('hello')
  assert tokenizer.decode([tokenizer.bos_id] + hello + [tokenizer.eos_id, tokenizer.pad_id]) == 'hello'


def test_tokenizer_is_cached_not_retrained(prepared, cache_root, monkeypatch):
  config = small_config(cache_root)
  path = tokenizer_lib.tokenizer_path(config, sources.get_documents(config.data, 'train'))
  mtime = path.stat().st_mtime_ns

  def fail(*args):
    raise AssertionError('retrained although cached')

  monkeypatch.setattr(tokenizer_lib, 'train_tokenizer', fail)
  assert tokenizer_lib.get_tokenizer(config).fingerprint == prepared[0].fingerprint
  assert path.stat().st_mtime_ns == mtime


def test_tokenizer_file_missing_or_wrong_vocab(prepared, tmp_path):
  prepared[0].save(tmp_path / 'tok.model')
  config = small_config('', tokenizer=str(tmp_path / 'tok.model'))
  assert tokenizer_lib.get_tokenizer(config).fingerprint == prepared[0].fingerprint
  config.model.vocab_size = 2048
  with pytest.raises(DataError, match='model.vocab_size is 2048 but tokenizer .* has 1024'):
    tokenizer_lib.get_tokenizer(config)
  config.data.tokenizer = str(tmp_path / 'missing.model')
  with pytest.raises(DataError, match='data.tokenizer: no file'):
    tokenizer_lib.get_tokenizer(config)


def test_cache_dir_from_env(monkeypatch, tmp_path):
  monkeypatch.setenv('LM_CACHE_DIR', str(tmp_path))
  assert cache.cache_dir(small_config('').data) == tmp_path
  assert cache.cache_dir(small_config('/elsewhere').data).as_posix() == '/elsewhere'


# --- packing ---------------------------------------------------------------------------------------------------


def test_packing_small_stream_exactly():
  docs = [[10, 11, 12], [20], [30, 31]]
  tokens = np.array([t for d in docs for t in d + [EOS]])  # 10 11 12 3 | 20 3 | 30 31 3
  rows = packing.PackedSequences(tokens, [0, 4, 6], seq_len=4)
  assert len(rows) == 2
  row = rows[0]
  np.testing.assert_array_equal(row['inputs'], [10, 11, 12, EOS])
  np.testing.assert_array_equal(row['targets'], [11, 12, EOS, 20])
  np.testing.assert_array_equal(row['weights'], [1, 1, 1, 0])
  row = rows[1]  # starts at the target of the previous row's last input
  np.testing.assert_array_equal(row['inputs'], [20, EOS, 30, 31])
  np.testing.assert_array_equal(row['segment_ids'], [1, 1, 2, 2])
  np.testing.assert_array_equal(row['positions'], [0, 1, 0, 1])
  np.testing.assert_array_equal(row['weights'], [1, 0, 1, 1])
  concat = packing.PackedSequences(tokens, [0, 4, 6], seq_len=4, mode='concat')[1]
  np.testing.assert_array_equal(concat['inputs'], [20, EOS, 30, 31])
  np.testing.assert_array_equal(concat['segment_ids'], [1, 1, 1, 1])
  np.testing.assert_array_equal(concat['positions'], [0, 1, 2, 3])
  np.testing.assert_array_equal(concat['weights'], [1, 1, 1, 1])
  with pytest.raises(DataError, match='data.packing'):
    packing.PackedSequences(tokens, [0, 4, 6], seq_len=4, mode='padded')


def test_packed_rows_never_cross_documents(prepared):
  _, train, _ = prepared
  assert len(train) > 100
  stream = np.asarray(train.tokens, np.int64)
  doc_of = np.cumsum(stream == EOS) - (stream == EOS)  # document index of every token (eos closes its doc)
  for i in range(len(train)):
    row, start = train[i], i * train.seq_len
    np.testing.assert_array_equal(row['inputs'], stream[start:start + train.seq_len])
    np.testing.assert_array_equal(row['targets'], stream[start + 1:start + train.seq_len + 1])
    doc = doc_of[start:start + train.seq_len]
    np.testing.assert_array_equal(row['segment_ids'], doc - doc[0] + 1)  # same segment <=> same document
    np.testing.assert_array_equal(row['weights'], row['inputs'] != EOS)  # 0 exactly at eos -> next document
    new_doc = np.flatnonzero(np.diff(row['segment_ids'])) + 1
    assert np.all(row['positions'][new_doc] == 0) and row['positions'][0] == 0
    assert np.all(np.diff(row['positions'])[np.diff(row['segment_ids']) == 0] == 1)


# --- pipeline --------------------------------------------------------------------------------------------------


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_order_is_deterministic_in_the_seed(prepared, cache_root):
  _, train, _ = prepared
  config = small_config(cache_root)
  first = take(pipeline.train_iterator(config, train, 0, 1), 3)
  again = take(pipeline.train_iterator(config, train, 0, 1), 3)
  config.seed = 1
  other = take(pipeline.train_iterator(config, train, 0, 1), 3)
  assert first[0]['inputs'].shape == (8, 64) and first[0]['weights'].dtype == np.float32
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(first[0]['inputs'], other[0]['inputs'])
  config.data.shuffle = False
  ordered = next(pipeline.train_iterator(config, train, 0, 1))
  np.testing.assert_array_equal(ordered['inputs'], [train[i]['inputs'] for i in range(8)])


def test_processes_get_disjoint_halves_of_each_step(prepared, cache_root):
  _, train, _ = prepared
  config = small_config(cache_root)
  whole = take(pipeline.train_iterator(config, train, 0, 1), 3)
  parts = [take(pipeline.train_iterator(config, train, p, 2), 3) for p in range(2)]
  for step in range(3):
    local = [parts[p][step]['inputs'] for p in range(2)]
    assert local[0].shape == (4, 64)
    interleaved = np.stack([local[k % 2][k // 2] for k in range(8)])
    np.testing.assert_array_equal(interleaved, whole[step]['inputs'])
    assert not {r.tobytes() for r in local[0]} & {r.tobytes() for r in local[1]}
  config.batch_size = 7
  with pytest.raises(DataError, match='batch_size'):
    pipeline.train_iterator(config, train, 0, 2)


def test_iterator_resumes_from_its_state(prepared, cache_root):
  _, train, _ = prepared
  config = small_config(cache_root)
  iterator = pipeline.train_iterator(config, train, 0, 1)
  take(iterator, 4)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 2)
  resumed = pipeline.train_iterator(config, train, 0, 1)
  resumed.set_state(state)
  for a, b in zip(expected, take(resumed, 2)):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])


def test_eval_batches_are_fixed_in_order_and_wrap(prepared, cache_root):
  _, _, evals = prepared
  config = small_config(cache_root)
  config.eval_steps = len(evals) // config.batch_size + 2  # runs past the end of the split
  batches = pipeline.eval_batches(config, evals, 0, 1)
  assert len(batches) == config.eval_steps
  flat = np.concatenate([b['inputs'] for b in batches])
  expected = [evals[k % len(evals)]['inputs'] for k in range(len(flat))]
  np.testing.assert_array_equal(flat, expected)
  halves = [pipeline.eval_batches(config, evals, p, 2) for p in range(2)]
  np.testing.assert_array_equal(halves[1][0]['inputs'], batches[0]['inputs'][1::2])


def test_tokens_are_cached_and_too_short_splits_fail(prepared, cache_root):
  _, train, _ = prepared
  mtime = os.stat(train.tokens.paths[0]).st_mtime_ns
  _, again, _ = pipeline.prepare(small_config(cache_root))
  assert again.tokens.paths == train.tokens.paths and os.stat(train.tokens.paths[0]).st_mtime_ns == mtime
  assert train.tokens.dtype == np.uint16 and len(again) == len(train)
  config = small_config(cache_root)
  config.seq_len = train.num_tokens
  with pytest.raises(DataError, match='the (train|eval) split has .* tokens .* lower --config.seq_len'):
    pipeline.prepare(config)
