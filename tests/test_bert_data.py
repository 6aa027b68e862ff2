"""Tests of lm.data.bert: MLM masking, NSP sentence pairs and their grain pipeline (CPU, real data, no network)."""
import json

import numpy as np
import pytest

from lm.config import base
from lm.data import bert, packing, pipeline, tokenizer as tokenizer_lib
from lm.errors import DataError

CLS, SEP, MASK, UNK = tokenizer_lib.CLS_ID, tokenizer_lib.SEP_ID, tokenizer_lib.MASK_ID, tokenizer_lib.UNK_ID
EOS = tokenizer_lib.EOS_ID
SPECIAL = tokenizer_lib.NUM_SPECIAL_IDS


def bert_config(**data):
  """The base config as a small BERT: 1024-piece tokenizer, 60 documents per split, 64-token pairs, batch 8."""
  config = base.get_config()
  config.model.type = 'bert'
  config.model.vocab_size = 1024
  config.seq_len = 64
  config.batch_size = 8
  config.eval_steps = 3
  config.data.max_documents = 60
  config.data.eval_fraction = 0.1
  config.data.max_predictions_per_seq = 10
  config.data.update(data)
  return config


@pytest.fixture(scope='module')
def bert_data():
  """(tokenizer, train pairs, eval pairs) for bert_config(), in the session's private cache (LM_CACHE_DIR)."""
  return pipeline.prepare(bert_config())


def unmasked(pairs: bert.SentencePairs, **changes) -> bert.SentencePairs:
  """The same pairs without masking (or with other settings), to read segments as they are in the stream."""
  settings = dict(vocab_size=pairs.vocab_size, mask_prob=0.0, max_predictions=pairs.max_predictions,
                  nsp_random_prob=pairs.nsp_random_prob, short_seq_prob=pairs.short_seq_prob,
                  newline_id=pairs.newline_id, word_starts=pairs.word_starts)
  settings.update(changes)
  return bert.SentencePairs(pairs.tokens, pairs.doc_starts, pairs.seq_len, **settings)


def sample_rows(pairs: bert.SentencePairs, n: int) -> list[np.ndarray]:
  """Unmasked [CLS] A [SEP] B [SEP] sequences of n evenly spread anchors."""
  plain = unmasked(pairs)
  anchors = np.linspace(0, len(pairs) - 1, n).astype(int)
  return [plain.make_example(plain[i], np.random.default_rng(int(i)))['inputs'] for i in anchors]


def words_of(tokens: np.ndarray, word_starts: np.ndarray) -> list[list[int]]:
  """The maskable words of `tokens`: runs of ordinary pieces, split before each word-start piece."""
  words = []
  for p, t in enumerate(tokens):
    if t < SPECIAL:
      continue
    if word_starts[t] or not words or words[-1][-1] != p - 1:
      words.append([p])
    else:
      words[-1].append(p)
  return words


# --- tokenizer additions ---------------------------------------------------------------------------------------


def test_newline_id_and_word_starts(bert_data):
  tokenizer = bert_data[0]
  assert tokenizer.newline_id == tokenizer._sp.piece_to_id('<0x0A>') and tokenizer.newline_id >= SPECIAL
  assert tokenizer.newline_id in tokenizer.encode('a = 1\nb = 2')
  starts = tokenizer.word_starts()
  assert starts.shape == (1024,) and starts.dtype == bool and starts[:SPECIAL].all()
  pieces = [tokenizer._sp.id_to_piece(i) for i in range(1024)]
  assert all(starts[i] == (p.startswith('\u2581') or p in ('<0x0A>', '<0x09>', '<0x0D>', '<0x0B>', '<0x0C>',
                                                          '<0x20>'))
             for i, p in enumerate(pieces) if i >= SPECIAL)
  ids = tokenizer.encode('return foo(x)')  # '▁return' starts a word, the pieces of 'foo(x)' after the first do not
  assert starts[ids[0]] and sum(starts[ids]) == 2


# --- masking ---------------------------------------------------------------------------------------------------


def test_masking_statistics_over_real_sequences(bert_data):
  _, train, _ = bert_data
  rows = sample_rows(train, 400)
  rng = np.random.default_rng(0)
  candidates = selected = masked = kept = replaced = 0
  for tokens in rows:
    inputs, positions, targets = bert.mask_tokens(tokens, rng, mask_prob=0.15, max_predictions=64, vocab_size=1024)
    assert np.all(np.diff(positions) > 0)
    np.testing.assert_array_equal(targets, tokens[positions])
    assert np.all(tokens[positions] >= SPECIAL)  # never pad, [CLS], [SEP] or another special token
    untouched = np.ones(len(tokens), bool)
    untouched[positions] = False
    np.testing.assert_array_equal(inputs[untouched], tokens[untouched])
    got = inputs[positions]
    assert np.all((got == MASK) | (got >= SPECIAL)) and np.all(got < 1024)
    candidates += int(np.sum(tokens >= SPECIAL))
    selected += len(positions)
    masked += int(np.sum(got == MASK))
    kept += int(np.sum(got == targets))
    replaced += int(np.sum((got != MASK) & (got != targets)))
  assert candidates >= 10_000
  print(f'masking: {selected}/{candidates} = {selected / candidates:.4f} selected; '
        f'[MASK] {masked / selected:.3f}, random {replaced / selected:.3f}, kept {kept / selected:.3f}')
  assert abs(selected / candidates - 0.15) < 0.01
  assert abs(masked / selected - 0.8) < 0.03
  assert abs(replaced / selected - 0.1) < 0.025
  assert abs(kept / selected - 0.1) < 0.025


def test_masking_count_cap_and_edges():
  rng = np.random.default_rng(0)
  tokens = np.array([CLS] + list(range(10, 70)) + [SEP, 0, 0], np.int32)  # 60 candidates
  for _ in range(20):
    _, positions, _ = bert.mask_tokens(tokens, rng, mask_prob=0.15, max_predictions=20, vocab_size=100)
    assert len(positions) == 9  # round(0.15 * 60)
    _, positions, _ = bert.mask_tokens(tokens, rng, mask_prob=0.9, max_predictions=5, vocab_size=100)
    assert len(positions) == 5  # the cap
  inputs, positions, targets = bert.mask_tokens(tokens, rng, mask_prob=0.0, max_predictions=20, vocab_size=100)
  assert len(positions) == len(targets) == 0
  np.testing.assert_array_equal(inputs, tokens)
  two = np.array([CLS, 50, SEP, 60, SEP, 0], np.int32)
  _, positions, _ = bert.mask_tokens(two, rng, mask_prob=0.15, max_predictions=20, vocab_size=100)
  assert len(positions) == 1 and positions[0] in (1, 3)  # at least one
  specials = np.array([CLS, SEP, MASK, UNK, EOS, 0], np.int32)
  inputs, positions, _ = bert.mask_tokens(specials, rng, mask_prob=0.5, max_predictions=20, vocab_size=100)
  assert len(positions) == 0 and np.array_equal(inputs, specials)


def test_whole_word_masking_chooses_whole_words(bert_data):
  tokenizer, train, _ = bert_data
  starts = tokenizer.word_starts()
  rng = np.random.default_rng(1)
  multi = total = candidates = 0
  for tokens in sample_rows(train, 300):
    inputs, positions, _ = bert.mask_tokens(tokens, rng, mask_prob=0.15, max_predictions=10, vocab_size=1024,
                                            word_starts=starts)
    assert len(positions) <= 10
    chosen = set(positions.tolist())
    for word in words_of(tokens, starts):
      inside = chosen & set(word)
      assert not inside or inside == set(word), (word, sorted(chosen))
      multi += len(inside) > 1
    total += len(positions)
    candidates += int(np.sum(tokens >= SPECIAL))
  print(f'whole words: {total}/{candidates} = {total / candidates:.4f} selected, {multi} multi-piece words')
  assert multi > 100 and 0.12 < total / candidates <= 0.15 + 0.01


# --- sentence pairs --------------------------------------------------------------------------------------------


def split_example(example: dict) -> tuple[np.ndarray, np.ndarray]:
  """Segments A and B of an example, checking the [CLS] A [SEP] B [SEP] layout and its side arrays."""
  inputs, length = example['inputs'], int(example['segment_ids'].sum())
  seps = np.flatnonzero(inputs[:length] == SEP)
  assert inputs[0] == CLS and len(seps) == 2 and seps[1] == length - 1 and seps[0] >= 2 and seps[1] > seps[0] + 1
  np.testing.assert_array_equal(example['segment_ids'], np.arange(len(inputs)) < length)
  np.testing.assert_array_equal(example['token_types'], (np.arange(len(inputs)) > seps[0]) & (example['segment_ids']
                                                                                              > 0))
  np.testing.assert_array_equal(example['positions'], np.arange(len(inputs)))
  assert np.all(inputs[length:] == 0)
  a, b = inputs[1:seps[0]], inputs[seps[0] + 1:length - 1]
  assert np.all(a >= SPECIAL) and np.all(b >= SPECIAL)  # no eos / bos / pad / stray special inside a segment
  return a, b


def occurrences(stream: np.ndarray, lo: int, hi: int, run: np.ndarray) -> np.ndarray:
  """Offsets x in [lo, hi - len(run)] with stream[x : x + len(run)] == run."""
  starts = np.flatnonzero(stream[lo:hi - len(run) + 1] == run[0]) + lo
  return np.array([x for x in starts if np.array_equal(stream[x:x + len(run)], run)], np.int64)


def test_pairs_format_nsp_balance_and_contiguity(bert_data):
  _, train, _ = bert_data
  plain = unmasked(train)
  stream = np.asarray(train.tokens, np.int64)
  doc_of = lambda offset: int(np.searchsorted(train.doc_starts, offset, side='right')) - 1
  doc_end = lambda d: train.doc_starts[d + 1] - 1 if d + 1 < len(train.doc_starts) else len(stream) - 1
  labels, lengths, nl = [], [], plain.newline_id
  for i in np.linspace(0, len(plain) - 1, 300).astype(int):
    example = plain.make_example(plain[i], np.random.default_rng(int(i)))
    a, b = split_example(example)
    label = int(example['nsp_label'])
    labels.append(label)
    lengths.append(len(a) + len(b) + 3)
    (a0, a1), (b0, b1), again = plain.pair(plain[i], np.random.default_rng(int(i)))
    assert again == label
    np.testing.assert_array_equal(a, stream[a0:a1])
    np.testing.assert_array_equal(b, stream[b0:b1])
    if label == 0:
      d = doc_of(plain[i])  # every document here is non-empty: A is in the anchor's document
      found = occurrences(stream, int(train.doc_starts[d]), int(doc_end(d)), np.concatenate([a, b]))
      assert len(found) >= 1 and a0 in found  # A then B: one contiguous run of the document, eos not crossed
      if nl in np.concatenate([a, b])[:-1]:
        assert a[-1] == nl  # A ends on a line boundary whenever one is in range
    else:
      assert doc_of(a0) == doc_of(a1 - 1) and doc_of(b0) == doc_of(b1 - 1) and doc_of(a0) != doc_of(b0)
  balance = np.mean(labels)
  print(f'nsp: {balance:.3f} random over {len(labels)}; mean length {np.mean(lengths):.1f} of 64')
  assert abs(balance - 0.5) < 0.07
  assert max(lengths) <= 64 and np.mean(np.array(lengths) == 64) > 0.5 and min(lengths) < 40  # short_seq_prob


def test_example_arrays_and_mlm_slots(bert_data):
  _, train, _ = bert_data
  for i in range(0, 200, 7):
    example = train.make_example(train[i], np.random.default_rng(i))
    assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
        'inputs': ((64,), np.int32), 'positions': ((64,), np.int32), 'segment_ids': ((64,), np.int32),
        'token_types': ((64,), np.int32), 'mlm_positions': ((10,), np.int32), 'mlm_targets': ((10,), np.int32),
        'mlm_weights': ((10,), np.float32), 'nsp_label': ((), np.int32)}
    original = unmasked(train).make_example(train[i], np.random.default_rng(i))  # same draws up to the masking
    n = int(example['mlm_weights'].sum())
    assert 1 <= n <= 10 and np.all(example['mlm_weights'][:n] == 1) and np.all(example['mlm_weights'][n:] == 0)
    positions, targets = example['mlm_positions'][:n], example['mlm_targets'][:n]
    np.testing.assert_array_equal(targets, original['inputs'][positions])
    assert np.all(example['mlm_positions'][n:] == 0) and np.all(example['mlm_targets'][n:] == 0)
    assert np.all(example['segment_ids'][positions] == 1)
    other = np.setdiff1d(np.arange(64), positions)
    np.testing.assert_array_equal(example['inputs'][other], original['inputs'][other])
    for key in ('segment_ids', 'token_types', 'nsp_label'):
      np.testing.assert_array_equal(example[key], original[key])


def test_examples_are_functions_of_seed_and_anchor(bert_data):
  _, train, _ = bert_data
  first = train.make_example(train[5], np.random.default_rng(3))
  again = train.make_example(train[5], np.random.default_rng(3))
  other = train.make_example(train[5], np.random.default_rng(4))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not all(np.array_equal(first[k], other[k]) for k in first)
  assert train[-1] == (len(train) - 1) * 64 and len(train) == train.num_tokens // 64
  with pytest.raises(IndexError):
    train[len(train)]


def test_synthetic_stream_exact_layout():
  # doc 0: lines "10 11 nl" * 20 ; doc 1: 30 .. 89 ; doc 2: empty ; every document followed by eos.
  nl = 9
  docs = [[10, 11, nl] * 20, list(range(30, 90)), []]
  tokens = np.array([t for d in docs for t in d + [EOS]], np.int32)
  doc_starts = np.array([0, 61, 122])
  pairs = bert.SentencePairs(tokens, doc_starts, 16, vocab_size=100, mask_prob=0.0, max_predictions=4,
                             nsp_random_prob=0.5, short_seq_prob=0.0, newline_id=nl)
  assert len(pairs) == len(tokens) // 16
  labels = []
  for seed in range(200):
    for i in range(len(pairs)):
      example = pairs.make_example(pairs[i], np.random.default_rng(seed))
      a, b = split_example(example)
      labels.append(int(example['nsp_label']))
      assert len(a) + len(b) <= 13  # max_num_tokens = 16 - 3
      if i < 3:  # anchors in doc 0: A is whole lines
        assert a[0] == 10 and a[-1] == nl
      if labels[-1] == 0:
        assert (a[0] >= 30) == (b[0] >= 30) and len(a) + len(b) == 13  # a full chunk: no short targets here
      else:
        assert (a[0] >= 30) != (b[0] >= 30)  # the only other non-empty document
  assert 0.4 < np.mean(labels) < 0.6
  with pytest.raises(DataError, match='at least 2 non-empty documents'):
    bert.SentencePairs(tokens[:61], doc_starts[:1], 16, vocab_size=100, mask_prob=0.15, max_predictions=4,
                       nsp_random_prob=0.5, short_seq_prob=0.1)


def test_truncate_pair_like_bert():
  rng = np.random.default_rng(0)
  for _ in range(50):
    (a0, a1), (b0, b1) = bert.truncate_pair((0, 10), (100, 130), 20, rng)
    assert (a1 - a0, b1 - b0) == (10, 10) and 100 <= b0 and b1 <= 130 and (a0, a1) == (0, 10)
  results = [bert.truncate_pair((0, 5), (10, 17), 6, np.random.default_rng(s)) for s in range(100)]
  assert all(a1 - a0 == 3 and b1 - b0 == 3 for (a0, a1), (b0, b1) in results)  # the longer one first, ties: B
  fronts = {b0 for _, (b0, _) in results}
  assert fronts == {10, 11, 12, 13, 14}  # 4 tokens off B, from the front or the back at random
  assert bert.truncate_pair((0, 3), (5, 8), 6, rng) == ((0, 3), (5, 8))


def test_bad_settings_name_the_field(bert_data):
  _, train, _ = bert_data
  for changes, field in ((dict(mask_prob=1.5), 'data.mask_prob'), (dict(max_predictions=0),
                                                                    'data.max_predictions_per_seq'),
                         (dict(nsp_random_prob=-0.1), 'data.nsp_random_prob'),
                         (dict(short_seq_prob=2.0), 'data.short_seq_prob')):
    with pytest.raises(DataError, match=field):
      unmasked(train, **changes)
  with pytest.raises(DataError, match='seq_len'):
    bert.SentencePairs(train.tokens, train.doc_starts, 4, vocab_size=1024, mask_prob=0.15, max_predictions=4,
                       nsp_random_prob=0.5, short_seq_prob=0.1)


# --- pipeline --------------------------------------------------------------------------------------------------


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same(a: dict, b: dict):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_prepare_switches_on_model_type(bert_data):
  _, train, evals = bert_data
  assert isinstance(train, bert.SentencePairs) and isinstance(evals, bert.SentencePairs)
  assert train.word_starts is None and train.newline_id is not None and train.max_predictions == 10
  gpt = bert_config()
  gpt.model.type = 'gpt'
  _, rows, _ = pipeline.prepare(gpt)  # the same cached token stream, cut into packed rows
  assert isinstance(rows, packing.PackedSequences) and rows.tokens.paths == train.tokens.paths
  _, wwm, _ = pipeline.prepare(bert_config(whole_word_mask=True))
  assert wwm.word_starts is not None and wwm.word_starts.shape == (1024,)


def test_train_batches_deterministic_and_split_across_processes(bert_data):
  _, train, _ = bert_data
  config = bert_config()
  whole = take(pipeline.train_iterator(config, train, 0, 1), 3)
  again = take(pipeline.train_iterator(config, train, 0, 1), 3)
  for a, b in zip(whole, again):
    assert_same(a, b)
  assert whole[0]['inputs'].shape == (8, 64) and whole[0]['mlm_weights'].shape == (8, 10)
  assert whole[0]['nsp_label'].shape == (8,)
  parts = [take(pipeline.train_iterator(config, train, p, 2), 3) for p in range(2)]
  for step in range(3):
    halves = [parts[p][step] for p in range(2)]
    assert halves[0]['inputs'].shape == (4, 64)
    for key in whole[step]:
      interleaved = np.stack([halves[k % 2][key][k // 2] for k in range(8)])
      np.testing.assert_array_equal(interleaved, whole[step][key], err_msg=key)
    assert not {r.tobytes() for r in halves[0]['inputs']} & {r.tobytes() for r in halves[1]['inputs']}
  config.seed = 1
  other = next(pipeline.train_iterator(config, train, 0, 1))
  assert not np.array_equal(other['inputs'], whole[0]['inputs'])


def test_iterator_resumes_with_the_same_masks(bert_data):
  _, train, _ = bert_data
  config = bert_config()
  iterator = pipeline.train_iterator(config, train, 0, 1)
  take(iterator, 3)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 2)
  resumed = pipeline.train_iterator(config, train, 0, 1)
  resumed.set_state(state)
  for a, b in zip(expected, take(resumed, 2)):
    assert_same(a, b)


def test_every_epoch_draws_new_pairs_and_masks(bert_data):
  _, train, _ = bert_data
  n_docs = 4
  end = int(train.doc_starts[n_docs])  # the first documents only, so that two epochs are a few batches
  small = bert.SentencePairs(train.tokens[:end], train.doc_starts[:n_docs], 64, vocab_size=1024, mask_prob=0.15,
                             max_predictions=10, nsp_random_prob=0.5, short_seq_prob=0.1,
                             newline_id=train.newline_id)
  config = bert_config(shuffle=False)
  n = len(small)
  steps = 2 * n // config.batch_size + 1
  flat = [{k: v[r] for k, v in batch.items()} for batch in take(pipeline.train_iterator(config, small, 0, 1), steps)
          for r in range(config.batch_size)]
  same = sum(np.array_equal(flat[j]['inputs'], flat[j + n]['inputs']) for j in range(n))
  assert n >= 8 and same <= n // 10  # the same anchor, another epoch: other pairs and masks


def test_eval_batches_are_fixed_and_split(bert_data):
  _, train, evals = bert_data
  config = bert_config()
  first = pipeline.eval_batches(config, evals, 0, 1)
  second = pipeline.eval_batches(config, evals, 0, 1)
  assert len(first) == 3
  for a, b in zip(first, second):
    assert_same(a, b)
  halves = [pipeline.eval_batches(config, evals, p, 2) for p in range(2)]
  for key in first[0]:
    np.testing.assert_array_equal(halves[1][0][key], first[0][key][1::2], err_msg=key)
  config.data.shuffle = False  # train order = eval order over the same anchors; the seeds differ (seed vs seed + 1)
  train_first = next(pipeline.train_iterator(config, evals, 0, 1))
  assert not np.array_equal(train_first['inputs'], first[0]['inputs'])
