"""The token store: each split's documents tokenized once into fixed groups of documents (shards), read by memmap.

Layout of a store directory:

  store.json            the manifest, written last: format, tokenizer fingerprint and dtype, and per split the
                        documents' fingerprint and every shard's token and document counts
  tokenizer.model       the tokenizer the tokens were made with
  train/00000.bin       shard 0 of train: raw tokens (uint16, or uint32 over 65536 pieces), each document + eos
  train/00000.idx       its document start offsets (int64 .npy, relative to the shard); written after the .bin, so
                        its presence means the shard is complete
  eval/...

Shard k of a split holds documents [k*D, (k+1)*D) of that split in order (D = data.store_shard_documents), so
the store is a pure function of the documents and the tokenizer: the same bytes whatever the number of workers or
hosts that built it, or how often the build was interrupted. Concatenated in shard order the shards are exactly
the token stream the documents give one after another; training reads it through `ShardedTokens` /
`ShardedStarts`, which open each shard as a memmap (resident memory independent of the corpus size).
"""
import dataclasses
import io
import json
import os
import pathlib

import numpy as np
from etils import epath

from lm.data import sources, tokenizer as tokenizer_lib
from lm.errors import DataError
from lm.store import paths

FORMAT = 'lm-token-store-1'  # bumped when the layout changes
MANIFEST = 'store.json'
TOKENIZER = 'tokenizer.model'


def token_dtype(vocab_size: int) -> np.dtype:
  """uint16 while every id fits, else uint32."""
  return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def shard_paths(root: epath.Path, split: str, index: int) -> tuple[epath.Path, epath.Path]:
  """(tokens .bin, document starts .idx) of shard `index` of `split`."""
  return root / split / f'{index:05d}.bin', root / split / f'{index:05d}.idx'


def num_shards(num_documents: int, shard_documents: int) -> int:
  """Shards of a split of `num_documents` at `shard_documents` each (at least one, possibly empty)."""
  return max(1, -(-num_documents // shard_documents))


def is_complete(root: epath.Path, split: str, index: int) -> bool:
  """True when shard `index` of `split` was committed (its .idx exists; it is written after the .bin)."""
  return shard_paths(root, split, index)[1].is_file()


def write_shard(root: epath.Path, split: str, index: int, documents: sources.Documents,
                tokenizer: tokenizer_lib.Tokenizer, shard_documents: int, encode_chunk: int = 1024,
                threads: int = 0) -> int:
  """Tokenizes documents [index*D, (index+1)*D) into shard `index` of `split`, committed atomically; returns tokens.

  Each document is followed by eos; `threads` SentencePiece threads (0 = all cores). Writing twice (two workers,
  or a rerun) gives the same bytes; the last commit wins and a reader never sees a partial file (paths.atomic_output).
  """
  bin_path, idx_path = shard_paths(root, split, index)
  dtype = token_dtype(tokenizer.vocab_size)
  begin, end = index * shard_documents, min((index + 1) * shard_documents, len(documents))
  starts, total = [], 0
  with paths.atomic_output(bin_path) as tmp_bin, open(tmp_bin, 'wb') as f:
    for chunk in range(begin, end, encode_chunk):
      for ids in tokenizer.encode_batch(documents[chunk:min(chunk + encode_chunk, end)], num_threads=threads):
        ids.append(tokenizer.eos_id)
        starts.append(total)
        total += len(ids)
        f.write(np.asarray(ids, dtype).tobytes())
  with paths.atomic_output(idx_path) as tmp_idx, open(tmp_idx, 'wb') as f:
    np.save(f, np.asarray(starts, np.int64))
  return total


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """What a split of the store holds: its documents and how they are cut into shards."""
  split: str
  documents: sources.Documents
  shard_documents: int

  @property
  def num_shards(self) -> int:
    return num_shards(len(self.documents), self.shard_documents)


def manifest(root: epath.Path, plans: list[SplitPlan], tokenizer: tokenizer_lib.Tokenizer, data_cfg) -> dict:
  """The manifest of a store whose shards are all complete (a pure function of the shards' contents)."""
  dtype = token_dtype(tokenizer.vocab_size)
  splits = {}
  for plan in plans:
    shards = []
    for index in range(plan.num_shards):
      bin_path, idx_path = shard_paths(root, plan.split, index)
      shards.append({'tokens': bin_path.stat().length // dtype.itemsize, 'documents': len(_load_starts(idx_path))})
    splits[plan.split] = {'documents_fingerprint': plan.documents.fingerprint, 'num_documents': len(plan.documents),
                          'shard_documents': plan.shard_documents, 'shards': shards,
                          'tokens': sum(s['tokens'] for s in shards)}
  return {'format': FORMAT, 'tokenizer_fingerprint': tokenizer.fingerprint, 'vocab_size': tokenizer.vocab_size,
          'dtype': dtype.name, 'source': source_description(data_cfg), 'splits': splits}


def write_manifest(root: epath.Path, content: dict) -> None:
  """Commits store.json atomically (sorted keys, fixed layout: the same content gives the same bytes)."""
  with paths.atomic_output(root / MANIFEST) as tmp:
    tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + '\n')


def read_manifest(root: epath.Path) -> dict | None:
  """The store's manifest, or None while it is not complete."""
  path = root / MANIFEST
  if not path.is_file():
    return None
  content = json.loads(path.read_text())
  if content.get('format') != FORMAT:
    raise DataError(f'data.store: {root} has format {content.get("format")!r}, this lm reads {FORMAT!r}; rebuild '
                    'it with `python -m lm.prepare`')
  return content


# The data keys that say which documents a store holds; recorded in store.json and compared with a run's config.
SOURCE_KEYS = ('source', 'path', 'text_key', 'tfds_name', 'train_split', 'eval_split', 'eval_fraction',
               'max_documents')


def source_description(data_cfg) -> dict:
  """{key: value} of SOURCE_KEYS in a config's data section."""
  return {key: data_cfg[key] for key in SOURCE_KEYS}


def check_matches(root: epath.Path, content: dict, tokenizer: tokenizer_lib.Tokenizer, data_cfg,
                  splits: tuple[str, ...]) -> None:
  """Refuses, in one line naming the key, a store made with another tokenizer, from other data keys, or without one
  of `splits`. (Files changed under the same data keys are not detected: the store is not compared with its source
  again; a store in the cache has the documents' fingerprint in its name.)"""
  if content['tokenizer_fingerprint'] != tokenizer.fingerprint:
    raise DataError(f'data.tokenizer: the store {root} was made with another tokenizer (fingerprint '
                    f'{content["tokenizer_fingerprint"][:12]}, this run {tokenizer.fingerprint[:12]}); set '
                    f'--config.data.tokenizer={root / TOKENIZER} or rebuild the store with `python -m lm.prepare`')
  for key, value in source_description(data_cfg).items():
    if content['source'][key] != value:
      raise DataError(f'data.{key}: the store {root} was made with data.{key}={content["source"][key]!r}, this run '
                      f'has {value!r}; give the data keys lm.prepare had, or point data.store at a new directory')
  missing = [split for split in splits if split not in content['splits']]
  if missing:
    raise DataError(f'data.store: {root} has no {missing[0]} split; rebuild it with `python -m lm.prepare`')


def _load_starts(idx_path: epath.Path) -> np.ndarray:
  """A shard's document starts: a memmap of a local .idx, the whole (small) array of a remote one."""
  if paths.is_remote(idx_path):
    return np.load(io.BytesIO(idx_path.read_bytes()))
  return np.load(idx_path, mmap_mode='r')


class RemoteShard:
  """A token shard on Cloud Storage read by ranged requests: `len`, `shard[a:b]` (one GET per slice)."""

  def __init__(self, path: epath.Path, dtype: np.dtype, size: int):
    self._url, self._dtype, self._size = os.fspath(path), dtype, size
    self._fs = epath.backend.fsspec_backend.fs(self._url)

  def __len__(self) -> int:
    return self._size

  def __getitem__(self, index):
    begin, end, _ = index.indices(self._size)
    if end <= begin:
      return np.zeros((0,), self._dtype)
    data = self._fs.cat_file(self._url, start=begin * self._dtype.itemsize, end=end * self._dtype.itemsize)
    return np.frombuffer(data, self._dtype)

  def __array__(self, dtype=None, copy=None):
    whole = self[0:self._size]
    return whole.astype(dtype) if dtype is not None else np.array(whole)


class ShardedTokens:
  """The concatenation of a split's shards as one read-only 1-D token stream: `len`, `stream[a:b]`.

  Each shard is a memmap opened on first use; a slice across a shard boundary concatenates the pieces.
  """

  def __init__(self, root: epath.Path, split: str, split_manifest: dict, dtype: np.dtype):
    self._paths = [shard_paths(root, split, i)[0] for i in range(len(split_manifest['shards']))]
    counts = [s['tokens'] for s in split_manifest['shards']]
    self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # shard k starts at offsets[k]
    self._dtype = dtype
    self._maps: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return int(self.offsets[-1])

  @property
  def dtype(self) -> np.dtype:
    return self._dtype

  @property
  def paths(self) -> list[epath.Path]:
    """The shard files, in stream order."""
    return list(self._paths)

  def __array__(self, dtype=None, copy=None):
    whole = self[0:len(self)]
    return whole.astype(dtype) if dtype is not None else np.array(whole)

  def shard(self, k: int) -> np.ndarray:
    """Shard k: a memmap, or a RemoteShard on Cloud Storage (empty shards give an empty array)."""
    if k not in self._maps:
      size = int(self.offsets[k + 1] - self.offsets[k])
      if not size:
        self._maps[k] = np.zeros((0,), self._dtype)
      elif paths.is_remote(self._paths[k]):
        self._maps[k] = RemoteShard(self._paths[k], self._dtype, size)
      else:
        self._maps[k] = np.memmap(self._paths[k], dtype=self._dtype, mode='r', shape=(size,))
    return self._maps[k]

  def __getitem__(self, index):
    if not isinstance(index, slice) or index.step not in (None, 1):
      raise TypeError('ShardedTokens supports contiguous slices only')
    begin, end, _ = index.indices(len(self))
    if end <= begin:
      return np.zeros((0,), self._dtype)
    first = int(np.searchsorted(self.offsets, begin, side='right')) - 1
    pieces = []
    k = first
    while begin < end:
      local = begin - int(self.offsets[k])
      take = min(end, int(self.offsets[k + 1])) - begin
      pieces.append(self.shard(k)[local:local + take])
      begin += take
      k += 1
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


class ShardedStarts:
  """The global document start offsets of a split, from the shards' .idx files (memmaps), without loading them.

  `starts.document_of(positions)` is `searchsorted(starts, positions, 'right') - 1`; `starts.start_of(docs)` is
  `starts[docs]`; `np.asarray(starts)` loads them all (BERT's pair sampler wants the whole array).
  """

  def __init__(self, root: epath.Path, split: str, split_manifest: dict, token_offsets: np.ndarray):
    self._paths = [shard_paths(root, split, i)[1] for i in range(len(split_manifest['shards']))]
    counts = [s['documents'] for s in split_manifest['shards']]
    self.doc_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    self.token_offsets = token_offsets
    self._maps: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return int(self.doc_offsets[-1])

  def _local(self, k: int) -> np.ndarray:
    if k not in self._maps:
      self._maps[k] = _load_starts(self._paths[k])
    return self._maps[k]

  def _per_shard(self, values: np.ndarray, offsets: np.ndarray, lookup) -> np.ndarray:
    """lookup(shard k, its starts, the values in shard k made local to it) for the values of each shard, where
    `offsets` (token or document offsets of the shards) say which shard a value falls in."""
    values = np.asarray(values, np.int64)
    shards = np.searchsorted(offsets, values, side='right') - 1
    out = np.empty(values.shape, np.int64)
    for k in np.unique(shards):
      at = shards == k
      out[at] = lookup(k, self._local(k), values[at] - offsets[k])
    return out

  def document_of(self, positions: np.ndarray) -> np.ndarray:
    """The index of the document holding each stream position."""
    return self._per_shard(positions, self.token_offsets, lambda k, starts, local: np.searchsorted(
        starts, local, side='right') - 1 + self.doc_offsets[k])

  def start_of(self, docs: np.ndarray) -> np.ndarray:
    """The stream offset where each document starts."""
    return self._per_shard(docs, self.doc_offsets,
                           lambda k, starts, local: np.asarray(starts[local]) + self.token_offsets[k])

  def __array__(self, dtype=None, copy=None):
    parts = [np.asarray(self._local(k)) + self.token_offsets[k] for k in range(len(self._paths))]
    whole = np.concatenate(parts) if parts else np.zeros((0,), np.int64)
    return whole.astype(dtype) if dtype is not None else whole


def open_split(root: epath.Path, content: dict, split: str) -> tuple[ShardedTokens, ShardedStarts]:
  """(tokens, document starts) of one split of a complete store."""
  if split not in content['splits']:
    raise DataError(f'data.store: {root} has no {split} split (has {sorted(content["splits"])}); rebuild it with '
                    '`python -m lm.prepare`')
  split_manifest = content['splits'][split]
  tokens = ShardedTokens(root, split, split_manifest, np.dtype(content['dtype']))
  return tokens, ShardedStarts(root, split, split_manifest, tokens.offsets)


def remove_stale_temporaries(root: epath.Path) -> int:
  """Deletes the temporary files a killed build left behind (only safe while no other build writes here). A store
  on Cloud Storage has none: its objects are uploaded whole."""
  if paths.is_remote(root):
    return 0
  stale = [p for p in pathlib.Path(os.fspath(root)).rglob('.*.tmp') if p.is_file()]  # epath has no local rglob
  for path in stale:
    os.remove(path)
  return len(stale)
