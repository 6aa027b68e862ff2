"""Tests of lm.data.span_corruption: T5's span lengths, noise masks, sentinels and examples (numpy, real text)."""
import inspect
import json
import textwrap
import types

import ml_collections
import numpy as np
import pytest

from lm.data import span_corruption as sc, tokenizer as tokenizer_lib
from lm.errors import DataError

EOS = tokenizer_lib.EOS_ID
NUM_SENTINELS = 32
VOCAB = tokenizer_lib.NUM_SPECIAL_IDS + 256 + NUM_SENTINELS  # ids 7 + byte, then the sentinels


@pytest.fixture(scope='module')
def stream() -> np.ndarray:
  """Real text as a token stream: the bytes of three standard-library modules' source as ids 7 + byte, each
  document followed by eos."""
  docs = [np.frombuffer(inspect.getsource(m).encode(), np.uint8).astype(np.int32) + tokenizer_lib.NUM_SPECIAL_IDS
          for m in (json.decoder, textwrap, inspect)]
  return np.concatenate([np.append(d, EOS) for d in docs]).astype(np.int32)


def t5_unique_sentinel(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> np.ndarray:
  """A line-by-line numpy port of T5's noise_span_to_unique_sentinel, as the reference."""
  prev_is_noise = np.concatenate([[False], mask[:-1]])
  first = mask & ~prev_is_noise
  subsequent = mask & prev_is_noise
  sentinel = vocab_size - 1 + 1 - np.cumsum(first)
  return np.where(first, sentinel, tokens)[~subsequent]


def test_random_spans_helper_matches_t5():
  assert sc.random_spans_helper(512) == (568, 114)
  assert sc.random_spans_helper(512, noise_density=0.5) == (766, 512)
  for inputs_length in (64, 128, 512, 1000):
    raw, targets = sc.random_spans_helper(inputs_length)
    mask = sc.noise_mask(raw, 0.15, 3.0, np.random.default_rng(inputs_length))
    inputs_out, targets_out = sc.corrupt(np.arange(raw) + 7, mask, VOCAB, 1000, EOS)
    assert (len(inputs_out), len(targets_out)) == (inputs_length, targets), inputs_length
    # One more raw token would not fit.
    assert sc._corrupted_lengths(raw + 1, 0.15, 3.0)[0] > inputs_length


def test_noise_mask_counts_and_spread():
  rng = np.random.default_rng(0)
  length, draws = 100, 2000
  masks = np.stack([sc.noise_mask(length, 0.15, 3.0, rng) for _ in range(draws)])
  assert (masks.sum(1) == 15).all()
  span_lengths = []
  for m in masks:
    assert not m[0] and m[-1]  # non-noise first, noise last
    edges = np.flatnonzero(np.diff(np.concatenate([[0], m.astype(int), [0]])))
    span_lengths += list(edges[1::2] - edges[::2])
  assert len(span_lengths) == 5 * draws  # round(15 / 3) spans every time
  assert np.mean(span_lengths) == pytest.approx(3.0)
  assert len(set(span_lengths)) > 5  # lengths vary, not all 3
  assert np.abs(masks[:, 10:-10].mean(0) - 0.15).max() < 0.05  # noise spread over the positions
  assert sc.noise_mask(1, 0.15, 3.0, rng).tolist() == [False]
  assert not sc.noise_mask(10, 0.0, 3.0, rng).any()


@pytest.mark.parametrize('inputs_length', [64, 128])
def test_corrupt_reconstructs_real_text(stream, inputs_length):
  raw_length, targets_length = sc.random_spans_helper(inputs_length)
  rng = np.random.default_rng(inputs_length)
  for _ in range(100):
    start = int(rng.integers(len(stream) - raw_length))
    tokens = stream[start:start + raw_length]
    mask = sc.noise_mask(raw_length, 0.15, 3.0, rng)
    inputs, targets = sc.corrupt(tokens, mask, VOCAB, NUM_SENTINELS, EOS)
    assert (len(inputs), len(targets)) == (inputs_length, targets_length)
    assert inputs.dtype == targets.dtype == np.int32
    np.testing.assert_array_equal(inputs[:-1], t5_unique_sentinel(tokens, mask, VOCAB))
    np.testing.assert_array_equal(targets[:-1], t5_unique_sentinel(tokens, ~mask, VOCAB))
    np.testing.assert_array_equal(sc.reconstruct(inputs, targets, VOCAB, NUM_SENTINELS), tokens)


def test_corrupt_example_and_errors():
  tokens = np.arange(10, 20)
  mask = np.array([0, 1, 1, 0, 0, 1, 0, 0, 1, 1], bool)
  inputs, targets = sc.corrupt(tokens, mask, 100, 5, EOS)
  assert inputs.tolist() == [10, 99, 13, 14, 98, 16, 17, 97, EOS]
  assert targets.tolist() == [99, 11, 12, 98, 15, 97, 18, 19, EOS]
  np.testing.assert_array_equal(sc.reconstruct(np.append(inputs, [0, 0]), targets, 100, 5), tokens)
  with pytest.raises(ValueError, match='3 noise spans but there are only 2 sentinels'):
    sc.corrupt(tokens, mask, 100, 2, EOS)
  with pytest.raises(ValueError, match='not in the targets'):
    sc.reconstruct(inputs, np.array([99, 11, 12, EOS]), 100, 5)


def test_make_example(stream, tmp_path):
  path = tmp_path / 'tokens.bin'
  stream.astype(np.uint16).tofile(path)
  tokens = np.memmap(path, np.uint16, mode='r')
  examples = sc.SpanCorruptionExamples(tokens, 64, vocab_size=VOCAB, num_sentinels=NUM_SENTINELS)
  raw_length, targets_length = sc.random_spans_helper(64)
  assert len(examples) == len(stream) // raw_length and examples.num_tokens == len(stream)
  assert examples[3] == 3 * raw_length and examples[-1] == (len(examples) - 1) * raw_length
  with pytest.raises(IndexError):
    examples[len(examples)]
  ex = examples.make_example(examples[3], np.random.default_rng(7))
  shapes = {'encoder_inputs': (64, np.int32), 'encoder_segment_ids': (64, np.int32),
            'targets': (targets_length, np.int32), 'inputs': (targets_length, np.int32),
            'weights': (targets_length, np.float32), 'segment_ids': (targets_length, np.int32)}
  assert {k: (v.shape[0], v.dtype) for k, v in ex.items()} == shapes
  assert ex['encoder_segment_ids'].all() and ex['segment_ids'].all() and ex['weights'].all()
  assert ex['encoder_inputs'][-1] == ex['targets'][-1] == EOS
  np.testing.assert_array_equal(ex['inputs'], np.concatenate([[0], ex['targets'][:-1]]))
  np.testing.assert_array_equal(sc.reconstruct(ex['encoder_inputs'], ex['targets'], VOCAB, NUM_SENTINELS),
                                stream[3 * raw_length:4 * raw_length])
  again = examples.make_example(examples[3], np.random.default_rng(7))
  assert all(np.array_equal(ex[k], again[k]) for k in ex)
  other = examples.make_example(examples[3], np.random.default_rng(8))
  assert not np.array_equal(ex['encoder_inputs'], other['encoder_inputs'])


def test_original_targets_are_the_uncorrupted_chunk(stream):
  """span_targets='original': the same corrupted inputs, and the decoder reproduces the whole raw chunk."""
  examples = {mode: sc.SpanCorruptionExamples(stream, 64, vocab_size=VOCAB, num_sentinels=NUM_SENTINELS,
                                              span_targets=mode) for mode in sc.SPAN_TARGETS}
  raw_length = sc.random_spans_helper(64)[0]
  assert examples['original'].targets_length == raw_length + 1 == sc.decoder_length(64, span_targets='original')
  sentinels, original = (examples[m].make_example(examples[m][2], np.random.default_rng(3)) for m in sc.SPAN_TARGETS)
  np.testing.assert_array_equal(original['encoder_inputs'], sentinels['encoder_inputs'])
  np.testing.assert_array_equal(original['targets'], np.append(stream[2 * raw_length:3 * raw_length], EOS))
  np.testing.assert_array_equal(original['inputs'], np.concatenate([[0], original['targets'][:-1]]))
  assert original['weights'].all() and original['segment_ids'].all()
  with pytest.raises(DataError, match='^data.span_targets:'):
    sc.SpanCorruptionExamples(stream, 64, vocab_size=VOCAB, num_sentinels=NUM_SENTINELS, span_targets='spans')


def test_make_example_pads_with_density_half(stream):
  examples = sc.SpanCorruptionExamples(stream, 20, vocab_size=VOCAB, num_sentinels=NUM_SENTINELS,
                                       noise_density=0.5, mean_noise_span_length=1.0)
  assert (examples.raw_tokens_length, examples.targets_length) == (18, 20)  # T5's: one target position is padding
  ex = examples.make_example(examples[0], np.random.default_rng(0))
  assert ex['weights'].tolist() == [1.0] * 19 + [0.0] and ex['segment_ids'][-1] == 0 and ex['targets'][-1] == 0
  assert ex['encoder_segment_ids'].sum() == 20 - 1 and ex['encoder_inputs'][-1] == 0
  np.testing.assert_array_equal(sc.reconstruct(ex['encoder_inputs'], ex['targets'], VOCAB, NUM_SENTINELS),
                                stream[:18])


def test_from_config(stream):
  config = ml_collections.ConfigDict({'seq_len': 128, 'model': {'vocab_size': VOCAB}, 'data': {
      'noise_density': 0.15, 'mean_noise_span_length': 3.0, 'num_sentinels': NUM_SENTINELS}})
  examples = sc.SpanCorruptionExamples.from_config(config, types.SimpleNamespace(eos_id=EOS, vocab_size=VOCAB), stream)
  assert (examples.inputs_length, examples.raw_tokens_length, examples.targets_length) == (128, 141, 29)
  assert examples.make_example(examples[1], np.random.default_rng(0))['encoder_inputs'].shape == (128,)


@pytest.mark.parametrize('field, settings', [
    ('data.noise_density', dict(noise_density=0.0)),
    ('data.noise_density', dict(noise_density=1.0)),
    ('data.noise_density', dict(noise_density=0.9, mean_noise_span_length=1.0)),
    ('data.mean_noise_span_length', dict(mean_noise_span_length=0.5)),
    ('data.num_sentinels', dict(num_sentinels=0)),
    ('data.num_sentinels', dict(num_sentinels=4)),  # 128-token inputs have 7 spans
    ('data.num_sentinels', dict(num_sentinels=VOCAB - 7)),
    ('seq_len', dict(inputs_length=2)),
])
def test_settings_errors(stream, field, settings):
  kwargs = dict(inputs_length=128, vocab_size=VOCAB, num_sentinels=NUM_SENTINELS)
  kwargs.update(settings)
  with pytest.raises(DataError) as e:
    sc.SpanCorruptionExamples(stream, **kwargs)
  message = str(e.value)
  assert message.startswith(f'{field}:') and '\n' not in message, message
