"""Scoring (source, target) pairs with an encoder-decoder run (lm.evaluate --pairs_file): the teacher-forced NLL of
the target tokens (eos included), the same with each target given another pair's source (a model that ignores its
source scores the same there), and, from decoding each source, BLEU and ROUGE against the targets (text_metrics).

The pairs file is read like a seq2seq run's data (jsonl or csv/tsv with the run's data.source_key / target_key,
the run's data.task_prefix before each source, sources cut to seq_len and targets to data.target_len, counted).
"""
import functools
import math

import jax
import numpy as np

from lm import objectives
from lm.data import seq2seq
from lm.inference import seq2seq_decoding, text_metrics


def read_pairs(run, path: str) -> seq2seq.Seq2SeqExamples:
  """The file's pairs as the run's examples (all of the file; .csv / .tsv as csv, anything else as jsonl)."""
  data = run.config.data.copy_and_resolve_references()
  data.source = 'csv' if path.endswith(('.csv', '.tsv')) else 'jsonl'
  data.path = data.eval_path = path
  config = run.config.copy_and_resolve_references()
  config.data = data
  return seq2seq.Seq2SeqExamples(seq2seq.get_records(data, 'eval'), run.tokenizer, config)


@functools.partial(jax.jit, static_argnames='model')
def _sums(params, batch, *, model):
  logits = model.apply({'params': params}, batch)['logits']
  return objectives.token_cross_entropy(logits, batch['targets'], batch['weights'])['loss']


def _batches(examples, batch_size: int, sources=None):
  """Batches of the examples in order; with `sources` (an index per example), example i's encoder fields are those
  of example sources[i]."""
  for start in range(0, len(examples), batch_size):
    indices = range(start, min(start + batch_size, len(examples)))
    rows = [examples[i] for i in indices]
    batch = {k: np.stack([r[k] for r in rows]) for k in ('encoder_inputs', 'encoder_segment_ids', 'inputs',
                                                          'segment_ids', 'targets', 'weights')}
    if sources is not None:
      others = [examples[int(sources[i])] for i in indices]
      for key in ('encoder_inputs', 'encoder_segment_ids'):
        batch[key] = np.stack([r[key] for r in others])
    yield batch


def _other_source_loss(run, examples, batch_size: int) -> float:
  """The target loss when each pair's source is the next pair's: how much of `loss` the model owes to reading its
  source (about equal to `loss` when the decoder ignores the encoder)."""
  total, tokens = 0.0, 0.0
  for batch in _batches(examples, batch_size, np.roll(np.arange(len(examples)), -1)):
    with jax.set_mesh(run.mesh):
      total += float(_sums(run.params, batch, model=run.model))
    tokens += float(batch['weights'].sum())
  return total / max(tokens, 1.0)


def score_pairs(run, path: str, *, batch_size: int = 8, num_beams: int = 1, max_new_tokens: int = 0) -> dict:
  """{'loss', 'perplexity', 'other_source_loss', 'tokens', 'pairs', 'truncated_targets', 'bleu', 'rouge1', 'rouge2',
  'rougeLsum'}: each batch of pairs is scored (teacher forcing) and its sources decoded; other_source_loss scores
  each target against the next pair's source instead (see _other_source_loss)."""
  examples = read_pairs(run, path)
  total, tokens, predictions = 0.0, 0.0, []
  for batch in _batches(examples, batch_size):
    with jax.set_mesh(run.mesh):
      total += float(_sums(run.params, batch, model=run.model))
    tokens += float(batch['weights'].sum())
    predictions += seq2seq_decoding.generate_texts(
        run.model, run.params, run.tokenizer,
        seq2seq_decoding.sources_of(batch['encoder_inputs'], batch['encoder_segment_ids']),
        max_new_tokens=max_new_tokens or examples.target_len, num_beams=num_beams, mesh=run.mesh,
        mesh_config=run.config.mesh)
  references = [examples.target_text(i) for i in range(len(examples))]
  loss = total / max(tokens, 1.0)
  return {'loss': loss, 'perplexity': math.exp(min(loss, 700.0)),
          'other_source_loss': _other_source_loss(run, examples, batch_size) if len(examples) > 1 else loss,
          'tokens': int(tokens), 'pairs': len(examples),
          'truncated_targets': examples.num_truncated_targets,
          **text_metrics.all_metrics(predictions, references)}
