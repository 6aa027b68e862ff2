"""Scoring a text with a loaded run (lm.evaluate): windows over long texts, next-token NLL for decoders, MLM loss at
deterministic masked positions for encoders, and the token-head logits of the whole text.

Decoders score every token after the first. A text longer than the context (model.max_len) is cut into windows of
that length that advance by `stride` tokens (default max_len - 1: each window starts at the previous one's last token,
so every token is predicted exactly once; a smaller stride gives predictions more context).
Encoders see [CLS] piece [SEP] windows of max_len. k = round(1 / data.mask_prob) masked copies of each window replace
the text tokens at positions = r (mod k), r = 0..k-1, with [MASK], so every text token is masked and scored exactly
once (a pseudo-perplexity).
The logits are those of the unmasked tokenized text, [len(tokens), vocab]: next-token logits for a decoder (row i
predicts token i+1), MLM-head logits for an encoder ([CLS] and [SEP] rows included); each row comes from the window
that scores it.
"""
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UsageError
from lm.models import registry
from lm.parallel import sharding

_ROUNDING = 16  # rows are padded to a multiple of this length: few distinct shapes, few compiles


class Rows(NamedTuple):
  """Model inputs cut from the tokenized text, and what to score in them."""
  tokens: list  # per row: int32 token ids (at most max_len)
  owner: list  # per row: int [len]: the text position whose logits this slot gives for the dump, or -1
  targets: list  # per row: int [len]: the token this slot is scored against (unused where weight is 0)
  weights: list  # per row: float [len]: 1 where the slot is scored


def tokenize(run, text: str) -> 'np.ndarray':
  """The text's token ids: the tokenizer's default encoding, wrapped in [CLS] ... [SEP] for an encoder."""
  encoder = not registry.get(run.config.model.type).causal
  return np.asarray(run.tokenizer.encode_default(text, encoder=encoder), np.int32)


def causal_rows(ids, max_len: int, stride: int) -> Rows:
  """Windows ids[begin:begin + max_len], begin = 0, stride, ...; each scores the targets the earlier ones did not."""
  rows = Rows([], [], [], [])
  n, begin, scored_to = len(ids), 0, 1  # targets [1, scored_to) are done
  while True:
    end = min(begin + max_len, n)
    window = ids[begin:end]
    positions = np.arange(begin, end)
    owned = (positions >= scored_to - 1) & ((positions < end - 1) | (end == n))
    rows.tokens.append(window)
    rows.owner.append(np.where(owned, positions, -1))
    rows.targets.append(np.append(window[1:], 0))
    rows.weights.append((owned & (positions < n - 1)).astype(np.float32))
    if end == n:
      return rows
    scored_to, begin = end, begin + stride


def masked_rows(ids, max_len: int, mask_id: int, passes: int) -> Rows:
  """[CLS] piece [SEP] windows of ids (which is [CLS] text [SEP]), each repeated `passes` times with every
  passes-th text token replaced by [MASK]; the first copy of each window also gives the dump's logits, unmasked."""
  rows = Rows([], [], [], [])
  cls, text, sep = ids[:1], ids[1:-1], ids[-1:]
  piece = max_len - 2
  for start in range(0, max(len(text), 1), piece):
    window = np.concatenate([cls, text[start:start + piece], sep])
    positions = np.concatenate([[0], np.arange(start, start + len(window) - 2) + 1, [len(ids) - 1]])
    first, last = start == 0, start + piece >= len(text)
    dump_owner = np.where((positions > 0) & (positions < len(ids) - 1) | (positions == 0) & first
                          | (positions == len(ids) - 1) & last, positions, -1)
    rows.tokens.append(window)  # unmasked, for the dump only
    rows.owner.append(dump_owner)
    rows.targets.append(window)
    rows.weights.append(np.zeros(len(window), np.float32))
    for r in range(passes):
      chosen = (positions > 0) & (positions < len(ids) - 1) & ((positions - 1) % passes == r)
      rows.tokens.append(np.where(chosen, mask_id, window))
      rows.owner.append(np.full(len(window), -1))
      rows.targets.append(window)
      rows.weights.append(chosen.astype(np.float32))
  return rows


@functools.partial(jax.jit, static_argnames=('model', 'logits_key', 'with_logits', 'rules'))
def _score(params, batch, targets, weights, *, model, logits_key: str, with_logits: bool, rules: tuple):
  """(sum of weighted NLL, sum of weights, logits [B, T, V] or None) of one batch of rows."""
  with nn.logical_axis_rules(rules):
    logits = model.apply({'params': params}, batch)[logits_key]
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum(weights), logits if with_logits else None


def _pad(rows: Rows, indices: list, size: int, length: int, pad_id: int) -> dict:
  """Rows `indices` as arrays [size, length]; missing rows and the tail of short rows are padding (weight 0)."""
  out = {'tokens': np.full((size, length), pad_id, np.int32), 'owner': np.full((size, length), -1),
         'targets': np.zeros((size, length), np.int32), 'weights': np.zeros((size, length), np.float32),
         'segment_ids': np.zeros((size, length), np.int32)}
  for slot, index in enumerate(indices):
    n = len(rows.tokens[index])
    for field in ('tokens', 'owner', 'targets', 'weights'):
      out[field][slot, :n] = getattr(rows, field)[index]
    out['segment_ids'][slot, :n] = 1
  return out


def _rows(run, ids, stride: int | None, with_logits: bool) -> tuple[Rows, str, str, int]:
  """(rows, name of the logits output, objective name, number of windows) for the run's model type."""
  max_len = run.model.cfg.max_len
  if registry.get(run.config.model.type).causal:
    stride = max_len - 1 if stride is None else stride
    if not 1 <= stride <= max_len - 1:
      raise UsageError(f'--stride={stride}: must be in [1, {max_len - 1}] (model.max_len - 1)')
    if len(ids) < 2:
      raise UsageError(f'the text has {len(ids)} token(s); a decoder needs at least 2 to predict one')
    rows = causal_rows(ids, max_len, stride)
    return rows, 'logits', 'clm', len(rows.tokens)
  if len(ids) < 3:
    raise UsageError('the text is empty: nothing to mask and score')
  passes = max(1, round(1 / run.config.data.mask_prob))
  rows = masked_rows(ids, max_len, run.tokenizer.mask_id, passes)
  if not with_logits:  # the unmasked copies serve only the dump
    keep = [i for i, w in enumerate(rows.weights) if w.any()]
    rows = Rows(*([field[i] for i in keep] for field in rows))
  return rows, 'mlm_logits', 'mlm', -(-(len(ids) - 2) // (max_len - 2))


def score(run, ids, *, stride: int | None = None, batch_size: int = 8, with_logits: bool = False):
  """({'loss', 'perplexity', 'tokens', 'objective', 'windows'}, logits [len(ids), vocab] float32 or None) of token
  ids (see `tokenize`) under a workdir.LoadedRun. Call it under `jax.set_mesh(run.mesh)`."""
  rows, logits_key, objective, windows = _rows(run, ids, stride, with_logits)
  length = min(-(-max(len(t) for t in rows.tokens) // _ROUNDING) * _ROUNDING, run.model.cfg.max_len)
  size = -(-batch_size // sharding.data_parallel_size(run.mesh)) * sharding.data_parallel_size(run.mesh)
  dump = np.zeros((len(ids), run.model.cfg.vocab_size), np.float32) if with_logits else None
  total, count = 0.0, 0.0
  for start in range(0, len(rows.tokens), size):
    arrays = _pad(rows, list(range(start, min(start + size, len(rows.tokens)))), size, length, run.tokenizer.pad_id)
    batch = {'inputs': arrays['tokens'], 'segment_ids': arrays['segment_ids']}
    if not registry.get(run.config.model.type).causal:
      batch['token_types'] = np.zeros_like(arrays['tokens'])
    nll, weight, logits = _score(run.params, batch, arrays['targets'], arrays['weights'], model=run.model,
                                 logits_key=logits_key, with_logits=with_logits,
                                 rules=sharding.logical_rules(run.config.mesh))
    total, count = total + float(nll), count + float(weight)
    if with_logits:
      owned = arrays['owner'] >= 0
      dump[arrays['owner'][owned]] = sharding.to_host(logits)[owned]
  loss = total / count
  result = {'loss': loss, 'perplexity': math.exp(loss) if loss < 700 else math.inf, 'tokens': int(count),
            'objective': objective, 'windows': windows}
  return result, dump
