"""Objectives, by name. Each turns (model outputs, batch) into SUMS over the batch plus a denominator.

Sums (not means) make gradient accumulation exact: the train step divides by the denominator of the whole global
batch. A config picks objectives and weights (`config.objectives = {'mlm': 1.0, 'nsp': 1.0}`); the total loss is
sum_i weight_i * loss_sum_i / denominator_i, and each objective reports `<name>_loss`, `<name>_accuracy`, ...

To add one: write `sums(outputs, batch, config) -> {'loss': ..., ...}` and `denominator(batch) -> count`, register
an `Objective` below, add its name to the `objectives` of the model families whose outputs it reads
(lm/models/registry.py), and list it in a config's `objectives`. An objective that needs a second forward pass
with other dropout (contrastive) sets `views=2` and reads `outputs['second_view']`.
"""
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm import chunked_cross_entropy


class Objective(NamedTuple):
  """`sums(outputs, batch, config)` -> dict of per-batch sums with key 'loss'; `denominator(batch)` -> their count;
  `views`: forward passes (with different dropout) the objective needs. Eval-only extras: `eval_counts(outputs,
  batch)` -> arrays summed over the eval set, which `summarize(counts)` turns into metrics (e.g. F1)."""
  sums: Callable[[dict, dict, object], dict]
  denominator: Callable[[dict], jax.Array]
  views: int = 1
  eval_counts: Callable[[dict, dict], dict] | None = None
  summarize: Callable[[dict], dict] | None = None


def token_cross_entropy(logits, targets, weights) -> dict:
  """Summed weighted NLL and number of correct predictions: the target's logit is the largest (a tie counts as
  correct; comparing with the max costs one reduction less than an argmax over the vocabulary)."""
  logits = logits.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = (target_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return {'loss': jnp.sum(nll * weights), 'accuracy': jnp.sum(correct * weights)}


def lm_head_cross_entropy(outputs, targets, weights, config) -> dict:
  """`token_cross_entropy` of a model's vocabulary logits; with config.loss_chunk_size > 0 fused with the LM head
  over vocabulary chunks (lm/chunked_cross_entropy.py: outputs 'lm_hidden' and 'lm_table', no whole logits)."""
  chunk = config.get('loss_chunk_size', 0)
  if not chunk:
    return token_cross_entropy(outputs['logits'], targets, weights)
  hidden = outputs['lm_hidden']
  loss, correct = chunked_cross_entropy.chunked_cross_entropy(
      hidden.reshape(-1, hidden.shape[-1]), outputs['lm_table'], targets.reshape(-1), weights.reshape(-1), chunk)
  return {'loss': loss, 'accuracy': correct}


def clm_sums(outputs, batch, config) -> dict:
  """Causal LM: next-token prediction on every position whose target is in the same document."""
  return lm_head_cross_entropy(outputs, batch['targets'], batch['weights'], config)


def seq2seq_sums(outputs, batch, config) -> dict:
  """Encoder-decoder: cross-entropy of the decoder's logits against `targets` (teacher forcing), on the weighted
  target tokens; with config.z_loss > 0 also z_loss * log(Z)^2 per token (t5x's auxiliary loss keeping the
  softmax normaliser near 1), reported as 'z_loss'."""
  sums = token_cross_entropy(outputs['logits'], batch['targets'], batch['weights'])
  if config.z_loss:
    log_z = jax.nn.logsumexp(outputs['logits'].astype(jnp.float32), axis=-1)
    sums['z_loss'] = jnp.sum(config.z_loss * jnp.square(log_z) * batch['weights'])
    sums['loss'] = sums['loss'] + sums['z_loss']
  return sums


def mlm_sums(outputs, batch, config) -> dict:
  """Masked LM: predict the original token at each (gathered) masked position."""
  del config
  return token_cross_entropy(outputs['mlm_logits'], batch['mlm_targets'], batch['mlm_weights'])


def nsp_sums(outputs, batch, config) -> dict:
  """Next-sentence prediction: is segment B the continuation of A (label 0) or random (1)?"""
  del config
  return token_cross_entropy(outputs['nsp_logits'], batch['nsp_label'], jnp.ones(batch['nsp_label'].shape))


def contrastive_sums(outputs, batch, config) -> dict:
  """SimCSE (Gao et al. 2021): two dropout views of one example are positives, the rest of the batch negatives.

  Cosine similarities of the pooled [CLS] vectors over `config.contrastive_temperature`, cross-entropy towards the
  matching row. With gradient accumulation the negatives are those of the microbatch.
  """
  def normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  z1, z2 = normalize(outputs['pooled']), normalize(outputs['second_view']['pooled'])
  similarity = z1 @ z2.T / config.contrastive_temperature
  labels = jnp.arange(similarity.shape[0])
  return token_cross_entropy(similarity, labels, jnp.ones(labels.shape))


def classify_sums(outputs, batch, config) -> dict:
  """Sequence classification: cross-entropy of the class logits; padding examples (example_weight 0) count 0."""
  del config
  return token_cross_entropy(outputs['class_logits'], batch['label'], batch['example_weight'])


def span_sums(outputs, batch, config) -> dict:
  """Extractive QA: the mean of the start and end cross-entropies of each window over its tokens (padding
  excluded); 'accuracy' is the mean of start and end hits. Padding windows (example_weight 0) count 0."""
  del config
  tokens = batch['segment_ids'] != 0
  sums = [token_cross_entropy(jnp.where(tokens, outputs[f'{side}_logits'], -1e9), batch[f'{side}_positions'],
                              batch['example_weight']) for side in ('start', 'end')]
  return jax.tree.map(lambda start, end: (start + end) / 2, *sums)


def tag_sums(outputs, batch, config) -> dict:
  """Token classification: cross-entropy of the tag logits on the labelled sub-tokens (tag_weights)."""
  del config
  return token_cross_entropy(outputs['tag_logits'], batch['tags'], batch['tag_weights'])


def confusion_counts(outputs, batch) -> dict:
  """{'confusion': [true, predicted] counts} of the weighted examples of a batch."""
  logits = outputs['class_logits']
  num_labels = logits.shape[-1]
  predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_labels)
  actual = jax.nn.one_hot(batch['label'], num_labels) * batch['example_weight'][:, None]
  return {'confusion': actual.T @ predicted}


def f1_scores(counts: dict) -> dict:
  """accuracy, macro_f1 (mean over classes that occur in labels or predictions) and, for 2 classes, f1 of class 1."""
  confusion = np.asarray(counts['confusion'], np.float64)
  tp = np.diag(confusion)
  precision_denominator, recall_denominator = confusion.sum(0), confusion.sum(1)
  f1 = 2 * tp / np.maximum(precision_denominator + recall_denominator, 1e-12)
  present = (precision_denominator + recall_denominator) > 0
  out = {'accuracy': float(tp.sum() / max(confusion.sum(), 1e-12)),
         'macro_f1': float(f1[present].mean()) if present.any() else 0.0}
  if len(tp) == 2:
    out['f1'] = float(f1[1])
  return out


def _count_examples(batch) -> jax.Array:
  return jnp.asarray(batch['inputs'].shape[0], jnp.float32)


def _count_weighted_examples(batch) -> jax.Array:
  return jnp.maximum(jnp.sum(batch['example_weight']), 1.0)


def _count_weights(key: str):
  return lambda batch: jnp.maximum(jnp.sum(batch[key]), 1.0)


OBJECTIVES: dict[str, Objective] = {
    'clm': Objective(clm_sums, _count_weights('weights')),
    'seq2seq': Objective(seq2seq_sums, _count_weights('weights')),
    'mlm': Objective(mlm_sums, _count_weights('mlm_weights')),
    'nsp': Objective(nsp_sums, _count_examples),
    'contrastive': Objective(contrastive_sums, _count_examples, views=2),
    'classify': Objective(classify_sums, _count_weighted_examples, eval_counts=confusion_counts,
                          summarize=f1_scores),
    'span': Objective(span_sums, _count_weighted_examples),
    'tag': Objective(tag_sums, _count_weights('tag_weights')),
}
