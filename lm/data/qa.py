"""Extractive question answering data (SQuAD): records, and the windows of (question, context) tokens a model reads.

  records = qa.get_records(config.data, 'train')      # QaRecord(id, question, context, answers, starts) by index
  features = qa.QaFeatures(records, tokenizer, config)  # one example per window; offsets, example_of for answers

Sources (data.source):
  'jsonl'     SQuAD's fields as Hugging Face datasets write them: `question`, `context`, `answers` {`text`: [...],
              `answer_start`: [...]} (empty lists: no answer, SQuAD v2), optional `id`. Every answer must be at its
              answer_start; eval = data.eval_path, or data.eval_fraction of the records held out by 'file:line'.
  'tfds'      `squad/v1.1` or `squad/v2.0` (data.tfds_name; train and validation splits).
  'embedded'  the offline demo: "What does <function> return?" about the standard library's docstrings (see
              `docstring_questions`), split by file like the other embedded tasks.

Windows: BERT reads [CLS] question [SEP] context [SEP] (token types 0 / 1), a decoder question [SEP] context eos.
The question is cut to data.max_query_len tokens; a context longer than the rest of seq_len is read in windows
that overlap by data.doc_stride tokens (Hugging Face's `stride`). A window's answer is the token span covering the
first gold answer's characters, or position 0 ([CLS]) when the answer is not wholly inside it or there is none.
"""
import ast
import dataclasses
import functools
import pathlib
import re
from collections.abc import Sequence

import ml_collections
import numpy as np

from lm.data import seq2seq, sources, tokenizer as tokenizer_lib
from lm.errors import DataError
from lm.models import registry

NULL_POSITION = 0  # where a window without the answer points: [CLS] for BERT, the first token for a decoder
DEMO_FUNCTIONS_PER_CONTEXT = 4  # embedded demo: documented functions whose paragraphs make one context
_DEMO_MAX_PARAGRAPH = 400  # embedded demo: longer docstring paragraphs are left out of contexts
_RETURNS = re.compile(r'^Returns? (?P<answer>.{3,150}?)\.?$')  # a first sentence the demo asks about


@dataclasses.dataclass(frozen=True)
class QaRecord:
  """One question about one context, with its gold answers (none for SQuAD v2's unanswerable questions)."""
  id: str
  question: str
  context: str
  answers: tuple[str, ...] = ()
  starts: tuple[int, ...] = ()  # character offset of each answer in the context


@dataclasses.dataclass(frozen=True)
class Records(Sequence):
  """The QaRecords of one split and a fingerprint that changes when they change (caches the tokenizer)."""
  items: tuple[QaRecord, ...]
  fingerprint: str

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]

  def texts(self) -> sources.TextView:
    """Question and context of each record: what a tokenizer trained for this task reads."""
    return sources.TextView(self, lambda r: f'{r.question}\n{r.context}', self.fingerprint)


def check_answers(record: QaRecord, where: str) -> None:
  """DataError naming `where` unless every answer of the record is the context's text at its answer_start."""
  if len(record.answers) != len(record.starts):
    raise DataError(f'data.path: {where} has {len(record.answers)} answer texts but {len(record.starts)} '
                    'answer_start values; give one start per answer')
  for text, start in zip(record.answers, record.starts):
    found = record.context[start:start + len(text)]
    if found != text:
      raise DataError(f'data.path: {where} answer {text!r} is not at answer_start={start} of its context (found '
                      f'{found!r}); fix answer_start to the character offset of the answer')


# ------------------------------------------------------------------------------------------------------------ files


def _record_from_row(record_id: str, row: dict) -> QaRecord:
  """A QaRecord of one SQuAD-format jsonl row; DataError naming the line for a malformed field."""
  missing = [key for key in ('question', 'context', 'answers') if key not in row]
  if missing:
    raise DataError(f'data.path: {record_id} has no field {missing[0]!r} (has {sorted(row)}); question answering '
                    'reads SQuAD\'s fields: question, context, answers {"text": [...], "answer_start": [...]}')
  answers = row['answers']
  if not isinstance(answers, dict) or not isinstance(answers.get('text'), list) or \
      not isinstance(answers.get('answer_start'), list):
    raise DataError(f'data.path: {record_id} field "answers" must be {{"text": [...], "answer_start": [...]}} '
                    f'(SQuAD\'s fields), got {str(answers)[:80]}')
  for key in ('question', 'context'):
    if not isinstance(row[key], str) or not row[key].strip():
      raise DataError(f'data.path: {record_id} has no text in field {key!r}; fix or remove that line')
  record = QaRecord(str(row.get('id', record_id)), row['question'], row['context'],
                    tuple(str(t) for t in answers['text']), tuple(int(s) for s in answers['answer_start']))
  check_answers(record, record_id)
  return record


def _files(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """SQuAD-format jsonl: data.path, and data.eval_path or a held-out share (by 'file:line') for eval."""
  if data_cfg.source != 'jsonl':
    raise DataError(f"data.source={data_cfg.source!r}: question answering reads 'jsonl', 'tfds' or 'embedded'")
  held_out = not data_cfg.eval_path
  path, key = (data_cfg.eval_path, 'data.eval_path') if split == 'eval' and not held_out else (data_cfg.path,
                                                                                               'data.path')
  paths = sources.expand_paths(path, 'jsonl', key)
  items = [_record_from_row(record_id, row) for record_id, row in sources.read_jsonl(paths, {})
           if not held_out or sources.is_eval_document(record_id, data_cfg.eval_fraction) == (split == 'eval')]
  fingerprint = sources.files_fingerprint('jsonl', paths, 'squad')
  return Records(tuple(items), sources.sha256(fingerprint, split, data_cfg.eval_fraction if held_out else ''))


def _text(value) -> str:
  value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
  return value.decode('utf-8', errors='replace') if isinstance(value, bytes) else str(value)


def _tfds(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """tfds squad/v1.1 or squad/v2.0 (context, question, answers{text, answer_start}); data.eval_split '' holds
  out data.eval_fraction of the train split."""
  held_out = not data_cfg.eval_split
  source = sources.tfds_source(data_cfg, data_cfg.train_split if split == 'train' or held_out else data_cfg.eval_split)
  items = []
  for i in range(len(source)):
    if held_out and sources.is_eval_document(str(i), data_cfg.eval_fraction) != (split == 'eval'):
      continue
    example = source[i]
    if not {'question', 'context', 'answers'} <= set(example):
      raise DataError(f'data.tfds_name: {data_cfg.tfds_name!r} examples have no question/context/answers fields '
                      f'(have {sorted(example)}); use squad/v1.1 or squad/v2.0')
    pairs = list(zip(example['answers']['text'], example['answers']['answer_start']))
    items.append(QaRecord(_text(example.get('id', str(i))), _text(example['question']), _text(example['context']),
                          tuple(_text(t) for t, _ in pairs), tuple(int(s) for _, s in pairs)))
  fingerprint = sources.sha256('tfds', data_cfg.tfds_name, source.split, data_cfg.eval_fraction if held_out else '',
                               len(items))
  return Records(tuple(items), fingerprint)


# --------------------------------------------------------------------------------------------------------- embedded


def _documented_functions(text: str) -> list[tuple[str, str]]:
  """(qualified name, first docstring paragraph, whitespace collapsed) of the documented functions and methods
  of one file, in source order; [] if it does not parse."""
  try:
    tree = ast.parse(text)
  except (SyntaxError, ValueError):
    return []
  found = []

  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.ClassDef):
        visit(child, f'{prefix}{child.name}.')
      elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not child.name.startswith('__'):
        doc = ast.get_docstring(child, clean=True)
        if doc:
          paragraph = ' '.join(re.split(r'\n\s*\n', doc.strip(), maxsplit=1)[0].split())
          found.append((child.lineno, f'{prefix}{child.name}', paragraph))
  visit(tree, '')
  return [(name, paragraph) for _, name, paragraph in sorted(found)]


def _contexts(module: str, functions: list[tuple[str, str]]):
  """Yields (context, [(function, answer, answer start)]) for groups of DEMO_FUNCTIONS_PER_CONTEXT functions."""
  kept = [(name, p) for name, p in functions if len(p) <= _DEMO_MAX_PARAGRAPH]
  for first in range(0, len(kept), DEMO_FUNCTIONS_PER_CONTEXT):
    context, asked = '', []
    for name, paragraph in kept[first:first + DEMO_FUNCTIONS_PER_CONTEXT]:
      line = f'* {module}.{name}: {paragraph}'  # a space before the name, as in the question: the same pieces
      match = _RETURNS.match(seq2seq.first_sentence(paragraph))
      if match:
        start = len(context) + len(line) - len(paragraph) + match.start('answer')
        asked.append((f'{module}.{name}', match.group('answer'), start))
      context += line + '\n'
    if asked:
      yield context.rstrip('\n'), asked


@functools.lru_cache(maxsize=2)
def docstring_questions(eval_fraction: float) -> dict[str, tuple[QaRecord, ...]]:
  """{'train'|'eval': records} of the offline demo. Each context is the first docstring paragraphs of
  DEMO_FUNCTIONS_PER_CONTEXT consecutive documented functions of a standard-library module, one bullet each
  ('* json.dumps: Serialize ``obj`` to a JSON formatted ``str``. ...'); every function of it whose first sentence is
  'Return(s) <answer>.' gives the question 'What does <module.function> return?' with <answer> as the gold span.
  A file's questions go to eval iff sources.is_eval_document(its path, eval_fraction). Cached per process (parsing
  the standard library takes seconds)."""
  root, paths = sources.stdlib_files()
  items = {split: [] for split in sources.SPLITS}
  for rel in paths:
    split = 'eval' if sources.is_eval_document(rel, eval_fraction) else 'train'
    module = rel.removesuffix('.py').removesuffix('/__init__').replace('/', '.')
    functions = _documented_functions(pathlib.Path(root, rel).read_text(encoding='utf-8', errors='replace'))
    for k, (context, asked) in enumerate(_contexts(module, functions)):
      for name, answer, start in asked:
        items[split].append(QaRecord(f'{rel}:{k}:{name}', f'What does {name} return?', context, (answer,), (start,)))
  return {split: tuple(records) for split, records in items.items()}


def _embedded(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The docstring questions of `split` (see `docstring_questions`)."""
  items = docstring_questions(float(data_cfg.eval_fraction))[split]
  return Records(items, sources.sha256('docstring_questions', split, data_cfg.eval_fraction,
                                       *[f'{r.question}\n{r.context}' for r in items]))


def first_sentence_baseline(record: QaRecord) -> str:
  """The trivial answer the demo is measured against: the context's first sentence."""
  return seq2seq.first_sentence(record.context)


def get_records(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """The QaRecords of `split` ('train' or 'eval') of data.source, capped at data.max_documents."""
  read = {'embedded': _embedded, 'tfds': _tfds}.get(data_cfg.source, _files)
  records = read(data_cfg, split)
  if not len(records):
    raise DataError(f'data: the {split} split of {data_cfg.source!r} has no questions; check data.path, '
                    'data.eval_path, data.eval_fraction or data.max_documents')
  if data_cfg.max_documents:
    records = Records(records.items[:data_cfg.max_documents], sources.sha256(records.fingerprint,
                                                                             data_cfg.max_documents))
  return records


# ---------------------------------------------------------------------------------------------------------- windows


def answer_tokens(spans: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
  """(first, last) index of the tokens whose character spans [n, 2] cover [start, end), or None when a window (its
  context tokens' `spans`) does not hold all of it."""
  if not len(spans) or start < spans[0, 0] or end > spans[-1, 1]:
    return None
  first = int(np.argmax(spans[:, 1] > start))
  covering = np.flatnonzero((spans[:, 0] < end) & (spans[:, 1] > spans[:, 0]))
  last = int(covering[-1]) if len(covering) else -1
  return (first, last) if first <= last else None


@dataclasses.dataclass(frozen=True)
class _Window:
  example: int  # index of its QaRecord
  ids: np.ndarray  # int32: the whole input, special tokens included
  context_start: int  # position of its first context token
  spans: np.ndarray  # int32 [n, 2]: character spans of its context tokens
  answer: tuple[int, int]  # start and end positions (NULL_POSITION twice: not in this window)


class QaFeatures(Sequence):
  """The windows of a split's questions (THE batch contract of data.task='qa'); item i -> dict of numpy arrays:

    inputs           int32 [seq_len]  the window's tokens, 0-padded
    segment_ids      int32 [seq_len]  1 = token, 0 = padding
    token_types      int32 [seq_len]  (BERT) 0 = [CLS] question [SEP], 1 = context [SEP]
    start_positions  int32 []         the answer's first token (NULL_POSITION: not in this window)
    end_positions    int32 []         its last token
    example_weight   float32 []       1.0 (0.0 marks eval padding)
    row              int32 []         i: where this window's outputs go back to (TaskEval)

  `offsets(i)` [seq_len, 2] holds each context token's character span in its record's context (-1 elsewhere),
  `example_of(i)` the record index.
  """

  def __init__(self, records: Records, tokenizer: tokenizer_lib.Tokenizer, config: ml_collections.ConfigDict):
    self.records, self.seq_len = records, config.seq_len
    self._bert = registry.get(config.model.type).class_summary == 'first'
    self._pad = tokenizer.pad_id
    self.num_truncated_questions = 0
    self._windows: list[_Window] = []
    tokenized = {}
    for index, record in enumerate(records):
      if record.context not in tokenized:
        ids, spans = tokenizer.encode_with_offsets(record.context)
        tokenized[record.context] = (ids, np.asarray(spans, np.int32).reshape(-1, 2))
      self._windows += self._cut(index, record, tokenizer, *tokenized[record.context], config.data)

  def _cut(self, index: int, record: QaRecord, tok, context_ids, spans, data_cfg) -> list[_Window]:
    """The windows of one record."""
    question = tok.encode(record.question)
    if len(question) > data_cfg.max_query_len:
      question, self.num_truncated_questions = question[:data_cfg.max_query_len], self.num_truncated_questions + 1
    head = [tok.cls_id] + question + [tok.sep_id] if self._bert else question + [tok.sep_id]
    room = self.seq_len - len(head) - 1
    answer = (record.starts[0], record.starts[0] + len(record.answers[0])) if record.answers else None
    windows, begin = [], 0
    while True:
      end = min(begin + room, len(context_ids))
      found = answer_tokens(spans[begin:end], *answer) if answer else None
      position = (len(head) + found[0], len(head) + found[1]) if found else (NULL_POSITION, NULL_POSITION)
      tail = [tok.sep_id] if self._bert else [tok.eos_id]
      ids = np.asarray(head + context_ids[begin:end] + tail, np.int32)
      windows.append(_Window(index, ids, len(head), spans[begin:end], position))
      if end >= len(context_ids):
        return windows
      begin = end - data_cfg.doc_stride

  def __len__(self) -> int:
    return len(self._windows)

  def example_of(self, i: int) -> int:
    """The index of the record window i belongs to."""
    return self._windows[i].example

  def offsets(self, i: int) -> np.ndarray:
    """int32 [seq_len, 2]: the character span of each context token of window i in its context, -1 elsewhere."""
    window = self._windows[i]
    out = np.full((self.seq_len, 2), -1, np.int32)
    out[window.context_start:window.context_start + len(window.spans)] = window.spans
    return out

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    window = self._windows[i]
    n = len(window.ids)
    example = {'inputs': np.pad(window.ids, (0, self.seq_len - n), constant_values=self._pad),
               'segment_ids': (np.arange(self.seq_len) < n).astype(np.int32),
               'start_positions': np.asarray(window.answer[0], np.int32),
               'end_positions': np.asarray(window.answer[1], np.int32),
               'example_weight': np.asarray(1.0, np.float32), 'row': np.asarray(i, np.int32)}
    if self._bert:
      positions = np.arange(self.seq_len)
      example['token_types'] = ((positions >= window.context_start) & (positions < n)).astype(np.int32)
    return example
