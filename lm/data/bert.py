"""BERT pretraining examples: sentence pairs for next-sentence prediction, with masked-LM targets (pure numpy).

Built like Google BERT's create_pretraining_data.py, but at random access over the cached token stream (every
document's tokens followed by eos) instead of a pre-generated file, so an example is a pure function of
(anchor, rng) and grain's `random_map` gives every epoch fresh pairs and masks that resume reproduces exactly:

  pairs = SentencePairs.from_config(config, tokenizer, tokens, doc_starts)
  example = pairs.make_example(pairs[i], np.random.default_rng(seed))

Lines play the part of BERT's sentences: segment boundaries snap to just after a newline token when one is in
reach, so segments are whole lines where the text allows.
"""
import ml_collections
import numpy as np

from lm.data import anchors, tokenizer as tokenizer_lib
from lm.errors import DataError

_SPECIAL = tokenizer_lib.NUM_SPECIAL_IDS  # ids below this are never masked, nor kept inside a segment
_MASK_FRACTION, _RANDOM_FRACTION = 0.8, 0.1  # of the chosen positions: [MASK], random token; the rest unchanged


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, *, mask_prob: float, max_predictions: int,
                vocab_size: int, word_starts: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BERT's masked-LM corruption of one sequence; returns (inputs, positions, targets).

  Candidates are the positions holding ordinary pieces (id >= 7: no pad, unk, bos, eos, [MASK], [CLS], [SEP]).
  round(mask_prob * #candidates) of them are chosen (at least one if mask_prob > 0 and there is a candidate), at
  most `max_predictions`. With `word_starts` (bool [vocab], see `Tokenizer.word_starts`) a candidate is grouped
  with the following candidates that do not start a word, and whole groups are chosen (a word that would overshoot
  the count is skipped, as in BERT). Each chosen position becomes [MASK] with probability 0.8, a random piece from
  [7, vocab_size) with 0.1, and stays as it is with 0.1. `positions` (ascending) and `targets` (the original
  tokens there) have one entry per chosen position; `inputs` is a corrupted copy of `tokens`.
  """
  tokens = np.asarray(tokens)
  candidates = np.flatnonzero(tokens >= _SPECIAL)
  num_to_predict = 0
  if len(candidates) and mask_prob > 0:
    num_to_predict = min(max_predictions, max(1, int(round(mask_prob * len(candidates)))))
  if word_starts is None:
    chosen = rng.permutation(candidates)[:num_to_predict]
  else:
    # A word starts at a word-start piece or after a non-candidate (a special token ends any word).
    starts = np.asarray(word_starts)[tokens[candidates]] | (np.diff(candidates, prepend=-2) != 1)
    words = np.split(candidates, np.flatnonzero(starts)[1:])
    picked, count = [], 0
    for w in rng.permutation(len(words)):
      if count >= num_to_predict:
        break
      if count + len(words[w]) <= num_to_predict:
        picked.append(words[w])
        count += len(words[w])
    chosen = np.concatenate(picked) if picked else candidates[:0]
  positions = np.sort(chosen)
  targets = tokens[positions]
  inputs = tokens.copy()
  u = rng.random(len(positions))
  inputs[positions[u < _MASK_FRACTION]] = tokenizer_lib.MASK_ID
  replaced = positions[(u >= _MASK_FRACTION) & (u < _MASK_FRACTION + _RANDOM_FRACTION)]
  inputs[replaced] = rng.integers(_SPECIAL, vocab_size, size=len(replaced))
  return inputs, positions, targets


def truncate_pair(a: tuple[int, int], b: tuple[int, int], max_num_tokens: int, rng: np.random.Generator
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
  """BERT's truncate_seq_pair on [start, end) spans: drop one token at a time from the longer segment, from its
  front or its back at random, until the two fit in max_num_tokens."""
  (a0, a1), (b0, b1) = a, b
  while (a1 - a0) + (b1 - b0) > max_num_tokens:
    front = rng.random() < 0.5
    if a1 - a0 > b1 - b0:
      a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
    else:
      b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
  return (a0, a1), (b0, b1)


class SentencePairs(anchors.StreamAnchors):
  """Random-access anchors over a token stream, and `make_example(anchor, rng)` that turns one into a BERT example.

  `pairs[i]` is the stream offset i * seq_len (one anchor per seq_len tokens, so an epoch covers the corpus about
  once). `make_example` returns numpy arrays (L = seq_len, P = max_predictions):
  - `inputs` int32 [L]: [CLS] A [SEP] B [SEP] then pad, after masking.
  - `positions` int32 [L]: 0..L-1.
  - `segment_ids` int32 [L]: 1 on real tokens, 0 on padding (the encoder's attention mask).
  - `token_types` int32 [L]: 0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding.
  - `mlm_positions`, `mlm_targets` int32 [P], `mlm_weights` float32 [P]: the masked positions (ascending), their
    original tokens, and 1 for each real prediction (0 on the padding slots, whose position and target are 0).
  - `nsp_label` int32 []: 0 if B is the text that follows A in its document, 1 if B comes from another document.
  """

  def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int, *, vocab_size: int,
               mask_prob: float, max_predictions: int, nsp_random_prob: float, short_seq_prob: float,
               newline_id: int | None = None, word_starts: np.ndarray | None = None):
    """`tokens`: 1-D ids (may be a memmap), each document followed by eos; `doc_starts`: sorted document offsets.

    `newline_id` (None = no line snapping) and `word_starts` (None = mask single pieces) come from the tokenizer.
    """
    _check_settings(seq_len, vocab_size, mask_prob, max_predictions, nsp_random_prob, short_seq_prob)
    self.tokens = tokens
    self.doc_starts = np.asarray(doc_starts, np.int64)
    if len(tokens) and (not len(self.doc_starts) or self.doc_starts[0] != 0):
      raise ValueError('doc_starts must begin with 0 (the first document starts the stream)')
    # Document d's text is tokens[doc_starts[d] : doc_ends[d]]; doc_ends[d] holds its eos.
    self.doc_ends = np.append(self.doc_starts[1:], len(tokens)) - 1
    self._nonempty = np.flatnonzero(self.doc_ends > self.doc_starts)
    if len(self._nonempty) < 2:
      raise DataError(f'data: BERT sentence pairs need at least 2 non-empty documents per split, found '
                      f'{len(self._nonempty)}; give the split more documents (data.eval_fraction, data.max_documents)')
    self.seq_len = seq_len
    self.max_num_tokens = seq_len - 3  # room for [CLS], [SEP], [SEP]
    self.vocab_size = vocab_size
    self.mask_prob = mask_prob
    self.max_predictions = max_predictions
    self.nsp_random_prob = nsp_random_prob
    self.short_seq_prob = short_seq_prob
    self.newline_id = newline_id
    self.word_starts = None if word_starts is None else np.asarray(word_starts, bool)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer, tokens: np.ndarray,
                  doc_starts: np.ndarray) -> 'SentencePairs':
    """Sentence pairs with config.seq_len and the data.* BERT settings, over one split's cached token stream."""
    data = config.data
    if (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) != (tokenizer_lib.CLS_ID, tokenizer_lib.SEP_ID,
                                                                    tokenizer_lib.MASK_ID):
      raise DataError('data: BERT pretraining examples need lm\'s tokenizer layout ([MASK] 4, [CLS] 5, [SEP] 6); '
                      'continued MLM pretraining of a converted Hugging Face checkpoint is not supported yet')
    return cls(tokens, doc_starts, config.seq_len, vocab_size=tokenizer.vocab_size, mask_prob=data.mask_prob,
               max_predictions=data.max_predictions_per_seq, nsp_random_prob=data.nsp_random_prob,
               short_seq_prob=data.short_seq_prob, newline_id=tokenizer.newline_id,
               word_starts=tokenizer.word_starts() if data.whole_word_mask else None)

  @property
  def stride(self) -> int:
    return self.seq_len

  def _document(self, offset: int) -> int:
    """The document holding stream offset `offset`, or the next non-empty one if that document is empty."""
    d = int(np.searchsorted(self.doc_starts, offset, side='right')) - 1
    k = int(np.searchsorted(self._nonempty, d))
    return int(self._nonempty[k % len(self._nonempty)])

  def _line_start(self, pos: int, lo: int, hi: int, doc: int) -> int:
    """The line start in [lo, hi] nearest to pos (after a newline token, or the document start), else pos."""
    if lo > hi:
      return pos
    doc_start = int(self.doc_starts[doc])
    starts = np.asarray([doc_start] if lo <= doc_start <= hi else [], np.int64)
    if self.newline_id is not None:
      first = max(lo - 1, doc_start)
      window = np.asarray(self.tokens[first:hi])  # token p-1 for every p in [lo, hi] inside the document
      starts = np.append(starts, np.flatnonzero(window == self.newline_id) + first + 1)
    if not len(starts):
      return pos
    return int(starts[np.argmin(np.abs(starts - pos))])

  def _random_segment(self, exclude: int, length: int, rng: np.random.Generator) -> tuple[int, int]:
    """A span of about `length` tokens from a random document other than `exclude`: from a random line start to
    the end of the line that reaches `length` (at most max_num_tokens), as BERT takes whole random sentences."""
    k = int(rng.integers(len(self._nonempty) - 1))
    k += k >= int(np.searchsorted(self._nonempty, exclude))
    doc = int(self._nonempty[k])
    s, e = int(self.doc_starts[doc]), int(self.doc_ends[doc])
    start = int(rng.integers(s, e))
    reach = self.max_num_tokens // 2
    start = self._line_start(start, max(s, start - reach), min(e - 1, start + reach), doc)
    end = min(e, start + length)
    limit = min(e, start + self.max_num_tokens)
    return start, self._line_start(end, end, limit, doc)  # the first line end at or after `end`, if in reach

  def pair(self, anchor: int, rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int], int]:
    """Segments A and B as [start, end) offsets into the stream, and the NSP label (0: B follows A; 1: random B).

    A starts at the anchor's line (earlier if the document's rest is shorter than the target length) and takes a
    random share of a chunk of the target length (max_num_tokens, or with short_seq_prob a random length >= 2);
    B is the rest of the chunk with probability 1 - nsp_random_prob, else a random segment of another document,
    as it is when A's chunk has nothing after A. The pair is truncated to max_num_tokens as in BERT.
    """
    target = self.max_num_tokens
    if rng.random() < self.short_seq_prob:
      target = int(rng.integers(2, self.max_num_tokens + 1))
    doc = self._document(anchor)
    s, e = int(self.doc_starts[doc]), int(self.doc_ends[doc])
    start = max(s, min(anchor, e - target))
    reach = target // 2
    start = self._line_start(start, max(s, start - reach), max(start, min(start + reach, e - target)), doc)
    end = min(e, start + target)
    if end - start >= 2:
      split = start + int(rng.integers(1, end - start))
      split = self._line_start(split, start + 1, end - 1, doc)
    else:
      split = end
    if split < end and rng.random() >= self.nsp_random_prob:
      return (start, split), (split, end), 0
    b = self._random_segment(doc, target - (split - start), rng)
    a, b = truncate_pair((start, split), b, self.max_num_tokens, rng)
    return a, b, 1

  def make_example(self, anchor: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The BERT example (see the class docstring) built from `anchor` with the random draws of `rng`."""
    (a0, a1), (b0, b1), label = self.pair(anchor, rng)
    a = np.asarray(self.tokens[a0:a1], np.int32)
    b = np.asarray(self.tokens[b0:b1], np.int32)
    length, n_a, n_b = self.seq_len, a1 - a0, b1 - b0
    tokens = np.zeros(length, np.int32)
    tokens[:n_a + n_b + 3] = np.concatenate([[tokenizer_lib.CLS_ID], a, [tokenizer_lib.SEP_ID], b,
                                             [tokenizer_lib.SEP_ID]])
    # Literal '[MASK]' / '[CLS]' / '[SEP]' in the text are encoded as those ids: inside a segment they become unk.
    inner = np.r_[1:n_a + 1, n_a + 2:n_a + n_b + 2]
    tokens[inner] = np.where(tokens[inner] < _SPECIAL, tokenizer_lib.UNK_ID, tokens[inner])
    inputs, positions, targets = mask_tokens(
        tokens, rng, mask_prob=self.mask_prob, max_predictions=self.max_predictions, vocab_size=self.vocab_size,
        word_starts=self.word_starts)
    slots = np.zeros(self.max_predictions, np.int32)
    mlm_positions, mlm_targets, mlm_weights = slots.copy(), slots.copy(), np.zeros(self.max_predictions, np.float32)
    mlm_positions[:len(positions)], mlm_targets[:len(positions)], mlm_weights[:len(positions)] = positions, targets, 1
    token_types = np.zeros(length, np.int32)
    token_types[n_a + 2:n_a + n_b + 3] = 1
    return {
        'inputs': inputs.astype(np.int32),
        'positions': np.arange(length, dtype=np.int32),
        'segment_ids': (np.arange(length) < n_a + n_b + 3).astype(np.int32),
        'token_types': token_types,
        'mlm_positions': mlm_positions,
        'mlm_targets': mlm_targets,
        'mlm_weights': mlm_weights,
        'nsp_label': np.asarray(label, np.int32),
    }


def _check_settings(seq_len: int, vocab_size: int, mask_prob: float, max_predictions: int, nsp_random_prob: float,
                    short_seq_prob: float) -> None:
  """DataError naming the field when a BERT example setting is out of range."""
  if seq_len < 5:
    raise DataError(f'seq_len: BERT pairs need [CLS] A [SEP] B [SEP], at least 5 tokens, got {seq_len}; raise '
                    '--config.seq_len')
  if vocab_size <= _SPECIAL:
    raise DataError(f'model.vocab_size: {vocab_size} leaves no ordinary pieces after the {_SPECIAL} special ids')
  if max_predictions < 1:
    raise DataError(f'data.max_predictions_per_seq: must be >= 1, got {max_predictions}')
  for name, value in (('mask_prob', mask_prob), ('nsp_random_prob', nsp_random_prob),
                      ('short_seq_prob', short_seq_prob)):
    if not 0 <= value <= 1:
      raise DataError(f'data.{name}: a probability in [0, 1], got {value}')
