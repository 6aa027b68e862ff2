"""Document sources: the embedded corpus, text, jsonl and parquet files (local or remote, .gz / .zst; files.py) and
tfds datasets.

`get_documents(data_cfg, split)` returns the documents of the 'train' or 'eval' split as a random-access sequence
of strings with a `fingerprint` that changes when the data (or the split selection) changes. A source without an
eval split of its own gives each document to eval iff a stable hash of its id falls under data.eval_fraction, so
the split is by document and the same on every machine and run.
"""
import bisect
import dataclasses
import hashlib
import json
import os
import pathlib
import sysconfig
from collections.abc import Callable, Sequence

import ml_collections

from lm.data import files
from lm.errors import DataError

SPLITS = ('train', 'eval')
# Not prose or hand-written code: third-party packages, test suites, and `encodings/` (generated codec tables, 12% of
# the text but 60% of its digits, which otherwise dominate samples of small models).
SKIPPED_CODE_DIRS = frozenset({'site-packages', 'test', 'tests', 'idle_test', 'encodings'})
# The pydoc topics are added one document per topic; their module too would copy eval topics into train.
_SKIPPED_FILES = frozenset({os.path.join('pydoc_data', 'topics.py')})


@dataclasses.dataclass(frozen=True)
class _Raw:
  """All documents a source offers for one split request, before train/eval selection and capping."""
  size: int
  doc_id: Callable[[int], str]  # stable id of document i (relative path, path:line, index)
  text: Callable[[int], str]
  fingerprint: str
  held_out: bool  # True: eval documents must be carved out of these by hash


class Documents(Sequence[str]):
  """Random-access documents of one split: `len(docs)`, `docs[i] -> str`, `docs.fingerprint`."""

  def __init__(self, raw: _Raw, indices: Sequence[int], fingerprint: str):
    self._raw = raw
    self._indices = indices
    self.fingerprint = fingerprint

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    return self._raw.text(self._indices[i])

  def doc_id(self, i: int) -> str:
    """The stable id (relative path, path:line or index) of document i."""
    return self._raw.doc_id(self._indices[i])

  def subset(self, positions: Sequence[int], tag: str) -> 'Documents':
    """The documents at `positions` of this sequence; `tag` names the choice in the fingerprint."""
    return Documents(self._raw, [self._indices[i] for i in positions], sha256(self.fingerprint, tag))


_SIZE_PROBES = 256  # documents read to estimate the average document size


def sample(documents: Documents, max_bytes: int) -> Documents:
  """Every k-th document, k chosen so the sample holds about `max_bytes` of text (0, or a corpus that is smaller
  already: all of them, the same object). Deterministic: the same documents on every host."""
  n = len(documents)
  if max_bytes <= 0 or n == 0:
    return documents
  probes = range(0, n, max(1, n // _SIZE_PROBES))
  average = sum(len(documents[i].encode('utf-8', errors='replace')) for i in probes) / len(probes)
  stride = int(-(-average * n // max_bytes))
  if stride <= 1:
    return documents
  return documents.subset(range(0, n, stride), f'sample every {stride}')


class TextView(Sequence[str]):
  """Documents made from other records (`to_text(record) -> str`), e.g. to train a tokenizer on a labelled set."""

  def __init__(self, records: Sequence, to_text: Callable[[object], str], fingerprint: str):
    self._records, self._to_text, self.fingerprint = records, to_text, fingerprint

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    return self._to_text(self._records[i])


def sha256(*parts) -> str:
  h = hashlib.sha256()
  for part in parts:
    h.update(part if isinstance(part, bytes) else str(part).encode())
    h.update(b'\0')
  return h.hexdigest()


def _list_raw(ids: list[str], texts: list[str], fingerprint: str) -> _Raw:
  return _Raw(len(ids), ids.__getitem__, texts.__getitem__, fingerprint, held_out=True)


def stdlib_files() -> tuple[str, list[str]]:
  """(stdlib root, sorted relative paths of its .py files): no tests, no site-packages, no codec tables."""
  root = sysconfig.get_paths()['stdlib']
  ids = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in SKIPPED_CODE_DIRS]
    rel = os.path.relpath(dirpath, root)
    ids += [os.path.normpath(os.path.join(rel, f)) for f in filenames if f.endswith('.py')]
  return root, sorted(set(ids) - _SKIPPED_FILES)


def _embedded(data_cfg: ml_collections.ConfigDict, split: str) -> _Raw:
  """The standard library's own .py files (no tests, no site-packages) plus the pydoc topics, ~12 MB."""
  del data_cfg, split
  import pydoc_data.topics  # pylint: disable=g-import-not-at-top
  root, ids = stdlib_files()
  texts = [pathlib.Path(root, rel).read_text(encoding='utf-8', errors='replace') for rel in ids]
  for key in sorted(pydoc_data.topics.topics):
    ids.append(f'pydoc_data.topics:{key}')
    texts.append(pydoc_data.topics.topics[key])
  return _list_raw(ids, texts, sha256('embedded', *ids, *texts))


def expand_paths(path: str, kind: str, key: str = 'data.path') -> list[str]:
  """Files (local or remote, plain or compressed) matched by the comma-separated globs in `path` (config `key`)."""
  return files.expand(path, kind, key)


def files_fingerprint(kind: str, paths: list[str], *extra) -> str:
  """Changes when a file's path, size or modification time changes."""
  return sha256(kind, *extra, *[(p, *files.stat(p)) for p in paths])


def _text(data_cfg: ml_collections.ConfigDict, split: str) -> _Raw:
  """One document per file; files are read when a document is asked for."""
  del split
  paths = expand_paths(data_cfg.path, 'text')
  read = lambda i: files.read_text(paths[i])
  return _Raw(len(paths), paths.__getitem__, read, files_fingerprint('text', paths), held_out=True)


def read_jsonl(paths: list[str], required: dict[str, str], id_root: str | None = None):
  """Yields (id 'path:line', record dict) for each non-blank line of each file; with `id_root` the ids use paths
  relative to it (files that ship with lm: the same ids, and so the same eval split, wherever lm is installed).

  `required` maps a config key to the field it names ({'data.text_key': 'text'}): a record without it, or a line
  that is not JSON, is a DataError naming the file, line and key.
  """
  for path in paths:
    name = os.path.relpath(path, id_root) if id_root else path
    with files.open_text(path) as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f'data.path: {path}:{line_no} is not valid JSON ({e.msg}); fix or remove that line') from e
        for key, field in required.items():
          if not isinstance(record, dict) or field not in record:
            fields = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(f'{key}: {path}:{line_no} has no field {field!r} (has {fields}); set --config.{key} '
                            'to the field that holds it, or fix the file')
        yield f'{name}:{line_no}', record


def _jsonl(data_cfg: ml_collections.ConfigDict, split: str) -> _Raw:
  """One document per non-blank line (a JSON object) of each file; the text is field data.text_key."""
  del split
  paths = expand_paths(data_cfg.path, 'jsonl')
  ids, texts = [], []
  for doc_id, record in read_jsonl(paths, {'data.text_key': data_cfg.text_key}):
    ids.append(doc_id)
    texts.append(str(record[data_cfg.text_key]))
  return _list_raw(ids, texts, files_fingerprint('jsonl', paths, data_cfg.text_key))


class _ParquetTexts:
  """Random access to column `key` of parquet files, one row group in memory at a time (sequential reads, as the
  store builder makes, read each row group once)."""

  def __init__(self, paths: list[str], key: str):
    import pyarrow.parquet as pq
    self._paths, self._key, self._cached = paths, key, (None, None)
    self._groups = []  # (file index, row group, first document index)
    total = 0
    for f, path in enumerate(paths):
      with files.open_binary(path) as handle:
        meta = pq.ParquetFile(handle).metadata
        if key not in meta.schema.names:
          raise DataError(f'data.text_key: {path} has no column {key!r} (has {meta.schema.names}); set '
                          '--config.data.text_key to the column that holds the text')
        for g in range(meta.num_row_groups):
          self._groups.append((f, g, total))
          total += meta.row_group(g).num_rows
    self.size = total
    self._firsts = [first for _, _, first in self._groups]

  def _group_texts(self, g: int) -> list:
    if self._cached[0] != g:
      import pyarrow.parquet as pq
      f, group, _ = self._groups[g]
      with files.open_binary(self._paths[f]) as handle:
        column = pq.ParquetFile(handle).read_row_group(group, columns=[self._key]).column(0)
      self._cached = (g, column.to_pylist())
    return self._cached[1]

  def doc_id(self, i: int) -> str:
    g = bisect.bisect_right(self._firsts, i) - 1
    f, group, first = self._groups[g]
    return f'{self._paths[f]}:{group}:{i - first}'

  def text(self, i: int) -> str:
    g = bisect.bisect_right(self._firsts, i) - 1
    value = self._group_texts(g)[i - self._groups[g][2]]
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value or '')


def _parquet(data_cfg: ml_collections.ConfigDict, split: str) -> _Raw:
  """One document per row of parquet files (most Hugging Face datasets); the text is column data.text_key."""
  del split
  paths = expand_paths(data_cfg.path, 'parquet')
  texts = _ParquetTexts(paths, data_cfg.text_key)
  return _Raw(texts.size, texts.doc_id, texts.text, files_fingerprint('parquet', paths, data_cfg.text_key),
              held_out=True)


def tfds_source(data_cfg: ml_collections.ConfigDict, tfds_split: str):
  """`tfds.data_source` without any download; every failure becomes a one-line DataError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, data_dir = data_cfg.tfds_name, data_cfg.tfds_data_dir or None
  if not name:
    raise DataError("data.tfds_name is empty; set --config.data.tfds_name, e.g. 'lm1b'")
  try:
    return tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(f'data.tfds_name: no tfds dataset named {name!r}; set --config.data.tfds_name to a '
                    'registered dataset') from e
  except Exception as e:  # pylint: disable=broad-except
    builder = tfds.builder(name, data_dir=data_dir)
    where = builder.data_dir
    if not builder.is_prepared():
      raise DataError(f'tfds dataset {name!r} (split {tfds_split}) is not prepared under {where}: on a machine '
                      f'with internet run `tfds build {name} --data_dir=DIR` and copy DIR here, or set '
                      '--config.data.tfds_data_dir') from e
    raise DataError(f'tfds dataset {name!r} (split {tfds_split}) under {where} cannot be read by random access '
                    f'({type(e).__name__}: {str(e).splitlines()[0]}); rebuild it with '
                    '`tfds build --file_format=array_record` or fix data.train_split / data.eval_split') from e


def _tfds(data_cfg: ml_collections.ConfigDict, split: str) -> _Raw:
  """Examples of a prepared tfds dataset, read by random access; the text is field data.text_key."""
  held_out = not data_cfg.eval_split
  tfds_split = data_cfg.train_split if split == 'train' or held_out else data_cfg.eval_split
  source = tfds_source(data_cfg, tfds_split)
  key = data_cfg.text_key

  def text(i: int) -> str:
    example = source[i]
    if key not in example:
      raise DataError(f'data.text_key: tfds {data_cfg.tfds_name!r} examples have no field {key!r} (have '
                      f'{sorted(example)}); set --config.data.text_key')
    value = example[key]
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)

  fingerprint = sha256('tfds', data_cfg.tfds_name, tfds_split, key, len(source))
  return _Raw(len(source), str, text, fingerprint, held_out=held_out)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict, str], _Raw]] = {
    'embedded': _embedded,
    'text': _text,
    'jsonl': _jsonl,
    'parquet': _parquet,
    'tfds': _tfds,
}


def is_eval_document(doc_id: str, eval_fraction: float) -> bool:
  """True iff the document with this id is held out for eval (a stable sha256 hash, the same everywhere)."""
  digest = hashlib.sha256(doc_id.encode()).digest()
  return int.from_bytes(digest[:8], 'big') < eval_fraction * 2**64


HELD_OUT_BY_FILE_TASKS = ('seq2seq', 'classify', 'qa', 'tag')  # their 'embedded' data holds standard-library files out


def eval_files_seen_in_pretraining(pretrained: ml_collections.ConfigDict, data_cfg: ml_collections.ConfigDict
                                   ) -> list[str]:
  """Standard-library files a fine-tune on the embedded corpus evaluates on that its init_from run pretrained on.

  Both split the files by the same hash (is_eval_document), so a fine-tune holding out a larger eval_fraction than
  its pretraining run evaluates on the files whose hash falls between the two: the pretrained model has read them,
  docstrings included. [] when either run does not read the embedded files, or the fractions nest the right way.
  """
  if not (pretrained.source == 'embedded' and pretrained.task == 'pretrain' and not pretrained.get('mixture')
          and data_cfg.source == 'embedded' and data_cfg.task in HELD_OUT_BY_FILE_TASKS):
    return []
  if data_cfg.eval_fraction <= pretrained.eval_fraction:
    return []
  return [rel for rel in stdlib_files()[1]
          if is_eval_document(rel, data_cfg.eval_fraction) and not is_eval_document(rel, pretrained.eval_fraction)]


def _select(raw: _Raw, split: str, data_cfg: ml_collections.ConfigDict) -> Sequence[int]:
  """Indices of this split's documents, capped at data.max_documents (0 = all)."""
  limit = data_cfg.max_documents if data_cfg.max_documents > 0 else raw.size
  if not raw.held_out:
    return range(min(limit, raw.size))
  want_eval = split == 'eval'
  indices = []
  for i in range(raw.size):
    if len(indices) >= limit:
      break
    if is_eval_document(raw.doc_id(i), data_cfg.eval_fraction) == want_eval:
      indices.append(i)
  return indices


def get_documents(data_cfg: ml_collections.ConfigDict, split: str) -> Documents:
  """Returns the documents of `split` ('train' or 'eval') of source data.source."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if data_cfg.source not in SOURCES:
    raise DataError(f'data.source: unknown source {data_cfg.source!r}; use one of {sorted(SOURCES)}')
  raw = SOURCES[data_cfg.source](data_cfg, split)
  indices = _select(raw, split, data_cfg)
  selection = (split, data_cfg.eval_fraction if raw.held_out else '', data_cfg.max_documents)
  return Documents(raw, indices, sha256(raw.fingerprint, *selection, len(indices)))
