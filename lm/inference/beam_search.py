"""Beam search over any autoregressive model with a cache, compiled as one lax.while_loop of fixed shapes.

The model enters through two functions: `step_fn(cache, tokens [B*K, 1], step) -> (logits [B*K, V], cache)` runs
one token per beam (`step` = tokens generated before it, an int32 scalar), and `reorder(cache, rows [B*K])` makes
row r of the new cache a copy of row rows[r] of the old one (default `reorder_cache`). Nothing here knows a model
family, so an encoder-decoder model reuses it with its own step_fn (cross-attention keys in the cache are reordered
like the rest; they are the same in every beam of a row).

The semantics are Hugging Face transformers' `_beam_search` (5.x) with early_stopping=False, do_sample=False and one
EOS id; K = num_beams:
- beam 0 of each row starts at score 0, the others at -1e9 (so the first step expands one beam only);
- each step takes the top 2K of the K*V continuations by summed log-probability (log_softmax in float32);
- a candidate ending in EOS (or reaching max_new_tokens) is a finished hypothesis only if it ranks within the first
  K of those 2K, with score sum_logprobs / generated_length ** length_penalty, where generated_length counts the new
  tokens including the EOS and never the prompt (transformers 5.24: `cur_len + 1 - decoder_prompt_len`); the
  finished set keeps the K best;
- the K best candidates not finished run on;
- a row is closed once all K finished slots are filled and its best running score / current generated length **
  length_penalty is no better than its worst finished score (HF's early_stopping=False heuristic); a closed row
  accepts no new hypothesis, and the loop ends when every row is closed or after max_new_tokens steps;
- the answer of a row is its best finished hypothesis (finished slot 0).
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_NEG = -1.0e9  # HF's "impossible" score offset: added, not assigned, as transformers does


class Beams(NamedTuple):
  """The finished hypotheses of each row, best first (every slot holds one when the search ends: a row closes only
  when its K slots are full, and the last step finishes the K best candidates)."""
  tokens: jax.Array  # int32 [B, K, max_new_tokens]: the new tokens, EOS included, pad_id after it
  scores: jax.Array  # float32 [B, K]: sum of log-probabilities / generated_length ** length_penalty


class _State(NamedTuple):
  step: jax.Array  # int32 []: tokens generated so far
  logits: jax.Array  # [B*K, V]: next-token logits of the running beams
  cache: Any
  running_tokens: jax.Array  # int32 [B, K, N]
  running_scores: jax.Array  # float32 [B, K]: summed log-probabilities, best first
  finished_tokens: jax.Array  # int32 [B, K, N]
  finished_scores: jax.Array  # float32 [B, K]: normalised scores, best first (about -1e9 where empty)
  finished: jax.Array  # bool [B, K]: the slot holds a hypothesis
  open: jax.Array  # bool [B, 1]: a running beam may still beat a finished one (HF's early-stop heuristic)


def reorder_cache(cache, rows: jax.Array):
  """`cache` with row r of every per-row leaf replaced by row rows[r] (rows int32 [B'], B' may differ from B).

  The rule: a leaf of rank >= 4 is [..., batch, length, heads, head_dim] (keys and values; any leading axes, such as
  nn.scan's 'layers' axis with model.scan_layers=True, are kept), so its batch axis is ndim - 4; a leaf of rank < 4
  (the write index: a scalar, or [layers] when scanned) is shared by every row and left alone. A cache with other
  per-row leaves needs its own `reorder` function for `beam_search`.
  """
  def gather(leaf):
    return jnp.take(leaf, rows, axis=leaf.ndim - 4) if leaf.ndim >= 4 else leaf
  return jax.tree.map(gather, cache)


def _normalised(scores: jax.Array, length, length_penalty) -> jax.Array:
  """HF's length penalty: scores / generated_length ** length_penalty."""
  return scores / jnp.asarray(length, jnp.float32) ** length_penalty


def _gather(array: jax.Array, index: jax.Array) -> jax.Array:
  """array [B, M, ...] at index [B, J] along axis 1 -> [B, J, ...] (HF's _gather_beams)."""
  index = index.reshape(index.shape + (1,) * (array.ndim - 2))
  return jnp.take_along_axis(array, index, axis=1)


def _candidates(state: _State, *, num_beams: int, eos_id: int, max_new_tokens: int):
  """The top 2K continuations of each row: (summed log-probs [B, 2K] best first, their tokens [B, 2K, N], the
  running beam each extends [B, 2K], whether each ends its hypothesis (EOS or the last step) [B, 2K])."""
  batch = state.running_scores.shape[0]
  log_probs = jax.nn.log_softmax(state.logits.astype(jnp.float32), axis=-1)
  vocab = log_probs.shape[-1]
  log_probs = log_probs.reshape(batch, num_beams, vocab) + state.running_scores[:, :, None]
  scores, index = jax.lax.top_k(log_probs.reshape(batch, num_beams * vocab), 2 * num_beams)
  sources, new = index // vocab, (index % vocab).astype(jnp.int32)
  tokens = jax.lax.dynamic_update_index_in_dim(_gather(state.running_tokens, sources), new[:, :, None],
                                               state.step, axis=2)
  ends = (new == eos_id) | (state.step + 1 >= max_new_tokens)
  return scores, tokens, sources, ends


def _running(scores, tokens, sources, ends, num_beams: int):
  """(tokens [B, K, N], scores [B, K], source beams [B, K]) of the K best candidates that do not end."""
  scores = scores + ends.astype(jnp.float32) * _NEG
  scores, pick = jax.lax.top_k(scores, num_beams)
  return _gather(tokens, pick), scores, _gather(sources, pick)


def _finished(state: _State, scores, tokens, ends, *, num_beams: int, length_penalty):
  """(tokens, scores, finished) of the K best among the finished set and the candidates that end within the first K
  of a row that is still open."""
  in_top = jnp.arange(2 * num_beams) < num_beams
  just_finished = ends & in_top[None, :]
  scores = _normalised(scores, state.step + 1, length_penalty)
  scores = scores + (~state.open).astype(jnp.float32) * _NEG
  scores = scores + (~just_finished).astype(jnp.float32) * _NEG
  merged = jnp.concatenate([state.finished_scores, scores], axis=1)
  merged_scores, pick = jax.lax.top_k(merged, num_beams)
  merged_tokens = jnp.concatenate([state.finished_tokens, tokens], axis=1)
  merged_finished = jnp.concatenate([state.finished, just_finished], axis=1)
  return _gather(merged_tokens, pick), merged_scores, _gather(merged_finished, pick)


def _still_open(was_open, running_scores, finished_scores, finished, generated, length_penalty):
  """HF's early_stopping=False heuristic [B, 1]: open while some finished slot is empty or the best running beam,
  normalised at the current length, beats the worst finished score."""
  best_running = _normalised(running_scores[:, :1], generated, length_penalty)
  worst_finished = jnp.where(finished, jnp.min(finished_scores, axis=1, keepdims=True), _NEG)
  return was_open & jnp.any(best_running > worst_finished, axis=-1, keepdims=True)


def _advance(state: _State, step_fn: Callable, reorder: Callable, *, num_beams: int, max_new_tokens: int,
             eos_id: int, length_penalty) -> _State:
  """One beam-search step: select the candidates, update the finished set, reorder the cache to the running beams
  and run their new tokens through the model."""
  batch = state.running_scores.shape[0]
  scores, tokens, sources, ends = _candidates(state, num_beams=num_beams, eos_id=eos_id,
                                              max_new_tokens=max_new_tokens)
  running_tokens, running_scores, running_sources = _running(scores, tokens, sources, ends, num_beams)
  finished_tokens, finished_scores, finished = _finished(state, scores, tokens, ends, num_beams=num_beams,
                                                         length_penalty=length_penalty)
  rows = (running_sources + num_beams * jnp.arange(batch)[:, None]).reshape(-1).astype(jnp.int32)
  last = jax.lax.dynamic_index_in_dim(running_tokens, state.step, axis=2, keepdims=False)
  logits, cache = step_fn(reorder(state.cache, rows), last.reshape(-1, 1), state.step)
  step = state.step + 1
  still_open = _still_open(state.open, running_scores, finished_scores, finished, step, length_penalty)
  return _State(step, logits, cache, running_tokens, running_scores, finished_tokens, finished_scores, finished,
                still_open)


def _initial_state(initial_logits, cache, reorder: Callable, *, num_beams: int, max_new_tokens: int,
                   pad_id: int) -> _State:
  """K copies of each row's prompt state: beam 0 at score 0, the others at -1e9; nothing finished."""
  batch = initial_logits.shape[0]
  copies = jnp.repeat(jnp.arange(batch, dtype=jnp.int32), num_beams)
  running_scores = jnp.zeros((batch, num_beams), jnp.float32).at[:, 1:].set(_NEG)
  tokens = jnp.full((batch, num_beams, max_new_tokens), pad_id, jnp.int32)
  return _State(jnp.int32(0), initial_logits[copies], reorder(cache, copies), tokens, running_scores, tokens,
                jnp.full((batch, num_beams), _NEG, jnp.float32), jnp.zeros((batch, num_beams), bool),
                jnp.ones((batch, 1), bool))


def beam_search(step_fn: Callable, initial_logits: jax.Array, cache, *, num_beams: int, max_new_tokens: int,
                eos_id: int, pad_id: int, length_penalty: float | jax.Array = 1.0,
                reorder: Callable = reorder_cache) -> Beams:
  """The K best finished hypotheses of each row (Beams, best first), traced into the caller's jit.

  initial_logits [B, V]: the next-token logits after each row's prompt; cache: the model's cache for those B rows
  (expanded here to B*K rows with `reorder`); step_fn(cache, tokens [B*K, 1], step) -> (logits [B*K, V], cache),
  row b*K + k being beam k of row b. length_penalty may be traced (one compile for every value). The loop stops
  when every row is closed (see the module docstring) or after max_new_tokens steps; the cache must have room for
  max_new_tokens more tokens (the last step runs the model once more, as the greedy loop does).
  """
  state = _initial_state(initial_logits, cache, reorder, num_beams=num_beams, max_new_tokens=max_new_tokens,
                         pad_id=pad_id)

  def body(s):
    return _advance(s, step_fn, reorder, num_beams=num_beams, max_new_tokens=max_new_tokens, eos_id=eos_id,
                    length_penalty=length_penalty)
  state = jax.lax.while_loop(lambda s: (s.step < max_new_tokens) & jnp.any(s.open), body, state)
  return Beams(state.finished_tokens, state.finished_scores)
