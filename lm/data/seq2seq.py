"""Sequence-to-sequence data: (source, target) text pairs for encoder-decoder (T5) fine-tuning, and their tokenized
model inputs.

  records = seq2seq.get_records(config.data, 'train')      # (source, target) by index; .fingerprint, .record_id(i)
  examples = seq2seq.Seq2SeqExamples(records, tokenizer, config)  # dicts the model reads (the batch contract)

Sources (data.source):
  'embedded'  the offline CODE SUMMARIZATION demo, made from the standard library's own .py files (the files of the
              embedded corpus, sources.stdlib_files): source = a function's code without its docstring, target =
              the docstring's first sentence (see `code_summaries`). Split by file (data.eval_fraction of the files
              by a sha256 of the relative path), so no function of an eval file is trained on.
              `first_name_baseline` is the baseline to beat: the function's name as words.
  'gettext'   the offline TRANSLATION demo: GNU gettext .mo catalogs (data.path, comma-separated files/globs), the
              English msgid -> its translation (e.g. Django's catalogs: `django_catalogs('de')`; set
              data.task_prefix='translate English to German: '). Split by a sha256 of the msgid.
  'jsonl'/'csv'  files (data.path, local or remote, .gz/.zst; .tsv is tab-separated) with fields data.source_key and
              data.target_key; eval = data.eval_path, or data.eval_fraction of the records held out by a hash of
              'file:line'.
  'tfds'      a prepared tfds dataset read by random access, fields data.source_key / data.target_key (a dotted key
              reaches into nested features): wmt14_translate/de-en has {'de', 'en'}, cnn_dailymail {'article',
              'highlights'}.

A baseline that copies the source as the prediction (BLEU/ROUGE of source vs target) is computed with the metrics,
elsewhere; this module only supplies the texts (`Seq2SeqExamples.source_text` / `target_text`).
"""
import ast
import csv
import functools
import gettext
import glob
import importlib.util
import os
import pathlib
import re
import struct
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from lm.data import files, sources, tokenizer as tokenizer_lib
from lm.errors import DataError

MAX_SOURCE_CHARS = 2000  # embedded task: longer functions are skipped (they would be cut at seq_len anyway)
MIN_BODY_STATEMENTS = 2  # embedded task: statements a function needs besides its docstring
MIN_SUMMARY_WORDS = 3  # embedded task: words the docstring's first sentence needs
_SKIPPED_PACKAGE_DIRS = sources.SKIPPED_CODE_DIRS | {'testing', '_testing', 'test_util', 'vendor', '_vendor'}
_GENERATED = re.compile(r'machine generated|do not edit|automatically generated', re.IGNORECASE)
_CACHED_IDS_LIMIT = 200_000  # Seq2SeqExamples keeps token ids in memory for at most this many pairs
_SENTENCE_END = re.compile(r'(?<!\be\.g)(?<!\bi\.e)(?<!\betc)\.\s')  # '. ' ends a sentence, 'e.g. ' does not
_SIGNATURE = re.compile(r'[\w.]+\(')  # a docstring that starts with a call signature: 'name(args) -> result'
_DEF_NAME = re.compile(r'^\s*(?:async\s+)?def\s+(\w+)', re.MULTILINE)
_IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_SUBWORD = re.compile(r'[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+')  # 'HTTPServer2' -> HTTP, Server, 2


class Records(Sequence):
  """(source, target) string pairs of one split, with a fingerprint of the data and the selection.

  `pairs` is a list or any lazy sequence of pairs (tfds); `ids` gives each record's stable id (the one its split was
  chosen by: 'file:line', 'stdlib/path.py:line:name', a msgid, a tfds index) when known.
  """

  def __init__(self, pairs: Sequence[tuple[str, str]], fingerprint: str, ids: Sequence[str] | None = None):
    self._pairs, self.fingerprint, self._ids = pairs, fingerprint, ids

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, i):
    return self._pairs[i]

  def record_id(self, i: int) -> str:
    """The stable id of record i (its index when the source has none)."""
    return self._ids[i] if self._ids is not None else str(i)

  def head(self, n: int) -> 'Records':
    """The first n records (data.max_documents)."""
    if n >= len(self):
      return self
    ids = self._ids[:n] if self._ids is not None else None
    return Records(_Prefix(self._pairs, n), sources.sha256(self.fingerprint, 'first', n), ids)


class _Prefix(Sequence):
  """The first n items of a (possibly lazy) sequence."""

  def __init__(self, items: Sequence, n: int):
    self._items, self._n = items, n

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i):
    if not -self._n <= i < self._n:
      raise IndexError(i)
    return self._items[i % self._n]


# ---------------------------------------------------------------------------------------------------------- embedded


def first_sentence(docstring: str) -> str:
  """The first sentence of a docstring: its first paragraph (up to a blank line), whitespace collapsed, cut after
  the first '. ' (not after 'e.g.' / 'i.e.' / 'etc.'), keeping the full stop."""
  paragraph = re.split(r'\n\s*\n', docstring.strip(), maxsplit=1)[0]
  text = ' '.join(paragraph.split())
  end = _SENTENCE_END.search(text)
  return text[:end.start() + 1] if end else text


def split_identifiers(code: str) -> str:
  """Code with every compound identifier written as its lower-case sub-words (code2seq-style sub-tokens):
  'def get_terminal_size(self):' -> 'def get terminal size(self):', 'HTTPServer' -> 'http server'. Words of
  prose and one-part names stay as they are, so the names a summary repeats become the words it is written in."""
  def words(match: re.Match) -> str:
    parts = _SUBWORD.findall(match.group())
    return ' '.join(part.lower() for part in parts) if len(parts) > 1 else match.group()
  return _IDENTIFIER.sub(words, code)


def encoder_text(data_cfg: ml_collections.ConfigDict, source: str) -> str:
  """What the encoder reads for a source text: data.task_prefix + the source, its identifiers split into words
  when data.split_identifiers (training, lm.evaluate and lm.generate all go through here)."""
  if data_cfg.get('split_identifiers', False):
    source = split_identifiers(source)
  return data_cfg.task_prefix + source


def first_name_baseline(source: str) -> str:
  """The copy-the-name baseline of the code summarization task: the (first) defined function's name with
  underscores as spaces ('def get_terminal_size(...)' -> 'get terminal size'); '' if the source defines none."""
  match = _DEF_NAME.search(source)
  return ' '.join(part for part in match.group(1).split('_') if part) if match else ''


def _summary(node: ast.AST) -> str:
  """The target of a function node, or '' when it is no example: no docstring, a docstring whose first sentence is
  under MIN_SUMMARY_WORDS words or is a call signature ('f(x) -> y', which names the function: a giveaway), or a
  body of fewer than MIN_BODY_STATEMENTS statements besides the docstring (getters: the summary is the name)."""
  docstring = ast.get_docstring(node, clean=True)
  if not docstring or len(node.body) - 1 < MIN_BODY_STATEMENTS:
    return ''
  sentence = first_sentence(docstring)
  if len(sentence.split()) < MIN_SUMMARY_WORDS or _SIGNATURE.match(sentence):
    return ''
  return sentence


def _source_without_docstring(node: ast.AST, lines: list[str]) -> str:
  """The function's lines (decorators included) without exactly the lines of its docstring statement, dedented by
  the def's own indentation; '' when the docstring shares a line with other code (`def f(): "doc"; ...`)."""
  doc = node.body[0]
  if doc.lineno == node.lineno or node.body[1].lineno == doc.end_lineno or \
      lines[doc.lineno - 1][:doc.col_offset].strip():
    return ''
  first = min([node.lineno] + [d.lineno for d in node.decorator_list])
  kept = lines[first - 1:doc.lineno - 1] + lines[doc.end_lineno:node.end_lineno]
  indent = re.match(r'\s*', lines[first - 1]).group()
  return '\n'.join(line[len(indent):] if line.startswith(indent) else line for line in kept)


def file_summaries(text: str) -> list[tuple[int, str, str, str]]:
  """(line, name, source, target) of every function and method of one Python file that makes an example (see
  `_summary`; sources over MAX_SOURCE_CHARS are skipped too), in order; [] if the file does not parse."""
  try:
    tree = ast.parse(text)
  except (SyntaxError, ValueError):
    return []
  lines = text.splitlines()
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
      continue
    target = _summary(node)
    source = _source_without_docstring(node, lines) if target else ''
    if source and len(source) <= MAX_SOURCE_CHARS:
      found.append((node.lineno, node.name, source, target))
  return sorted(found)


@functools.lru_cache(maxsize=4)
def code_summaries(eval_fraction: float, packages: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, str, str], ...]]:
  """{'train'|'eval': ((id 'path:line:name', source, target), ...)} of the standard library's functions.

  A file goes to eval iff sources.is_eval_document(its relative path, eval_fraction). Pairs repeated within a split
  are kept once, and an eval pair whose source also occurs in train (a function copied between modules) is dropped,
  so eval sources are unseen. `packages` (installed import names) add their functions to train only, minus any
  whose source or (name, target) an eval pair has (vendored copies of the standard library); the eval split does
  not depend on them. Cached per process: parsing the standard library takes a few seconds.
  """
  root, paths = sources.stdlib_files()
  pairs = {split: {} for split in sources.SPLITS}
  for rel in paths:
    split = 'eval' if sources.is_eval_document(rel, eval_fraction) else 'train'
    _add_file(pairs[split], root, rel, rel)
  seen = {source for source, _ in pairs['train']}
  pairs['eval'] = {pair: i for pair, i in pairs['eval'].items() if pair[0] not in seen}
  extra = {}
  for package in packages:
    package_root, package_paths = package_files(package)
    for rel in package_paths:
      _add_file(extra, package_root, rel, os.path.join(package, rel), skip_generated=True)
  held_out = {source for source, _ in pairs['eval']} | {(_name(i), t) for (_, t), i in pairs['eval'].items()}
  for (source, target), i in extra.items():
    if source not in held_out and (_name(i), target) not in held_out:
      pairs['train'].setdefault((source, target), i)
  return {split: tuple((i, s, t) for (s, t), i in items.items()) for split, items in pairs.items()}


def _add_file(pairs: dict, root: str, rel: str, label: str, skip_generated: bool = False) -> None:
  """Adds the examples of file root/rel to pairs {(source, target): 'label:line:name'}, keeping the first id;
  with skip_generated, none from a file whose head says it is generated (TensorFlow's gen_*_ops.py: 'TODO: add
  doc.' for thousands of functions)."""
  text = pathlib.Path(root, rel).read_text(encoding='utf-8', errors='replace')
  if skip_generated and _GENERATED.search(text[:2000]):
    return
  for line, name, source, target in file_summaries(text):
    pairs.setdefault((source, target), f'{label}:{line}:{name}')


def _name(record_id: str) -> str:
  return record_id.rsplit(':', 1)[1]


def package_files(package: str) -> tuple[str, list[str]]:
  """(root, sorted relative .py paths) of an installed package by import name, without its test directories;
  DataError naming data.code_packages when it is not installed (or is a single module)."""
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    spec = None
  locations = list(spec.submodule_search_locations or []) if spec else []
  if not locations:
    raise DataError(f'data.code_packages: {package!r} is not an installed package here; pip install it or drop it '
                    'from the list')
  root, found = locations[0], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_PACKAGE_DIRS)
    rel = os.path.relpath(dirpath, root)
    found += [os.path.normpath(os.path.join(rel, f)) for f in filenames
              if f.endswith('.py') and not f.startswith('test_') and not f.endswith('_test.py')]
  return root, sorted(found)


def _embedded(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The code summarization demo (see `code_summaries`); with data.code_target='name' the same functions with
  their names as words for targets (`first_name_baseline`: the copying warm-up)."""
  packages = tuple(sorted(filter(None, (p.strip() for p in data_cfg.get('code_packages', '').split(',')))))
  items = code_summaries(float(data_cfg.eval_fraction), packages)[split]
  if data_cfg.get('code_target', 'docstring') == 'name':  # the fingerprint follows: the targets are in it
    items = [(i, source, first_name_baseline(source)) for i, source, _ in items]
    items = [item for item in items if item[2]]
  pairs = [(source, target) for _, source, target in items]
  fingerprint = sources.sha256('code_summaries', split, data_cfg.eval_fraction, *packages,
                               *[p for pair in pairs for p in pair])
  return Records(pairs, fingerprint, [i for i, _, _ in items])


# ----------------------------------------------------------------------------------------------------------- gettext


def _django_root() -> str:
  spec = importlib.util.find_spec('django')  # finds the package without importing it
  if spec is None or not spec.submodule_search_locations:
    raise DataError('data.path: the translation demo reads Django\'s gettext catalogs but django is not installed; '
                    'pip install django (the translation demo\'s corpus), or set --config.data.path to .mo files')
  return list(spec.submodule_search_locations)[0]


def django_catalog(language: str) -> str:
  """<django>/conf/locale/<language>/LC_MESSAGES/django.mo (Django's core catalog), found without importing
  django; DataError when django is not installed or has no such language."""
  path = os.path.join(_django_root(), 'conf', 'locale', language, 'LC_MESSAGES', 'django.mo')
  if not os.path.isfile(path):
    known = sorted(os.listdir(os.path.join(_django_root(), 'conf', 'locale')))
    raise DataError(f'data.path: Django has no catalog for language {language!r} ({path}); use one of {known}')
  return path


def django_catalogs(language: str) -> list[str]:
  """Every .mo catalog of one language in Django: the core (conf/locale) and each contrib app's (admin, auth, ...),
  django.mo and djangojs.mo, core first then sorted; join them with ',' for data.path."""
  core = django_catalog(language)
  pattern = os.path.join(_django_root(), 'contrib', '*', 'locale', language, 'LC_MESSAGES', '*.mo')
  return [core] + sorted(glob.glob(pattern))


def read_catalog(path: str) -> list[tuple[str, str]]:
  """(msgid, msgstr) pairs of one .mo file: no header (msgid ''), no plural entries, no empty translations; a
  message context ('month name' in msgctxt) is dropped from the msgid."""
  try:
    with files.open_binary(path) as f:
      catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
  except (OSError, UnicodeDecodeError, ValueError, struct.error) as e:
    raise DataError(f'data.path: {path} is not a GNU gettext .mo catalog ({e}); point data.path at .mo files '
                    '(compile .po files with msgfmt)') from e
  pairs = []
  for key, value in catalog.items():
    if not isinstance(key, str) or not key or not value.strip():
      continue
    pairs.append((key.rsplit('\x04', 1)[-1], value))
  return pairs


def _gettext(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """English msgid -> translation from the .mo files of data.path; eval = data.eval_fraction of the msgids by hash
  (a msgid in several catalogs is in one split). Pairs repeated across catalogs are kept once."""
  paths = sources.expand_paths(data_cfg.path, 'gettext .mo')
  pairs, ids = {}, []
  for path in paths:
    for msgid, msgstr in read_catalog(path):
      if (msgid, msgstr) not in pairs and sources.is_eval_document(msgid, data_cfg.eval_fraction) == (split == 'eval'):
        pairs[(msgid, msgstr)] = None
        ids.append(msgid)
  fingerprint = sources.sha256(sources.files_fingerprint('gettext', paths), split, data_cfg.eval_fraction, len(ids))
  return Records(list(pairs), fingerprint, ids)


# ------------------------------------------------------------------------------------------------------ jsonl / csv


def _read_csv(paths: list[str], required: dict[str, str]):
  """Yields (id 'path:line', row dict) like sources.read_jsonl; .tsv files are tab-separated. A row without a
  required column is a DataError naming the file, line and key."""
  for path in paths:
    with files.open_text(path) as f:
      reader = csv.DictReader(f, delimiter='\t' if path.removesuffix('.gz').removesuffix('.zst').endswith('.tsv')
                              else ',')
      for row in reader:
        for key, field in required.items():
          if row.get(field) is None:
            raise DataError(f'{key}: {path}:{reader.line_num} has no column {field!r} (has {reader.fieldnames}); '
                            f'set --config.{key} to the column that holds it, or fix the file')
        yield f'{path}:{reader.line_num}', row


def _checked_pair(record_id: str, row: dict, data_cfg: ml_collections.ConfigDict) -> tuple[str, str]:
  """(source, target) of one file record; DataError naming 'file:line' for a non-string or empty value."""
  pair = []
  for key in ('source_key', 'target_key'):
    field = data_cfg[key]
    value = row[field]
    if not isinstance(value, str):
      raise DataError(f'data.{key}: {record_id} field {field!r} is a {type(value).__name__}, not a string; fix that '
                      f'record or set --config.data.{key} to the field that holds the text')
    if not value.strip():
      raise DataError(f'data.{key}: {record_id} has an empty {field!r}; give every record a non-empty '
                      f'{field!r} or remove that line')
    pair.append(value)
  return pair[0], pair[1]


def _files(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """Records of jsonl/csv files: data.path, and data.eval_path or a held-out share (by 'file:line') for eval."""
  required = {'data.source_key': data_cfg.source_key, 'data.target_key': data_cfg.target_key}
  read = sources.read_jsonl if data_cfg.source == 'jsonl' else _read_csv
  held_out = not data_cfg.eval_path
  path, key = (data_cfg.eval_path, 'data.eval_path') if split == 'eval' and not held_out else (data_cfg.path,
                                                                                               'data.path')
  paths = sources.expand_paths(path, data_cfg.source, key)
  pairs, ids = [], []
  for record_id, row in read(paths, required):
    if held_out and sources.is_eval_document(record_id, data_cfg.eval_fraction) != (split == 'eval'):
      continue
    pairs.append(_checked_pair(record_id, row, data_cfg))
    ids.append(record_id)
  fingerprint = sources.files_fingerprint(data_cfg.source, paths, *required.values())
  return Records(pairs, sources.sha256(fingerprint, split, data_cfg.eval_fraction if held_out else '', len(pairs)),
                 ids)


# -------------------------------------------------------------------------------------------------------------- tfds


def _as_text(value) -> str | None:
  """A tfds text feature as str (bytes decoded), None if it is not text."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, bytes):
    return bytes(value).decode('utf-8', errors='replace')
  return str(value) if isinstance(value, str) else None


def _field(example: dict, dotted: str, key: str, where: str) -> str:
  """example[a][b] for the dotted key 'a.b' (config key `key`), as text; one-line DataError otherwise."""
  value = example
  for part in dotted.split('.'):
    if not isinstance(value, dict) or part not in value:
      fields = sorted(value) if isinstance(value, dict) else type(value).__name__
      raise DataError(f'data.{key}: {where} examples have no field {dotted!r} (have {fields}); set '
                      f'--config.data.{key}, e.g. \'de\' for wmt14_translate/de-en or \'article\' for cnn_dailymail')
    value = value[part]
  text = _as_text(value)
  if text is None:
    raise DataError(f'data.{key}: {where} field {dotted!r} is not text ({type(value).__name__}); set '
                    f'--config.data.{key} to a text feature')
  return text


class _TfdsPairs(Sequence):
  """(source, target) of the examples at `indices` of a tfds data source, read when asked for."""

  def __init__(self, source, indices: Sequence[int], data_cfg: ml_collections.ConfigDict):
    self._source, self._indices = source, indices
    self._keys = (data_cfg.source_key, data_cfg.target_key)
    self._where = f'tfds {data_cfg.tfds_name!r}'

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i):
    example = self._source[self._indices[i]]
    source_key, target_key = self._keys
    return (_field(example, source_key, 'source_key', self._where),
            _field(example, target_key, 'target_key', self._where))


def _tfds(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """A prepared tfds dataset by random access; data.eval_split '' holds out data.eval_fraction of the train split
  by a hash of the example index. Fields are checked on the first example; texts are not checked for emptiness
  (that would read the whole dataset): an empty target trains the decoder to end at once."""
  held_out = not data_cfg.eval_split
  source = sources.tfds_source(data_cfg, data_cfg.train_split if split == 'train' or held_out else data_cfg.eval_split)
  indices = range(len(source))
  if held_out:
    indices = [i for i in indices if sources.is_eval_document(str(i), data_cfg.eval_fraction) == (split == 'eval')]
  pairs = _TfdsPairs(source, indices, data_cfg)
  if len(pairs):
    _ = pairs[0]  # fails fast on a wrong data.source_key / data.target_key
  fingerprint = sources.sha256('tfds', data_cfg.tfds_name, source.split, data_cfg.source_key, data_cfg.target_key,
                               data_cfg.eval_fraction if held_out else '', len(indices))
  return Records(pairs, fingerprint, [str(i) for i in indices] if held_out else None)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict, str], Records]] = {
    'embedded': _embedded,
    'gettext': _gettext,
    'jsonl': _files,
    'csv': _files,
    'tfds': _tfds,
}


def get_records(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The (source, target) records of `split` ('train' or 'eval') of data.source, capped at data.max_documents."""
  if split not in sources.SPLITS:
    raise ValueError(f'split must be one of {sources.SPLITS}, got {split!r}')
  if data_cfg.source not in SOURCES:
    raise DataError(f'data.source: {data_cfg.source!r} has no (source, target) pairs; use one of {sorted(SOURCES)}')
  records = SOURCES[data_cfg.source](data_cfg, split)
  if not len(records):
    raise DataError(f'data: the {split} split of {data_cfg.source!r} has no (source, target) pairs; check '
                    'data.path, data.eval_path, data.eval_fraction or data.max_documents')
  if data_cfg.max_documents:
    records = records.head(data_cfg.max_documents)
  return records


# ---------------------------------------------------------------------------------------------------------- examples


class Seq2SeqExamples(Sequence):
  """Tokenized encoder-decoder examples (THE batch contract), item i -> dict of numpy arrays:

    encoder_inputs       int32 [seq_len]     task_prefix + source, eos; cut to seq_len keeping eos last; 0-padded
    encoder_segment_ids  int32 [seq_len]     1 = token, 0 = padding
    targets              int32 [target_len]  target, eos; cut to target_len (data.target_len, 0 = seq_len) keeping
                                             eos last; 0-padded
    inputs               int32 [target_len]  [0] + targets[:-1]: the decoder input, starting from pad id 0 (T5)
    weights              float32 [target_len]  1 on real targets (eos included), 0 on padding
    segment_ids          int32 [target_len]  1 on real decoder positions, 0 on padding
    example_weight       float32 []          1.0 (the padding examples of a whole-split eval get 0)

  Token ids of all pairs are computed once, on first use (encode_batch, in parallel) and kept in memory for up to
  _CACHED_IDS_LIMIT pairs; a bigger dataset (tfds) is encoded per item, and only the truncation counts read it all.
  """

  def __init__(self, records: Records, tokenizer: tokenizer_lib.Tokenizer, config: ml_collections.ConfigDict):
    self._records, self._tokenizer = records, tokenizer
    self.seq_len = int(config.seq_len)
    self.target_len = int(config.data.target_len or config.seq_len)
    self._data_cfg = config.data
    self._ids: tuple[list[list[int]], list[list[int]]] | None = None
    self._lengths: tuple[np.ndarray, np.ndarray] | None = None

  def __len__(self) -> int:
    return len(self._records)

  def source_text(self, i: int) -> str:
    """The raw source of pair i (without data.task_prefix or split identifiers)."""
    return self._records[i][0]

  def target_text(self, i: int) -> str:
    """The raw target (reference) of pair i."""
    return self._records[i][1]

  def _encode(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    sources_ = [encoder_text(self._data_cfg, source) for source, _ in pairs]
    targets = [target for _, target in pairs]
    return self._tokenizer.encode_batch(sources_), self._tokenizer.encode_batch(targets)

  def _token_lengths(self) -> tuple[np.ndarray, np.ndarray]:
    """(source lengths, target lengths) in tokens without eos, of every pair (computed once)."""
    if self._lengths is None:
      n, chunk = len(self._records), 10_000
      lengths, kept = (np.zeros(n, np.int64), np.zeros(n, np.int64)), ([], [])
      for start in range(0, n, chunk):
        ids = self._encode([self._records[i] for i in range(start, min(n, start + chunk))])
        for k in (0, 1):
          lengths[k][start:start + len(ids[k])] = [len(x) for x in ids[k]]
          if n <= _CACHED_IDS_LIMIT:
            kept[k].extend(ids[k])
      self._ids = kept if n <= _CACHED_IDS_LIMIT else None
      self._lengths = lengths
    return self._lengths

  @property
  def num_truncated_sources(self) -> int:
    """Pairs whose task_prefix + source + eos exceeds seq_len tokens (cut, eos kept)."""
    return int(np.sum(self._token_lengths()[0] + 1 > self.seq_len))

  @property
  def num_truncated_targets(self) -> int:
    """Pairs whose target + eos exceeds target_len tokens (cut, eos kept)."""
    return int(np.sum(self._token_lengths()[1] + 1 > self.target_len))

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if self._ids is None and len(self._records) <= _CACHED_IDS_LIMIT:
      self._token_lengths()
    if self._ids is not None:
      source_ids, target_ids = self._ids[0][i], self._ids[1][i]
    else:
      (source_ids,), (target_ids,) = self._encode([self._records[i]])
    eos, pad = self._tokenizer.eos_id, self._tokenizer.pad_id
    encoder, encoder_segments = _padded(source_ids[:self.seq_len - 1] + [eos], self.seq_len, pad)
    targets, segments = _padded(target_ids[:self.target_len - 1] + [eos], self.target_len, pad)
    inputs = np.concatenate([np.asarray([pad], np.int32), targets[:-1]])
    return {'encoder_inputs': encoder, 'encoder_segment_ids': encoder_segments, 'targets': targets,
            'inputs': inputs, 'weights': segments.astype(np.float32), 'segment_ids': segments,
            'example_weight': np.asarray(1.0, np.float32)}


def _padded(ids: list[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids padded to `length`, segment ids: 1 on tokens, 0 on padding), int32."""
  pad = length - len(ids)
  return (np.asarray(ids + [pad_id] * pad, np.int32), np.asarray([1] * len(ids) + [0] * pad, np.int32))
