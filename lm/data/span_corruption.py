"""T5 span-corruption pretraining examples (pure numpy), as t5/data/preprocessors.py's `span_corruption`.

The token stream is cut into contiguous chunks of R raw tokens (R from `random_spans_helper`, so that the corrupted
inputs come out exactly `inputs_length` long; a chunk may cross document boundaries, as T5's reduce_concat_tokens +
split_tokens do). In each chunk about `noise_density` of the tokens, in spans of mean length
`mean_noise_span_length`, are noise (`noise_mask`); `corrupt` replaces the k-th noise span in the inputs by the
sentinel id vocab_size - 1 - k and makes the targets each sentinel followed by the tokens of its span:

  tokens   The  quick brown fox jumps over the lazy dog
  inputs   The  <s0>        fox jumps <s1>     lazy dog? ... </s>
  targets  <s0> quick brown <s1> over the </s>

With span_targets='original' (the T5 paper's "reconstruct the original text", BART-like) the inputs are the same and
the targets are the whole uncorrupted chunk, then eos: the decoder copies what it reads and fills in the spans.

An example is a pure function of (anchor, rng), so grain's `random_map` gives every epoch fresh masks that resume
reproduces exactly:

  examples = SpanCorruptionExamples.from_config(config, tokenizer, tokens)
  example = examples.make_example(examples[i], np.random.default_rng(seed))
"""
import ml_collections
import numpy as np

from lm.data import anchors, tokenizer as tokenizer_lib
from lm.errors import DataError


def _span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(num_noise_tokens, num_noise_spans) of a `length`-token mask, as random_spans_noise_mask computes them.

  num_noise_tokens = round(length * noise_density) clipped to [1, length - 1], num_noise_spans =
  round(num_noise_tokens / mean_noise_span_length), at least 1 (rounding half to even, as tf.round and np.round do).
  A length below 2 is counted as 2, as T5 does.
  """
  length = max(length, 2)
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, num_spans


def _corrupted_lengths(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(inputs, targets) lengths, eos included, after corrupting `tokens_length` raw tokens: the inputs keep the
  non-noise tokens plus one sentinel per span, the targets hold the noise tokens plus one sentinel per span."""
  num_noise, num_spans = _span_counts(tokens_length, noise_density, mean_noise_span_length)
  return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def random_spans_helper(inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
                        ) -> tuple[int, int]:
  """(raw_tokens_length, targets_length): how many raw tokens to corrupt so that the inputs come out exactly
  `inputs_length` long, and the length the targets then have; both lengths include the eos each sequence gets.

  T5's random_spans_helper with one sentinel per span in inputs and targets: the largest raw length whose inputs
  fit (inputs_length=512 -> (568, 114) at the defaults), and with noise_density 0.5 one raw token less when the
  targets would be longer than the inputs. Unlike T5's, the counts are clipped as `noise_mask` clips them (at least
  one noise token, one non-noise token and one span), which only matters for tiny lengths, so the returned lengths
  are never shorter than what `corrupt` produces. (With noise_density 0.5 the targets length is T5's, the inputs
  length, which may leave one target and one input position as padding.)
  """
  tokens_length = inputs_length - 1
  while _corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
    tokens_length += 1
  targets_length = _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[1]
  if noise_density == 0.5 and targets_length > inputs_length:
    tokens_length -= 1
    targets_length = max(targets_length - 1,
                         _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[1])
  return tokens_length, targets_length


SPAN_TARGETS = ('sentinels', 'original')  # data.span_targets


def decoder_length(inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                   span_targets: str = 'sentinels') -> int:
  """Decoder tokens of an example with `inputs_length` corrupted inputs: random_spans_helper's targets length, or
  with span_targets 'original' the raw chunk and its eos."""
  raw_tokens_length, targets_length = random_spans_helper(inputs_length, noise_density, mean_noise_span_length)
  return raw_tokens_length + 1 if span_targets == 'original' else targets_length


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths (all >= 1, summing to num_items) of a uniformly random split of num_items items into num_segments
  non-empty runs: num_segments - 1 distinct cut points drawn from the num_items - 1 gaps, as T5's shuffle does."""
  cuts = np.sort(rng.choice(num_items - 1, size=num_segments - 1, replace=False)) + 1
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def noise_mask(length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
               ) -> np.ndarray:
  """bool [length]: T5's random_spans_noise_mask, True on the noise tokens.

  The counts are fixed by the length (see `_span_counts`); the noise tokens and the non-noise tokens are each split
  at random into num_noise_spans non-empty runs, and the runs alternate non-noise, noise, non-noise, ..., so the
  mask starts with non-noise and ends with noise. All such masks are equally likely. noise_density 0 gives no noise;
  a length below 2 is drawn as length 2 and cut. ValueError when there are fewer non-noise tokens than spans.
  """
  if noise_density == 0:
    return np.zeros(length, bool)
  num_noise, num_spans = _span_counts(length, noise_density, mean_noise_span_length)
  full = max(length, 2)
  if full - num_noise < num_spans:
    raise ValueError(f'noise_density {noise_density} with mean_noise_span_length {mean_noise_span_length} leaves '
                     f'{full - num_noise} non-noise tokens of {full} for {num_spans} spans')
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)
  nonnoise_lengths = _random_segmentation(full - num_noise, num_spans, rng)
  run_lengths = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), run_lengths)[:length]


def corrupt(tokens: np.ndarray, mask: np.ndarray, vocab_size: int, num_sentinels: int, eos_id: int
            ) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) int32: `tokens` with each noise span (a run of True in `mask`) replaced by one sentinel, and
  each sentinel followed by the tokens of its span; eos appended to both.

  The k-th noise span gets the sentinel vocab_size - 1 - k (T5's sentinels count down from the top of the
  vocabulary). For masks from `noise_mask` (non-noise first, noise last) these are exactly T5's
  noise_span_to_unique_sentinel (inputs) and nonnoise_span_to_unique_sentinel (targets). The tokens must be below
  vocab_size - num_sentinels; ValueError when the mask has more spans than num_sentinels.
  """
  tokens = np.asarray(tokens, np.int32)
  mask = np.asarray(mask, bool)
  starts = mask & ~np.concatenate([[False], mask[:-1]])  # the first token of each noise span
  num_spans = int(starts.sum())
  if num_spans > num_sentinels:
    raise ValueError(f'the mask has {num_spans} noise spans but there are only {num_sentinels} sentinels')
  sentinels = (vocab_size - 1 - np.arange(num_spans)).astype(np.int32)
  inputs = tokens.copy()
  inputs[starts] = sentinels
  inputs = inputs[~mask | starts]
  targets = np.insert(tokens[mask], np.flatnonzero(starts[mask]), sentinels)
  eos = np.asarray([eos_id], np.int32)
  return np.concatenate([inputs, eos]), np.concatenate([targets, eos]).astype(np.int32)


def _strip_eos(sequence: np.ndarray, eos_id: int, name: str) -> np.ndarray:
  """The sequence without its trailing padding (id 0) and the eos before it."""
  sequence = np.asarray(sequence)
  real = np.flatnonzero(sequence != tokenizer_lib.PAD_ID)
  end = int(real[-1]) if len(real) else -1
  if end < 0 or sequence[end] != eos_id:
    raise ValueError(f'{name} do not end with eos {eos_id} (before any padding)')
  return sequence[:end]


def reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int, num_sentinels: int, *,
                eos_id: int = tokenizer_lib.EOS_ID) -> np.ndarray:
  """The original tokens of a corrupted pair (`corrupt`'s output, or an example's encoder_inputs and targets, which
  may be padded with 0 after their eos): every sentinel of the inputs replaced by the span after it in the targets.

  Ids >= vocab_size - num_sentinels are sentinels; the tokens themselves never are, nor the pad id 0. ValueError
  when the pair does not fit together (a sentinel missing on either side, targets not starting with a sentinel).
  """
  inputs, targets = _strip_eos(inputs, eos_id, 'inputs'), _strip_eos(targets, eos_id, 'targets')
  first_sentinel = vocab_size - num_sentinels
  marks = np.flatnonzero(targets >= first_sentinel)
  if len(targets) and (not len(marks) or marks[0] != 0):
    raise ValueError('targets do not start with a sentinel')
  spans = {int(targets[m]): targets[m + 1:end] for m, end in zip(marks, np.append(marks[1:], len(targets)))}
  if len(spans) != len(marks):
    raise ValueError('a sentinel occurs twice in the targets')
  pieces, begin = [], 0
  for s in np.flatnonzero(inputs >= first_sentinel):
    if int(inputs[s]) not in spans:
      raise ValueError(f'sentinel {int(inputs[s])} of the inputs is not in the targets')
    pieces += [inputs[begin:s], spans.pop(int(inputs[s]))]
    begin = s + 1
  if spans:
    raise ValueError(f'sentinels {sorted(spans)} of the targets are not in the inputs')
  return np.concatenate(pieces + [inputs[begin:]]).astype(np.int32)


class SpanCorruptionExamples(anchors.StreamAnchors):
  """Random-access anchors over a token stream, and `make_example(anchor, rng)` that turns one into a T5 example.

  `examples[i]` is the stream offset i * R, R = raw_tokens_length from `random_spans_helper`: example i corrupts the
  raw tokens [i*R, (i+1)*R) (contiguous, across document boundaries; an epoch covers the corpus once, without the
  last len(tokens) % R tokens). `make_example` returns numpy arrays (I = inputs_length, T = targets_length):
  - `encoder_inputs` int32 [I]: the tokens with each noise span replaced by its sentinel, then eos.
  - `encoder_segment_ids` int32 [I]: 1 on tokens, 0 on padding (all 1: the inputs come out exactly full, except
    with noise_density 0.5 where T5's length adjustment may leave one pad).
  - `targets` int32 [T]: each sentinel followed by its span's tokens, then eos, then padding 0 (none in practice);
    with span_targets 'original' the R raw tokens, then eos (T = R + 1).
  - `inputs` int32 [T]: the decoder inputs, [0] + targets[:-1] (T5's start id 0 = pad).
  - `weights` float32 [T]: 1 on the real targets (eos included), 0 on padding.
  - `segment_ids` int32 [T]: 1 on the real decoder positions, 0 on padding.
  The stream's ids must stay below vocab_size - num_sentinels, where the sentinels start; this is not checked per
  example, so the tokenizer must leave the top num_sentinels ids of the model's vocabulary unused.
  """

  def __init__(self, tokens: np.ndarray, inputs_length: int, *, vocab_size: int, num_sentinels: int,
               noise_density: float = 0.15, mean_noise_span_length: float = 3.0, span_targets: str = 'sentinels',
               eos_id: int = tokenizer_lib.EOS_ID):
    """`tokens`: 1-D ids supporting slicing (an array, a memmap, a store's `ShardedTokens`)."""
    _check_settings(inputs_length, vocab_size, num_sentinels, noise_density, mean_noise_span_length)
    if span_targets not in SPAN_TARGETS:
      raise DataError(f'data.span_targets: {span_targets!r} is not one of {SPAN_TARGETS}')
    self.tokens = tokens
    self.inputs_length = inputs_length
    self.raw_tokens_length = random_spans_helper(inputs_length, noise_density, mean_noise_span_length)[0]
    self.targets_length = decoder_length(inputs_length, noise_density, mean_noise_span_length, span_targets)
    self.span_targets = span_targets
    self.vocab_size = vocab_size
    self.num_sentinels = num_sentinels
    self.noise_density = noise_density
    self.mean_noise_span_length = mean_noise_span_length
    self.eos_id = eos_id
    _check_spans(self.raw_tokens_length, inputs_length, num_sentinels, noise_density, mean_noise_span_length)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer, tokens: np.ndarray
                  ) -> 'SpanCorruptionExamples':
    """Examples with inputs of config.seq_len tokens and the data.* span-corruption settings over one split's
    token stream; sentinels at the top of the tokenizer's vocabulary (T5's <extra_id_k> = vocab_size - 1 - k)."""
    data = config.data
    return cls(tokens, config.seq_len, vocab_size=tokenizer.vocab_size, num_sentinels=data.num_sentinels,
               noise_density=data.noise_density, mean_noise_span_length=data.mean_noise_span_length,
               span_targets=data.get('span_targets', 'sentinels'), eos_id=tokenizer.eos_id)

  @property
  def stride(self) -> int:
    return self.raw_tokens_length

  def make_example(self, anchor: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The span-corruption example (see the class docstring) of the R raw tokens at stream offset `anchor`."""
    raw = np.asarray(self.tokens[anchor:anchor + self.raw_tokens_length], np.int32)
    mask = noise_mask(len(raw), self.noise_density, self.mean_noise_span_length, rng)
    inputs, targets = corrupt(raw, mask, self.vocab_size, self.num_sentinels, self.eos_id)
    if self.span_targets == 'original':
      targets = np.append(raw, np.int32(self.eos_id))
    if len(inputs) > self.inputs_length or len(targets) > self.targets_length:
      raise RuntimeError(f'span corruption of {len(raw)} tokens gave {len(inputs)} inputs and {len(targets)} '
                         f'targets, over the lengths {self.inputs_length} and {self.targets_length} (a bug)')
    encoder_inputs = np.zeros(self.inputs_length, np.int32)
    encoder_inputs[:len(inputs)] = inputs
    padded_targets = np.zeros(self.targets_length, np.int32)
    padded_targets[:len(targets)] = targets
    real = np.arange(self.targets_length) < len(targets)
    return {
        'encoder_inputs': encoder_inputs,
        'encoder_segment_ids': (np.arange(self.inputs_length) < len(inputs)).astype(np.int32),
        'targets': padded_targets,
        'inputs': np.concatenate([[0], padded_targets[:-1]]).astype(np.int32),
        'weights': real.astype(np.float32),
        'segment_ids': real.astype(np.int32),
    }


def _check_settings(inputs_length: int, vocab_size: int, num_sentinels: int, noise_density: float,
                    mean_noise_span_length: float) -> None:
  """DataError naming the field when a span-corruption setting is out of range."""
  if not 0 < noise_density < 1:
    raise DataError(f'data.noise_density: must be in (0, 1), got {noise_density}')
  if not mean_noise_span_length >= 1:
    raise DataError(f'data.mean_noise_span_length: must be >= 1, got {mean_noise_span_length}')
  if inputs_length < 3:
    raise DataError(f'seq_len: span corruption needs at least 3 input tokens (a token, a sentinel, eos), got '
                    f'{inputs_length}; raise --config.seq_len')
  if num_sentinels < 1:
    raise DataError(f'data.num_sentinels: must be >= 1, got {num_sentinels}')
  if vocab_size - num_sentinels <= tokenizer_lib.NUM_SPECIAL_IDS:
    raise DataError(f'data.num_sentinels: {num_sentinels} sentinels leave no ordinary pieces of model.vocab_size '
                    f'{vocab_size} after the {tokenizer_lib.NUM_SPECIAL_IDS} special ids')


def _check_spans(raw_tokens_length: int, inputs_length: int, num_sentinels: int, noise_density: float,
                 mean_noise_span_length: float) -> None:
  """DataError naming the field when a chunk's noise spans cannot be drawn or outnumber the sentinels."""
  num_noise, num_spans = _span_counts(raw_tokens_length, noise_density, mean_noise_span_length)
  if raw_tokens_length - num_noise < num_spans:
    raise DataError(f'data.noise_density: {noise_density} with data.mean_noise_span_length '
                    f'{mean_noise_span_length} leaves {raw_tokens_length - num_noise} non-noise tokens for '
                    f'{num_spans} noise spans; lower data.noise_density or raise data.mean_noise_span_length')
  if num_spans > num_sentinels:
    raise DataError(f'data.num_sentinels: {inputs_length}-token inputs have {num_spans} noise spans but there are '
                    f'{num_sentinels} sentinels; raise data.num_sentinels to at least {num_spans}')
