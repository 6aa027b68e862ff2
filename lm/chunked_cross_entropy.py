"""The LM head and its cross-entropy fused over vocabulary chunks: the [tokens, vocab] logits are never held whole.

  loss_sum, correct = chunked_cross_entropy(hidden [N, d], table [V, d], targets [N], weights [N], chunk_size)

equals `objectives.token_cross_entropy(hidden @ table.T, targets, weights)` (values within float tolerance; the
gradients w.r.t. hidden and table too). `table` is the output projection in the embedding's layout: the tied token
table itself, or an untied head's kernel transposed. The forward pass scans the chunks with an online log-sum-exp
(flash-style: running max and rescaled sum) and keeps only the per-token log-normaliser; the backward pass
recomputes each chunk's logits and adds its share of both gradients. It costs one more pass over the head's matmul
(4 instead of 3) and saves the logits, their softmax and their gradient: 3 x tokens x vocab floats, the step's
largest buffers at GPT-2's 50k vocabulary (config `loss_chunk_size`, measured in WORKSPACE.md, Benchmarks).

Chunks are strided (chunk j holds vocabulary rows j, j + n, j + 2n, ...) and read in place from the table: a
vocabulary sharded over the mesh's 'tensor' axis stays sharded in every chunk. The chunk count divides the
vocabulary when it can (`num_chunks`); otherwise the table is padded with rows that never win.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

_NEG = -1e30  # the logit of a padding column: exp() of it is 0 and it is never the max of a real row


def num_chunks(vocab: int, chunk_size: int) -> int:
  """Chunks of at most about `chunk_size` columns: the first count from ceil(vocab / chunk_size) up to twice it
  that divides the vocabulary (no padding, e.g. 50304 = 16 x 3144 for 4096), else ceil(vocab / chunk_size)."""
  least = max(1, -(-vocab // chunk_size))
  return next((n for n in range(least, 2 * least + 1) if vocab % n == 0), least)


def _chunks(table, chunk_size: int):
  """table [V, d] -> ([c, n, d] view, n): row v of the vocabulary is chunk v % n, slot v // n."""
  vocab, d = table.shape
  n = num_chunks(vocab, chunk_size)
  c = -(-vocab // n)
  padded = table if n * c == vocab else jnp.pad(table, ((0, n * c - vocab), (0, 0)))
  return padded.reshape(c, n, d), n


def _chunk_logits(hidden, w, j, n: int, vocab: int):
  """float32 logits [N, c] of chunk j (rows w [c, d]), padding rows at _NEG."""
  logits = jnp.einsum('nd,cd->nc', hidden, w.astype(hidden.dtype), preferred_element_type=jnp.float32)
  real = (jnp.arange(w.shape[0]) * n + j) < vocab
  return jnp.where(real[None, :], logits, _NEG)


def _forward(hidden, table, targets, chunk_size: int):
  """(log-normaliser [N], target logit [N], max logit [N]) of hidden @ table, one chunk at a time."""
  chunks, n = _chunks(table, chunk_size)
  vocab = table.shape[0]
  rows = hidden.shape[0]

  def step(carry, j):
    running_max, running_sum, target_logit = carry
    w = jax.lax.dynamic_index_in_dim(chunks, j, axis=1, keepdims=False)
    logits = _chunk_logits(hidden, w, j, n, vocab)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
    running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), -1)
    here = (targets % n) == j
    picked = jnp.take_along_axis(logits, (targets // n)[:, None], axis=-1)[:, 0]
    return (new_max, running_sum, jnp.where(here, picked, target_logit)), None

  init = (jnp.full((rows,), _NEG, jnp.float32), jnp.zeros((rows,), jnp.float32), jnp.zeros((rows,), jnp.float32))
  (row_max, row_sum, target_logit), _ = jax.lax.scan(step, init, jnp.arange(n))
  return row_max + jnp.log(row_sum), target_logit, row_max


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_cross_entropy(hidden, table, targets, weights, chunk_size: int):
  """(sum of weights x NLL, sum of weights x [target logit is the max]) of the logits hidden @ table, computed
  `chunk_size` vocabulary columns at a time (see the module docstring)."""
  log_z, target_logit, row_max = _forward(hidden, table, targets, chunk_size)
  return _sums(log_z, target_logit, row_max, weights)


def _sums(log_z, target_logit, row_max, weights):
  weights = weights.astype(jnp.float32)
  correct = (target_logit >= row_max).astype(jnp.float32)
  return jnp.sum((log_z - target_logit) * weights), jnp.sum(correct * weights)


def _fwd(hidden, table, targets, weights, chunk_size):
  log_z, target_logit, row_max = _forward(hidden, table, targets, chunk_size)
  return _sums(log_z, target_logit, row_max, weights), (hidden, table, targets, weights, log_z, target_logit)


def _bwd(chunk_size, residuals, cotangents):
  """d(loss)/d(logits) = weight x (softmax - one-hot), chunk by chunk: its share of d hidden (accumulated) and of
  d table (one chunk's rows, written in place); accuracy has no gradient."""
  hidden, table, targets, weights, log_z, target_logit = residuals
  g_loss = cotangents[0]
  chunks, n = _chunks(table, chunk_size)
  vocab = table.shape[0]
  scale = (weights.astype(jnp.float32) * g_loss)[:, None]

  def step(carry, j):
    d_hidden, d_chunks = carry
    w = jax.lax.dynamic_index_in_dim(chunks, j, axis=1, keepdims=False)
    probs = jnp.exp(_chunk_logits(hidden, w, j, n, vocab) - log_z[:, None])
    one_hot = ((targets % n) == j)[:, None] & (jnp.arange(w.shape[0])[None, :] == (targets // n)[:, None])
    d_logits = ((probs - one_hot) * scale).astype(hidden.dtype)
    d_hidden = d_hidden + jnp.dot(d_logits, w.astype(hidden.dtype), preferred_element_type=jnp.float32)
    d_w = jnp.einsum('nc,nd->cd', d_logits, hidden, preferred_element_type=jnp.float32).astype(table.dtype)
    return (d_hidden, jax.lax.dynamic_update_index_in_dim(d_chunks, d_w, j, axis=1)), None

  init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(chunks.shape, table.dtype))
  (d_hidden, d_chunks), _ = jax.lax.scan(step, init, jnp.arange(n))
  d_table = d_chunks.reshape(-1, table.shape[1])[:vocab]
  d_weights = (log_z - target_logit) * g_loss
  return (d_hidden.astype(hidden.dtype), d_table, np.zeros(targets.shape, jax.dtypes.float0),
          d_weights.astype(weights.dtype))


chunked_cross_entropy.defvjp(_fwd, _bwd)
