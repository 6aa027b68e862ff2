"""Token classification data (NER-style tagging): records of words and IOB2 tags, and their tokenized examples.

  records = tagging.get_records(config.data, 'train')   # (words, tag ids) by index; .tag_names
  examples = tagging.TagExamples(records, tokenizer, config)

Sources (data.source):
  'jsonl'     one sentence per line: `tokens` (words) and `tags` (IOB2 strings, or integer ids into data.tag_names);
              eval = data.eval_path, or data.eval_fraction of the lines held out by 'file:line'.
  'tfds'      e.g. `conll2003` (`tokens`, `ner` as class labels; the tag names come from the dataset).
  'embedded'  the offline demo: the standard library's source lines, words and tags from Python's own `tokenize`
              (see `python_line_tags`), split by file.

Tags: data.tag_names (comma-separated) fixes the tag set and its order; '' takes it from the data ('O' first, then
sorted). Every tag must be 'O' or 'B-'/'I-' plus a type, and in the tag set: anything else is a one-line error
naming the file and line.
"""
import dataclasses
import functools
import io
import keyword
import pathlib
import tokenize
from collections.abc import Sequence

import ml_collections
import numpy as np

from lm.data import sources, tokenizer as tokenizer_lib
from lm.errors import DataError
from lm.models import registry

IGNORED = -1  # the tag id of a position without a label (special tokens, padding, a word's later sub-tokens)
DEMO_TAGS = ('B-KEYWORD', 'B-NAME', 'I-NAME', 'B-NUMBER', 'B-STRING')  # the embedded demo's tags (besides O)
_DEMO_MIN_WORDS, _DEMO_MAX_WORDS = 4, 40  # embedded demo: lines with fewer or more words are skipped
DEMO_FILE_FRACTION = 0.25  # embedded demo: the share of the standard library's files it reads (by path hash)


@dataclasses.dataclass(frozen=True)
class Records(Sequence):
  """The tagged sentences of one split: `records[i] -> (words, tag ids)`; `tag_names[id]` is the tag."""
  words: tuple[tuple[str, ...], ...]
  tags: tuple[tuple[int, ...], ...]
  tag_names: tuple[str, ...]
  fingerprint: str

  def __len__(self) -> int:
    return len(self.words)

  def __getitem__(self, i):
    return self.words[i], self.tags[i]

  def texts(self) -> sources.TextView:
    """Each sentence's words joined by spaces: what a tokenizer trained for this task reads."""
    return sources.TextView(self, lambda r: ' '.join(r[0]), self.fingerprint)

  def tag_strings(self, i: int) -> list[str]:
    """The tags of sentence i as strings."""
    return [self.tag_names[t] for t in self.tags[i]]


def check_tag(tag: str, where: str) -> None:
  """DataError naming `where` unless `tag` is IOB2: 'O', or 'B-'/'I-' and a type."""
  if tag != 'O' and not (tag[:2] in ('B-', 'I-') and len(tag) > 2):
    raise DataError(f'data: {where} has the tag {tag!r}, which is not IOB2 (O, B-TYPE, I-TYPE); convert the tags or '
                    'fix that line')


def tag_set(tags: Sequence[str]) -> tuple[str, ...]:
  """The tag names of a set of tags in lm's order: 'O' first, then sorted."""
  return ('O',) + tuple(sorted(set(tags) - {'O'}))


def _ids(rows: list[tuple[str, list[str], list]], names: tuple[str, ...] | None):
  """(words, tag ids, tag names) of (where, words, tags) rows; `names` None: the set of the rows' tags."""
  for where, words, tags in rows:
    if len(words) != len(tags):
      raise DataError(f'data: {where} has {len(words)} tokens but {len(tags)} tags; give one tag per token')
    for tag in tags:
      if isinstance(tag, str):
        check_tag(tag, where)
  if names is None:
    names = tag_set([t for _, _, tags in rows for t in tags if isinstance(t, str)])
  index = {name: i for i, name in enumerate(names)}
  ids = []
  for where, _, tags in rows:
    row = []
    for tag in tags:
      known = tag in index if isinstance(tag, str) else 0 <= tag < len(names)
      if not known:
        raise DataError(f'data: {where} has the tag {tag!r}, which is not among the {len(names)} tags '
                        f'({", ".join(names)}); add it to --config.data.tag_names or fix that line')
      row.append(index[tag] if isinstance(tag, str) else int(tag))
    ids.append(tuple(row))
  return tuple(tuple(w) for _, w, _ in rows), tuple(ids), names


def _configured_names(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  if not data_cfg.tag_names:
    return None
  names = tuple(t.strip() for t in data_cfg.tag_names.split(','))
  for name in names:
    check_tag(name, 'data.tag_names')
  return names


def _jsonl_rows(paths: list[str], keep) -> list[tuple[str, list[str], list]]:
  rows = []
  for record_id, row in sources.read_jsonl(paths, {}):
    if not keep(record_id):
      continue
    if not isinstance(row.get('tokens'), list) or not isinstance(row.get('tags'), list):
      raise DataError(f'data: {record_id} fields "tokens" and "tags" must be lists; fix that line')
    rows.append((record_id, [str(w) for w in row['tokens']], list(row['tags'])))
  return rows


def _files(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """jsonl sentences: data.path, and data.eval_path or a held-out share (by 'file:line') for eval. The tag set of
  both splits is the train split's (or data.tag_names)."""
  held_out = not data_cfg.eval_path
  train_paths = sources.expand_paths(data_cfg.path, 'jsonl', 'data.path')
  in_eval = lambda record_id: sources.is_eval_document(record_id, data_cfg.eval_fraction)  # noqa: E731
  train = _jsonl_rows(train_paths, (lambda i: not in_eval(i)) if held_out else (lambda i: True))
  names = _configured_names(data_cfg) or _ids(train, None)[2]
  if split == 'eval':
    paths = train_paths if held_out else sources.expand_paths(data_cfg.eval_path, 'jsonl', 'data.eval_path')
    rows = _jsonl_rows(paths, in_eval if held_out else (lambda i: True))
  else:
    paths, rows = train_paths, train
  words, ids, names = _ids(rows, names)
  fingerprint = sources.files_fingerprint('jsonl', paths, 'tokens', 'tags', *names)
  return Records(words, ids, names, sources.sha256(fingerprint, split, data_cfg.eval_fraction if held_out else ''))


def _tfds(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """A tfds dataset of sentences (data.text_key 'tokens', data.label_key e.g. 'ner', a sequence of class labels
  whose names are the tags)."""
  held_out = not data_cfg.eval_split
  source = sources.tfds_source(data_cfg, data_cfg.train_split if split == 'train' or held_out else data_cfg.eval_split)
  features = source.dataset_info.features
  label = features[data_cfg.label_key] if data_cfg.label_key in features else None
  names = getattr(getattr(label, 'feature', None), 'names', None)
  if data_cfg.text_key not in features or not names:
    raise DataError(f'data.label_key: tfds {data_cfg.tfds_name!r} needs a word feature {data_cfg.text_key!r} and a '
                    f'tag sequence {data_cfg.label_key!r} of class labels (features: {sorted(features)})')
  rows = []
  for i in range(len(source)):
    if held_out and sources.is_eval_document(str(i), data_cfg.eval_fraction) != (split == 'eval'):
      continue
    example = source[i]
    words = [w.decode('utf-8', errors='replace') if isinstance(w, bytes) else str(w)
             for w in example[data_cfg.text_key]]
    tags = [int(t) for t in example[data_cfg.label_key]]
    rows.append((f'tfds {data_cfg.tfds_name} {source.split}[{i}]', words, tags))
  words, ids, names = _ids(rows, tuple(names))
  return Records(words, ids, names, sources.sha256('tfds', data_cfg.tfds_name, source.split, len(rows), *names))


# --------------------------------------------------------------------------------------------------------- embedded


def _demo_tag(token: tokenize.TokenInfo) -> str | None:
  """The entity type of one Python token (None: outside)."""
  if token.type == tokenize.NAME:
    return 'KEYWORD' if keyword.iskeyword(token.string) else 'NAME'
  return {tokenize.NUMBER: 'NUMBER', tokenize.STRING: 'STRING'}.get(token.type)


def python_line_tags(text: str) -> list[tuple[int, list[str], list[str]]]:
  """(line number, words, IOB2 tags) of each logical line of one Python file, from `tokenize`: the words are the
  line's tokens (comments, newlines and indentation left out), tagged KEYWORD (keyword.iskeyword; soft keywords such as
  `match` are names),
  NAME, NUMBER or STRING; a dotted name ('os.path.join') is one NAME entity whose dots are inside it. [] if the file
  does not tokenize."""
  try:
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
  except (tokenize.TokenError, SyntaxError, ValueError):
    return []
  lines, words, tags, first = [], [], [], 0
  skipped = (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
  for token in tokens:
    if token.type == tokenize.NEWLINE:
      if words:
        lines.append((first, words, tags))
      words, tags = [], []
      continue
    if token.type in skipped:
      continue
    kind = _demo_tag(token)
    tag = f'B-{kind}' if kind else 'O'
    if kind == 'NAME' and len(words) >= 2 and words[-1] == '.' and tags[-2] in ('B-NAME', 'I-NAME'):
      tags[-1] = tag = 'I-NAME'  # 'a.b': the dot and b continue a's entity
    first = first if words else token.start[0]
    words.append(token.string)
    tags.append(tag)
  return lines


@functools.lru_cache(maxsize=2)
def demo_sentences(eval_fraction: float) -> dict[str, list[tuple[str, list[str], list[str]]]]:
  """{'train'|'eval': [(id 'path:line', words, tags)]}: the tagged logical lines (`python_line_tags`) with
  _DEMO_MIN_WORDS to _DEMO_MAX_WORDS words of DEMO_FILE_FRACTION of the standard library's files (~30k lines),
  split by file; a line whose words also occur in train is dropped from eval. Cached per process."""
  root, paths = sources.stdlib_files()
  out = {split: [] for split in sources.SPLITS}
  for rel in paths:
    if not sources.is_eval_document('tagging:' + rel, DEMO_FILE_FRACTION):
      continue
    split = 'eval' if sources.is_eval_document(rel, eval_fraction) else 'train'
    text = pathlib.Path(root, rel).read_text(encoding='utf-8', errors='replace')
    for line, words, tags in python_line_tags(text):
      if _DEMO_MIN_WORDS <= len(words) <= _DEMO_MAX_WORDS:
        out[split].append((f'{rel}:{line}', words, tags))
  seen = {tuple(words) for _, words, _ in out['train']}
  out['eval'] = [row for row in out['eval'] if tuple(row[1]) not in seen]
  return out


def _embedded(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  rows = demo_sentences(float(data_cfg.eval_fraction))[split]
  names = _configured_names(data_cfg) or tag_set(DEMO_TAGS)
  words, ids, names = _ids(rows, names)
  return Records(words, ids, names, sources.sha256('python_line_tags', split, data_cfg.eval_fraction, len(rows),
                                                   *[' '.join(w) for w in words[:1000]]))


def most_frequent_tag_baseline(train: Records):
  """The trivial tagger the demo is measured against: a function words -> tags giving each word its most frequent
  tag in `train` ('O' if unseen)."""
  counts: dict[str, dict[int, int]] = {}
  for sentence, tags in zip(train.words, train.tags):
    for word, tag in zip(sentence, tags):
      counts.setdefault(word, {}).setdefault(tag, 0)
      counts[word][tag] += 1
  best = {word: train.tag_names[max(c, key=lambda t: (c[t], -t))] for word, c in counts.items()}
  return lambda words: [best.get(w, 'O') for w in words]


def get_records(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The tagged sentences of `split` ('train' or 'eval') of data.source, capped at data.max_documents."""
  read = {'embedded': _embedded, 'tfds': _tfds}.get(data_cfg.source, _files)
  if read is _files and data_cfg.source != 'jsonl':
    raise DataError(f"data.source={data_cfg.source!r}: tagging reads 'jsonl', 'tfds' or 'embedded'")
  records = read(data_cfg, split)
  if not len(records):
    raise DataError(f'data: the {split} split of {data_cfg.source!r} has no tagged sentences; check data.path, '
                    'data.eval_path, data.eval_fraction or data.max_documents')
  if data_cfg.max_documents:
    n = data_cfg.max_documents
    records = Records(records.words[:n], records.tags[:n], records.tag_names,
                      sources.sha256(records.fingerprint, n))
  return records


# ---------------------------------------------------------------------------------------------------------- examples


class TagExamples(Sequence):
  """Tokenized sentences (THE batch contract of data.task='tag'); item i -> dict of numpy arrays:

    inputs          int32 [seq_len]  BERT: [CLS] words [SEP]; a decoder: words eos; 0-padded
    segment_ids     int32 [seq_len]  1 = token, 0 = padding
    token_types     int32 [seq_len]  (BERT) zeros
    tags            int32 [seq_len]  the word's tag id on its first sub-token (with data.label_all_subtokens on
                                     every sub-token, B- turned into I- after the first), IGNORED elsewhere
    tag_weights     float32 [seq_len]  1 where tags is a label
    example_weight  float32 []       1.0 (0.0 marks eval padding)
    row             int32 []         i: where this sentence's outputs go back to (TaskEval)

  Each word is encoded on its own, after a space unless it is the first (Hugging Face's is_split_into_words).
  A sentence longer than seq_len loses its last words (`word_positions(i)` has -1 for them; counted in
  num_truncated).
  """

  def __init__(self, records: Records, tokenizer: tokenizer_lib.Tokenizer, config: ml_collections.ConfigDict):
    self.records, self.seq_len = records, config.seq_len
    self._bert = registry.get(config.model.type).class_summary == 'first'
    self._all = config.data.label_all_subtokens
    self._tok = tokenizer
    self._i_of = [records.tag_names.index('I-' + n[2:]) if n.startswith('B-') and 'I-' + n[2:] in records.tag_names
                  else k for k, n in enumerate(records.tag_names)]
    self._pieces = [self._word_pieces(words) for words in records.words]
    self.num_truncated = sum(len(p) < len(w) for p, w in zip(self._pieces, records.words))

  def _word_pieces(self, words: Sequence[str]) -> list[list[int]]:
    """The sub-token ids of each word that fits in seq_len (a word the tokenizer drops gets unk)."""
    room = self.seq_len - (2 if self._bert else 1)
    pieces, used = [], 0
    for k, word in enumerate(words):
      ids = self._tok.encode(word if k == 0 else ' ' + word) or [self._tok.unk_id]
      if used + len(ids) > room:
        break
      pieces.append(ids)
      used += len(ids)
    return pieces

  def word_positions(self, i: int) -> np.ndarray:
    """int32 [number of words]: the position of each word's first sub-token, -1 for a word cut off."""
    pieces = self._pieces[i]
    starts = np.cumsum([0] + [len(p) for p in pieces])[:-1] + (1 if self._bert else 0)
    return np.concatenate([starts, np.full(len(self.records.words[i]) - len(pieces), -1)]).astype(np.int32)

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    pieces = self._pieces[i]
    tags = self.records.tags[i]
    ids, labels = ([self._tok.cls_id], [IGNORED]) if self._bert else ([], [])
    for k, word_ids in enumerate(pieces):
      later = self._i_of[tags[k]] if self._all else IGNORED
      ids += word_ids
      labels += [tags[k]] + [later] * (len(word_ids) - 1)
    ids, labels = ids + [self._tok.sep_id if self._bert else self._tok.eos_id], labels + [IGNORED]
    pad = self.seq_len - len(ids)
    labels = np.asarray(labels + [IGNORED] * pad, np.int32)
    example = {'inputs': np.asarray(ids + [self._tok.pad_id] * pad, np.int32),
               'segment_ids': np.asarray([1] * len(ids) + [0] * pad, np.int32),
               'tags': np.maximum(labels, 0), 'tag_weights': (labels != IGNORED).astype(np.float32),
               'example_weight': np.asarray(1.0, np.float32), 'row': np.asarray(i, np.int32)}
    if self._bert:
      example['token_types'] = np.zeros(self.seq_len, np.int32)
    return example
