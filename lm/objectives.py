"""Objectives, by name. Each turns (model outputs, batch) into SUMS over the batch plus a denominator.

Sums (not means) make gradient accumulation exact: the train step divides by the denominator of the whole global
batch. A config picks objectives and weights (`config.objectives = {'clm': 1.0}`); the total loss is
sum_i weight_i * loss_sum_i / denominator_i, and each objective reports `<name>_loss`, `<name>_accuracy`, ...
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Objective(NamedTuple):
  """`sums(outputs, batch)` -> dict of per-batch sums, with key 'loss'; `denominator(batch)` -> their count."""
  sums: Callable[[jax.Array, dict], dict]
  denominator: Callable[[dict], jax.Array]


def token_cross_entropy(logits, targets, weights) -> dict:
  """Summed weighted token NLL and number of correct argmax predictions."""
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {'loss': jnp.sum(nll * weights), 'accuracy': jnp.sum(correct * weights)}


def clm_sums(logits, batch) -> dict:
  """Causal LM: next-token prediction on every position whose target is in the same document."""
  return token_cross_entropy(logits, batch['targets'], batch['weights'])


def clm_denominator(batch) -> jax.Array:
  return jnp.maximum(jnp.sum(batch['weights']), 1.0)


OBJECTIVES: dict[str, Objective] = {
    'clm': Objective(clm_sums, clm_denominator),
}
