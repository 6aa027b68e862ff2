"""From config to batches: tokenize each split once (cached), cut into examples, and iterate with grain.

  tokenizer, train_rows, eval_rows = pipeline.prepare(config)
  it = pipeline.train_iterator(config, train_rows, start_step=s)  # grain DatasetIterator: next(it) = step s+1
  eval_batches = pipeline.eval_batches(config, eval_rows)  # the same list every evaluation

Each batch is a dict of numpy arrays whose leading dimension is this process's share of config.batch_size: packed
rows (`packing.PackedSequences`), or BERT sentence pairs with MLM masks (`bert.SentencePairs`), as the model family's
`pretrain_examples` says (lm/models/registry.py: plain records; data never imports model code). A BERT example
is drawn by grain's random_map from (seed, global example index) before the batch is
split across processes, so it does not depend on the process count, and an epoch repeat draws fresh pairs and masks.
"""
import pathlib

import grain
import jax
import ml_collections
import numpy as np

from lm.data import (
  bert,
  classification,
  instructions,
  mixture,
  packing,
  qa,
  seq2seq,
  sources,
  span_corruption,
  store,
  store_builder,
  tagging,
  tokenizer as tokenizer_lib,
)
from lm.errors import DataError
from lm.models import registry

# what prepare() returns per split
Examples = (packing.PackedSequences | bert.SentencePairs | span_corruption.SpanCorruptionExamples
            | classification.ClassificationExamples | instructions.InstructionExamples | seq2seq.Seq2SeqExamples
            | qa.QaFeatures | tagging.TagExamples)
_RANDOM_EXAMPLES = (bert.SentencePairs, span_corruption.SpanCorruptionExamples)  # made by grain's random_map


def _layout(config: ml_collections.ConfigDict) -> str:
  """The family's pretraining example layout: 'packed', 'sentence_pairs' or 'span_corruption'."""
  return registry.get(config.model.type).pretrain_examples


def _rows(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer, root: pathlib.Path,
          content: dict, split: str) -> Examples:
  """The rows (or BERT pairs) of one split of a complete token store."""
  tokens, starts = store.open_split(root, content, split)
  if len(tokens) < config.seq_len + 1:
    documents = content['splits'][split]['num_documents']
    raise DataError(f'data: the {split} split has {len(tokens)} tokens ({documents} documents), fewer than one '
                    f'row of seq_len+1={config.seq_len + 1}; lower --config.seq_len or give the split more data '
                    '(data.eval_fraction, data.max_documents, data.path)')
  if _layout(config) == 'sentence_pairs':
    return bert.SentencePairs.from_config(config, tokenizer, tokens, starts)
  if _layout(config) == 'span_corruption':
    examples = span_corruption.SpanCorruptionExamples.from_config(config, tokenizer, tokens)
    if not len(examples):
      raise DataError(f'data: the {split} split has {len(tokens)} tokens, fewer than one span-corruption example '
                      f'of {examples.raw_tokens_length}; lower --config.seq_len or give the split more data')
    return examples
  return packing.PackedSequences(tokens, starts, config.seq_len, config.data.packing)


def _prepare_classify(config: ml_collections.ConfigDict):
  """Labelled records -> tokenized classification examples; resolves model.num_labels=0 from the data."""
  train, eval_ = (classification.get_records(config.data, split) for split in ('train', 'eval'))
  texts = sources.TextView(train, lambda r: f'{r[0]}\n{r[1]}' if r[1] else r[0], train.fingerprint)
  tokenizer = tokenizer_lib.get_tokenizer(config, texts)
  num_labels = max(train.num_labels, eval_.num_labels)
  if config.model.num_labels == 0:
    config.model.num_labels = num_labels
    names = f' ({", ".join(train.label_names)})' if train.label_names else ''
    if jax.process_index() == 0:
      print(f'model.num_labels={num_labels} from the data{names}', flush=True)
  elif config.model.num_labels < num_labels:
    raise DataError(f'model.num_labels={config.model.num_labels} but the data has labels up to {num_labels - 1}; '
                    f'set --config.model.num_labels={num_labels} (or 0 to take it from the data)')
  return tokenizer, *(classification.ClassificationExamples(r, tokenizer, config) for r in (train, eval_))


def _prepare_sft(config: ml_collections.ConfigDict):
  """Instruction records -> rows with the loss on response tokens."""
  train, eval_ = (instructions.get_records(config.data, split) for split in ('train', 'eval'))
  tokenizer = tokenizer_lib.get_tokenizer(config, sources.TextView(train, ''.join, train.fingerprint))
  return tokenizer, *(instructions.InstructionExamples(r, tokenizer, config.seq_len) for r in (train, eval_))


def _prepare_seq2seq(config: ml_collections.ConfigDict):
  """(source, target) records -> encoder-decoder examples; reports how many sources / targets were truncated."""
  train, eval_ = (seq2seq.get_records(config.data, split) for split in ('train', 'eval'))
  texts = sources.TextView(train, lambda r: f'{r[0]}\n{r[1]}', train.fingerprint)
  tokenizer = tokenizer_lib.get_tokenizer(config, texts)
  examples = [seq2seq.Seq2SeqExamples(r, tokenizer, config) for r in (train, eval_)]
  if jax.process_index() == 0:
    for name, e in zip(('train', 'eval'), examples):
      print(f'seq2seq {name}: {len(e)} pairs; {e.num_truncated_sources} sources truncated to seq_len={e.seq_len}, '
            f'{e.num_truncated_targets} targets to data.target_len={e.target_len}', flush=True)
  return tokenizer, *examples


def _prepare_qa(config: ml_collections.ConfigDict):
  """Question-answering records -> windows of (question, context) tokens; reports windows and cut questions."""
  train, eval_ = (qa.get_records(config.data, split) for split in ('train', 'eval'))
  tokenizer = tokenizer_lib.get_tokenizer(config, train.texts())
  features = [qa.QaFeatures(r, tokenizer, config) for r in (train, eval_)]
  if jax.process_index() == 0:
    for name, records, f in zip(('train', 'eval'), (train, eval_), features):
      print(f'qa {name}: {len(records)} questions in {len(f)} windows of seq_len={config.seq_len}; '
            f'{f.num_truncated_questions} questions cut to data.max_query_len={config.data.max_query_len}', flush=True)
  return tokenizer, *features


def _prepare_tag(config: ml_collections.ConfigDict):
  """Tagged sentences -> tokenized examples; fills model.num_labels and data.tag_names from the data when unset
  (they are saved with the run), and reports sentences cut at seq_len."""
  train, eval_ = (tagging.get_records(config.data, split) for split in ('train', 'eval'))
  names = train.tag_names
  if not config.data.tag_names:
    config.data.tag_names = ','.join(names)
  if config.model.num_labels == 0:
    config.model.num_labels = len(names)
  elif config.model.num_labels != len(names):
    raise DataError(f'model.num_labels={config.model.num_labels} but the data has {len(names)} tags '
                    f'({", ".join(names)}); set --config.model.num_labels={len(names)} (or 0 to take it from the data)')
  tokenizer = tokenizer_lib.get_tokenizer(config, train.texts())
  examples = [tagging.TagExamples(r, tokenizer, config) for r in (train, eval_)]
  if jax.process_index() == 0:
    for name, e in zip(('train', 'eval'), examples):
      print(f'tag {name}: {len(e)} sentences, {len(names)} tags; {e.num_truncated} cut at seq_len={config.seq_len}',
            flush=True)
  return tokenizer, *examples


def _prepare_mixture(config: ml_collections.ConfigDict):
  """Every source of data.mixture in its own store, all with one tokenizer (store_builder.build_all)."""
  names, train, eval_ = [], [], []
  for name, built in store_builder.build_all(config):
    names.append(name)
    train.append(_rows(config, built.tokenizer, built.root, built.content, 'train'))
    eval_.append(_rows(config, built.tokenizer, built.root, built.content, 'eval'))
  weights = [p.weight for p in mixture.components(config)]
  return built.tokenizer, mixture.MixedRows(names, weights, train), mixture.MixedRows(names, weights, eval_)


_RECORD_TASKS = {'classify': _prepare_classify, 'sft': _prepare_sft, 'seq2seq': _prepare_seq2seq, 'qa': _prepare_qa,
                 'tag': _prepare_tag}  # data.task -> its preparation from records (pretraining reads documents)


def prepare(config: ml_collections.ConfigDict) -> tuple[tokenizer_lib.Tokenizer, Examples, Examples]:
  """Returns (tokenizer, train examples, eval examples), tokenizing each split once into the cache.

  data.task 'classify', 'sft', 'seq2seq', 'qa' and 'tag' read records instead of documents (see `classification`,
  `instructions`, `seq2seq`, `qa`, `tagging`); 'classify' and 'tag' set model.num_labels if it is 0.

  The examples are `packing.PackedSequences` rows, or `bert.SentencePairs` anchors for a family whose
  pretrain_examples is 'sentence_pairs' (the same cached token stream either way).

  The token streams come from the config's token store (data.store, else a cache entry; lm/data/store.py),
  built here if it is not complete yet (`python -m lm.prepare` builds a big one ahead, in parallel).
  """
  if config.data.task in _RECORD_TASKS:
    return _RECORD_TASKS[config.data.task](config)
  if config.data.mixture:
    return _prepare_mixture(config)
  built = store_builder.build(config)
  train, eval_ = (_rows(config, built.tokenizer, built.root, built.content, split) for split in ('train', 'eval'))
  return built.tokenizer, train, eval_


def prepare_eval(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer) -> Examples:
  """The eval examples of a pretraining config with a given tokenizer (for the forgetting monitor of a fine-tune)."""
  built = store_builder.build(config, tokenizer=tokenizer, splits=('eval',))
  return _rows(config, tokenizer, built.root, built.content, 'eval')


def _make_examples(ds: grain.MapDataset, rows: Examples, seed: int) -> grain.MapDataset:
  """BERT / span-corruption anchors -> examples by a random map seeded by (seed, index in `ds`); packed rows and
  records are examples already."""
  if isinstance(rows, _RANDOM_EXAMPLES):
    return ds.random_map(rows.make_example, seed=seed)
  return ds


def _local_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
  if config.batch_size % process_count:
    raise DataError(f'batch_size: {config.batch_size} does not divide by the {process_count} processes; set '
                    f'--config.batch_size to a multiple of {process_count}')
  return config.batch_size // process_count


def _endless_examples(config: ml_collections.ConfigDict, rows: Examples, seed: int) -> grain.MapDataset:
  """The examples of `rows`, shuffled with `seed` (if data.shuffle) and reshuffled every epoch, without end."""
  ds = grain.MapDataset.source(rows)
  if config.data.shuffle:
    ds = ds.shuffle(seed=seed)
  return _make_examples(ds.repeat(None), rows, seed)


def train_iterator(config: ml_collections.ConfigDict, rows: Examples, process_index: int | None = None,
                   process_count: int | None = None, start_step: int = 0) -> grain.DatasetIterator:
  """An endless iterator over this process's training batches from global step `start_step` + 1 on.

  Rows are shuffled (if data.shuffle) with config.seed and reshuffled every epoch; global step s takes rows
  s*B .. s*B+B-1 of that order (B = batch_size) and process p gets every process_count-th of them, so the
  processes' batches of a step are disjoint and together are the one-process batch. BERT examples are made from
  their anchors by `rows.make_example` with an rng seeded by (config.seed, position in the repeated order), so
  every epoch has new pairs and masks, and a resumed iterator reproduces them. The global batch of a step is a
  function of (seed, step) alone, so a run resumed with another process count continues with the same batches.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local_batch = _local_batch_size(config, process_count)
  if isinstance(rows, mixture.MixedRows):  # each source shuffled and repeated on its own, then mixed by weight
    parts = [_endless_examples(config, part, config.seed + k) for k, part in enumerate(rows.parts)]
    ds = grain.MapDataset.mix(parts, rows.weights)
  else:
    ds = _endless_examples(config, rows, config.seed)
  ds = ds[process_index::process_count].batch(local_batch, drop_remainder=True)
  ds = ds[start_step:] if start_step else ds
  options = grain.ReadOptions(num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch)
  return iter(ds.to_iter_dataset(options))


_WEIGHT_KEYS = ('weights', 'example_weight', 'tag_weights')  # zeroed in the padding examples of a whole-split eval


class _PaddedTo:
  """`rows` followed by copies of rows[0] with zero weights, up to `total` examples."""

  def __init__(self, rows: Examples, total: int):
    self._rows, self._total = rows, total

  def __len__(self) -> int:
    return self._total

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if i < len(self._rows):
      return self._rows[i]
    return {k: np.zeros_like(v) if k in _WEIGHT_KEYS else v for k, v in self._rows[0].items()}


def eval_batches(config: ml_collections.ConfigDict, rows: Examples,
                 process_index: int | None = None, process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """The eval batches, the same list every call so evaluations are comparable.

  eval_steps > 0: the first eval_steps batches of the eval rows in order (wrapping around a small split).
  eval_steps = 0: every eval row once, the last batch filled with zero-weight copies. Sliced across processes like
  `train_iterator` (BERT examples use the fixed seed config.seed + 1: the same pairs and masks every evaluation).
  """
  if isinstance(rows, mixture.MixedRows):  # every source's batches, one after another
    return [b for part in rows.parts for b in eval_batches(config, part, process_index, process_count)]
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  local_batch = _local_batch_size(config, process_count)
  if config.eval_steps:
    num_batches = config.eval_steps
    ds = _make_examples(grain.MapDataset.source(rows).repeat(None), rows, config.seed + 1)
  else:
    num_batches = -(-len(rows) // config.batch_size)
    ds = grain.MapDataset.source(_PaddedTo(rows, num_batches * config.batch_size))
  ds = ds[process_index::process_count]
  ds = ds.batch(local_batch, drop_remainder=True)
  return [ds[step] for step in range(num_batches)]


def eval_sets(config: ml_collections.ConfigDict, rows: Examples, process_index: int | None = None,
              process_count: int | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
  """{'': the eval batches} or, for a data.mixture, {source name: that source's eval batches}."""
  if isinstance(rows, mixture.MixedRows):
    return {name: eval_batches(config, part, process_index, process_count)
            for name, part in zip(rows.names, rows.parts)}
  return {'': eval_batches(config, rows, process_index, process_count)}


def batch_spec(config: ml_collections.ConfigDict) -> dict:
  """{key: jax.ShapeDtypeStruct} of one global pretraining (or SFT) batch: the keys, shapes and dtypes the real
  pipeline yields, taken from its own example maker over a small synthetic stream (no corpus or tokenizer is
  read). For ahead-of-time compilation (lm.aot). SFT rows (instructions.py) carry the keys of packed LM rows."""
  if config.data.task not in ('pretrain', 'sft'):
    raise DataError(f"data.task={config.data.task!r}: batch shapes without data exist for 'pretrain' and 'sft' only")
  length = 4 * (config.seq_len + 1)
  tokens = np.arange(length, dtype=np.int32) % (config.model.vocab_size - tokenizer_lib.NUM_SPECIAL_IDS) \
      + tokenizer_lib.NUM_SPECIAL_IDS
  starts = np.array([0, length // 2], np.int64)
  if _layout(config) == 'span_corruption':
    data = config.data
    rows = span_corruption.SpanCorruptionExamples(
        np.resize(tokens, 4 * length), config.seq_len, vocab_size=config.model.vocab_size,
        num_sentinels=data.num_sentinels, noise_density=data.noise_density,
        mean_noise_span_length=data.mean_noise_span_length)
    example = rows.make_example(0, np.random.default_rng(0))
  elif _layout(config) == 'sentence_pairs':
    data = config.data
    rows = bert.SentencePairs(tokens, starts, config.seq_len, vocab_size=config.model.vocab_size,
                              mask_prob=data.mask_prob, max_predictions=data.max_predictions_per_seq,
                              nsp_random_prob=data.nsp_random_prob, short_seq_prob=data.short_seq_prob)
    example = rows.make_example(0, np.random.default_rng(0))
  else:
    example = packing.PackedSequences(tokens, starts, config.seq_len, config.data.packing)[0]
  return {key: jax.ShapeDtypeStruct((config.batch_size, *np.shape(value)), np.asarray(value).dtype)
          for key, value in example.items()}
