"""Cutting one long token stream into fixed-length training rows (pure numpy).

The stream is every document's tokens followed by eos, back to back. Row i is the window
tokens[i*L : i*L + L + 1]: inputs are its first L tokens, targets its last L, so consecutive rows share one token
and every token but the first is a target exactly once.
"""
import numpy as np

from lm.errors import DataError

MODES = ('packed', 'concat')


class PackedSequences:
  """Random-access rows (`len`, `rows[i]`) of a token stream; each row is a dict of length-L numpy arrays.

  - `inputs`, `targets` (int32): the window's tokens and the same shifted by one.
  - `segment_ids` (int32): 1, 2, 3... for each document that starts or continues in the row (0 = padding, unused).
  - `positions` (int32): position inside the document, restarting at 0 at the row start and at each document start.
  - `weights` (float32): 1 where the target is in the input's document (eos counts), 0 where the target is the
    first token of the next document.
  In mode 'concat' the documents are ignored: segment_ids all 1, positions 0..L-1, weights all 1.
  """

  def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int, mode: str = 'packed'):
    """`tokens`: 1-D ids (a memmap, or a store's `ShardedTokens`); `doc_starts`: sorted offsets of each document in
    `tokens` (an array, or a store's `ShardedStarts`)."""
    if mode not in MODES:
      raise DataError(f'data.packing: unknown mode {mode!r}; use one of {MODES}')
    if seq_len < 1:
      raise DataError(f'seq_len must be positive, got {seq_len}')
    self.tokens = tokens
    self.doc_starts = doc_starts if hasattr(doc_starts, 'document_of') else np.asarray(doc_starts, dtype=np.int64)
    if len(tokens) and (not len(self.doc_starts) or self._start_of(np.zeros(1, np.int64))[0] != 0):
      raise ValueError('doc_starts must begin with 0 (the first document starts the stream)')
    self.seq_len = seq_len
    self.mode = mode

  def __len__(self) -> int:
    return max(len(self.tokens) - 1, 0) // self.seq_len

  def _document_of(self, positions: np.ndarray) -> np.ndarray:
    """Index of the document holding each stream position (a sharded store's starts do their own lookup)."""
    if hasattr(self.doc_starts, 'document_of'):
      return self.doc_starts.document_of(positions)
    return np.searchsorted(self.doc_starts, positions, side='right') - 1

  def _start_of(self, docs: np.ndarray) -> np.ndarray:
    if hasattr(self.doc_starts, 'start_of'):
      return self.doc_starts.start_of(docs)
    return self.doc_starts[docs]

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    n, length = len(self), self.seq_len
    i = int(i)
    if not -n <= i < n:
      raise IndexError(f'row {i} out of range for {n} rows')
    start = (i % n) * length
    window = np.asarray(self.tokens[start:start + length + 1], dtype=np.int32)
    row = {'inputs': window[:-1], 'targets': window[1:]}
    if self.mode == 'concat':
      row['segment_ids'] = np.ones(length, np.int32)
      row['positions'] = np.arange(length, dtype=np.int32)
      row['weights'] = np.ones(length, np.float32)
      return row
    # Document index of every token in the window (the input positions, plus the last target).
    doc = self._document_of(np.arange(start, start + length + 1))
    doc_in = doc[:-1]
    row['segment_ids'] = (doc_in - doc_in[0] + 1).astype(np.int32)
    seg_start = np.maximum(self._start_of(doc_in), start)
    row['positions'] = (np.arange(start, start + length) - seg_start).astype(np.int32)
    row['weights'] = (doc[1:] == doc_in).astype(np.float32)
    return row
