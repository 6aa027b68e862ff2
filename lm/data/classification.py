"""Sequence classification data: labelled records from a source, and their tokenized model inputs.

  records = classification.get_records(config.data, 'train')     # (text, text_b, label) by index; .num_labels
  examples = classification.ClassificationExamples(records, tokenizer, config)  # dicts the model reads

Sources (data.source):
  'embedded'  the offline task STDLIB_PACKAGES: which of 4 standard-library packages does a 12-line chunk of source
              code come from? Split by file (data.eval_fraction of the files, by path hash), each split balanced
              to the same number of chunks per package, so chance is exactly 0.25.
  'jsonl'/'csv'  local files (data.path; .tsv is tab-separated), fields data.text_key, data.text_b_key,
              data.label_key; eval = data.eval_path, or data.eval_fraction of the records held out by hash.
              Labels are integers, or strings mapped to ids in sorted order.
  'tfds'      a prepared tfds dataset (e.g. glue/sst2, glue/mnli, imdb_reviews) read by random access; the label
              count comes from the dataset's metadata.
"""
import csv
import dataclasses
import pathlib
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from lm.data import sources, tokenizer as tokenizer_lib
from lm.errors import DataError
from lm.models import registry

STDLIB_PACKAGES = ('asyncio', 'email', 'multiprocessing', 'xml')  # the embedded task's classes, in label order
CHUNK_LINES = 12  # lines per example of the embedded task
_MIN_CODE_LINES = 4  # a chunk needs this many non-blank lines to be an example


@dataclasses.dataclass(frozen=True)
class Records(Sequence):
  """Random-access labelled records of one split: `records[i] -> (text, text_b or '', label)`."""
  size: int
  get: Callable[[int], tuple[str, str, int]]
  num_labels: int
  fingerprint: str  # changes when the records change (used to cache a tokenizer trained on them)
  label_names: tuple[str, ...] = ()

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, i):
    return self.get(i)


def _from_lists(texts, texts_b, labels, num_labels, fingerprint, names=()) -> Records:
  return Records(len(texts), lambda i: (texts[i], texts_b[i], labels[i]), num_labels, fingerprint, tuple(names))


def _package_chunks(eval_fraction: float) -> dict[str, list[list[str]]]:
  """{'train'|'eval': [chunks of package 0, chunks of package 1, ...]}: the files of a split cut into CHUNK_LINES
  lines; a chunk text that also occurs in train (a shared license header) is dropped from eval."""
  root, files = sources.stdlib_files()
  chunks = {split: [[] for _ in STDLIB_PACKAGES] for split in sources.SPLITS}
  for rel in files:
    package = rel.split('/')[0]
    if package not in STDLIB_PACKAGES:
      continue
    split = 'eval' if sources.is_eval_document(rel, eval_fraction) else 'train'
    lines = pathlib.Path(root, rel).read_text(encoding='utf-8', errors='replace').splitlines()
    for start in range(0, len(lines), CHUNK_LINES):
      chunk = lines[start:start + CHUNK_LINES]
      if sum(bool(line.strip()) for line in chunk) >= _MIN_CODE_LINES:
        chunks[split][STDLIB_PACKAGES.index(package)].append('\n'.join(chunk))
  seen = {text for items in chunks['train'] for text in items}
  chunks['eval'] = [[text for text in items if text not in seen] for items in chunks['eval']]
  return chunks


def _embedded(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The STDLIB_PACKAGES task (see the module docstring)."""
  chunks = _package_chunks(data_cfg.eval_fraction)[split]
  per_class = min(len(c) for c in chunks)
  if per_class == 0:
    raise DataError(f'data.eval_fraction={data_cfg.eval_fraction} leaves a package of the embedded task without '
                    f'{split} files; use a value between 0.1 and 0.5')
  texts, labels = [], []
  picks = [np.linspace(0, len(items) - 1, per_class).round().astype(int) for items in chunks]  # every file a share
  for i in range(per_class):  # classes interleaved: any prefix (data.max_documents) stays balanced
    for label, items in enumerate(chunks):
      texts.append(items[picks[label][i]])
      labels.append(label)
  fingerprint = sources.sha256('stdlib_packages', split, data_cfg.eval_fraction, *texts)
  return _from_lists(texts, [''] * len(texts), labels, len(STDLIB_PACKAGES), fingerprint, STDLIB_PACKAGES)


def _read_csv(paths: list[str], required: dict[str, str]):
  """Yields (id 'path:line', row dict) like sources.read_jsonl; .tsv files are tab-separated."""
  for path in paths:
    with open(path, encoding='utf-8', errors='replace', newline='') as f:
      reader = csv.DictReader(f, delimiter='\t' if path.endswith('.tsv') else ',')
      for row in reader:
        for key, field in required.items():
          if field not in row or row[field] is None:
            raise DataError(f'{key}: {path}:{reader.line_num} has no column {field!r} (has '
                            f'{reader.fieldnames}); set --config.{key} to the column that holds it')
        yield f'{path}:{reader.line_num}', row


def _label_ids(raw_labels: list, where: str) -> tuple[list[int], int, tuple[str, ...]]:
  """Integer labels as they are (count = max + 1), otherwise strings mapped to ids in sorted order."""
  as_text = [str(x).strip() for x in raw_labels]
  if all(t.lstrip('-').isdigit() for t in as_text):
    ids = [int(t) for t in as_text]
    if min(ids) < 0:
      raise DataError(f'data.label_key: {where} has a negative label {min(ids)}; labels must be 0..num_labels-1 '
                      '(unlabelled test splits cannot be trained or evaluated on)')
    return ids, max(ids) + 1, ()
  names = tuple(sorted(set(as_text)))
  return [names.index(t) for t in as_text], len(names), names


def _files(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """Records of local jsonl/csv files: data.path, and data.eval_path or a held-out share for eval."""
  required = {'data.text_key': data_cfg.text_key, 'data.label_key': data_cfg.label_key}
  if data_cfg.text_b_key:
    required['data.text_b_key'] = data_cfg.text_b_key
  read = sources.read_jsonl if data_cfg.source == 'jsonl' else _read_csv

  def load(path_value: str, key: str):
    paths = sources.expand_paths(path_value, data_cfg.source, key)
    return list(read(paths, required)), sources.files_fingerprint(data_cfg.source, paths, *required.values())

  rows, fingerprint = load(data_cfg.path, 'data.path')
  all_labels = [r[data_cfg.label_key] for _, r in rows]
  if data_cfg.eval_path:
    if split == 'eval':
      rows, fingerprint = load(data_cfg.eval_path, 'data.eval_path')
  else:
    rows = [(i, r) for i, r in rows if sources.is_eval_document(i, data_cfg.eval_fraction) == (split == 'eval')]
  ids, num_labels, names = _label_ids(all_labels + [r[data_cfg.label_key] for _, r in rows], data_cfg.path)
  labels = ids[len(all_labels):]
  texts = [str(r[data_cfg.text_key]) for _, r in rows]
  texts_b = [str(r[data_cfg.text_b_key]) if data_cfg.text_b_key else '' for _, r in rows]
  return _from_lists(texts, texts_b, labels, num_labels, sources.sha256(fingerprint, split, len(rows)), names)


def _tfds(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """A prepared tfds dataset by random access; data.eval_split '' holds out a share of the train split."""
  held_out = not data_cfg.eval_split
  source = sources.tfds_source(data_cfg, data_cfg.train_split if split == 'train' or held_out else data_cfg.eval_split)
  feature = source.dataset_info.features[data_cfg.label_key] if data_cfg.label_key in source.dataset_info.features \
      else None
  if feature is None or not hasattr(feature, 'num_classes'):
    raise DataError(f'data.label_key: tfds {data_cfg.tfds_name!r} has no class-label feature {data_cfg.label_key!r} '
                    f'(features: {sorted(source.dataset_info.features)})')
  indices = range(len(source))
  if held_out:
    indices = [i for i in indices if sources.is_eval_document(str(i), data_cfg.eval_fraction) == (split == 'eval')]

  def text(example, key):
    value = example[key]
    return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)

  def get(i):
    example = source[indices[i]]
    label = int(example[data_cfg.label_key])
    if label < 0:
      raise DataError(f'data.eval_split: tfds {data_cfg.tfds_name!r} split {source.split!r} is unlabelled (label '
                      f'{label}); use a labelled split such as validation')
    return text(example, data_cfg.text_key), text(example, data_cfg.text_b_key) if data_cfg.text_b_key else '', label

  fingerprint = sources.sha256('tfds', data_cfg.tfds_name, source.split, len(indices))
  return Records(len(indices), get, feature.num_classes, fingerprint, tuple(feature.names))


def get_records(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The labelled records of `split` ('train' or 'eval') of data.source."""
  read = {'embedded': _embedded, 'jsonl': _files, 'csv': _files, 'tfds': _tfds}[data_cfg.source]
  records = read(data_cfg, split)
  if not len(records):
    raise DataError(f'data: the {split} split of {data_cfg.source!r} has no records; check data.path, '
                    'data.eval_path, data.eval_fraction or data.max_documents')
  if data_cfg.max_documents:
    records = dataclasses.replace(records, size=min(records.size, data_cfg.max_documents))
  return records


class ClassificationExamples(Sequence):
  """Tokenized examples, padded to seq_len: `inputs`, `segment_ids` (1 = token, 0 = pad), `token_types` (BERT),
  `label`, `example_weight` (1.0; 0.0 marks eval padding).

  BERT: [CLS] a [SEP] (b [SEP]); the head reads [CLS] through the pooler. GPT: a ([SEP] b) eos; the head reads the
  last token. Too-long texts lose tokens from the end of the longer one first (HF's 'longest_first').
  """

  def __init__(self, records: Records, tokenizer: tokenizer_lib.Tokenizer, config: ml_collections.ConfigDict):
    self._records, self._tokenizer = records, tokenizer
    self._seq_len = config.seq_len
    self._bert = registry.get(config.model.type).class_summary == 'first'  # [CLS] a [SEP] (b [SEP])

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    text, text_b, label = self._records[i]
    a = self._tokenizer.encode(text)
    b = self._tokenizer.encode(text_b) if text_b else []
    extra = (2 if self._bert else 1) + (1 if b else 0)  # specials around the texts
    while len(a) + len(b) > self._seq_len - extra:
      if len(a) >= len(b):
        a.pop()
      else:
        b.pop()
    tok = self._tokenizer
    sep, b_part = [tok.sep_id], ([tok.sep_id] + b if b else [])
    if self._bert:
      first = [tok.cls_id] + a + sep
      ids, types = first + (b + sep if b else []), [0] * len(first) + [1] * ((len(b) + 1) if b else 0)
    else:
      ids = a + b_part + [tok.eos_id]
      types = [0] * len(ids)
    return _padded(ids, types, label, self._seq_len, self._bert, tok.pad_id)


def _padded(ids: list[int], types: list[int], label: int, seq_len: int, with_types: bool,
            pad_id: int) -> dict[str, np.ndarray]:
  pad = seq_len - len(ids)
  example = {'inputs': np.asarray(ids + [pad_id] * pad, np.int32),
             'segment_ids': np.asarray([1] * len(ids) + [0] * pad, np.int32),
             'label': np.asarray(label, np.int32), 'example_weight': np.asarray(1.0, np.float32)}
  if with_types:
    example['token_types'] = np.asarray(types + [0] * pad, np.int32)
  return example
