"""Decoding from an encoder-decoder (the t5 family): the encoder runs once over the right-padded sources; the
decoder starts from the decoder start id (pad, as T5) and emits one token per step against a self-attention KV
cache, with the encoder's cross-attention keys/values computed once at prefill and kept in the cache. Greedy,
temperature / top-k / top-p sampling (sampling.next_tokens) and beam search (beam_search.py, Hugging Face's
semantics; the cross-attention cache is reordered with the beams). Cache slot s holds decoder position s (slot 0 =
the start token), so no left padding is needed: every row's decoder starts at 0.

`use_cache=False` is the reference: the whole teacher-forced model re-runs for every new token. Tests check the
cached decoder against it and against transformers' generate.
"""
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UsageError
from lm.inference import beam_search, sampling as sampling_lib
from lm.parallel import sharding

_GREEDY = sampling_lib.Sampling()
_SOURCE_ROUNDING = 16  # sources are right-padded to a multiple of this: few distinct shapes, few compiles


def right_pad(sources: Sequence[Sequence[int]], *, max_len: int, pad_id: int, batch_multiple: int = 1):
  """(tokens int32 [B', S], segment ids [B', S]: 1 = token, 0 = padding) for token-id sources (eos included);
  B' rounds B up to batch_multiple with dummy rows. UsageError for no source, an empty one, or one over max_len."""
  if not sources:
    raise UsageError('no source text to decode from')
  for index, source in enumerate(sources):
    if not 0 < len(source) <= max_len:
      raise UsageError(f'source {index} has {len(source)} tokens; it must have 1 to {max_len} (model.max_len)')
  length = min(-(-max(len(s) for s in sources) // _SOURCE_ROUNDING) * _SOURCE_ROUNDING, max_len)
  rows = -(-len(sources) // batch_multiple) * batch_multiple
  tokens = np.full((rows, length), pad_id, np.int32)
  segments = np.zeros((rows, length), np.int32)
  for row, source in enumerate(list(sources) + [sources[0]] * (rows - len(sources))):
    tokens[row, :len(source)], segments[row, :len(source)] = source, 1
  return tokens, segments


def _decoder_batch(tokens, step, cache_len: int, encoder_segments) -> dict:
  """The decoder batch of tokens [B, 1] at decoder position `step`: it sees cache slots 0..step."""
  batch_size = tokens.shape[0]
  mask = (jnp.arange(cache_len) <= step)[None, None, None, :]
  return {'inputs': tokens, 'positions': jnp.full((batch_size, 1), step, jnp.int32),
          'attention_mask': jnp.broadcast_to(mask, (batch_size, 1, 1, cache_len)),
          'encoder_segment_ids': encoder_segments}


def _apply_decoder(model, params, cache, tokens, step, encoded, encoder_segments, cache_len: int):
  """(next-token logits [B, V], new cache) after running tokens [B, 1] at position `step` of a cache of cache_len
  slots; `encoded` is given at prefill only (the cross-attention keys/values are computed from it and kept)."""
  batch = _decoder_batch(tokens, step, cache_len, encoder_segments)
  out, variables = model.apply({'params': params, 'cache': cache}, batch, encoded, decode=True, method='decode',
                               mutable=['cache'])
  return out['logits'][:, -1], variables['cache']


def _prefill(model, params, sources, encoder_segments, start_id: int, cache_len: int):
  """(logits after the start token [B, V], cache with slot 0 and the cross-attention keys/values)."""
  encoded = model.apply({'params': params}, {'encoder_inputs': sources, 'encoder_segment_ids': encoder_segments},
                        method='encode')
  batch_size = sources.shape[0]
  init_batch = _decoder_batch(jnp.zeros((batch_size, cache_len), jnp.int32), 0, cache_len, encoder_segments)
  init_batch['attention_mask'] = jnp.ones((batch_size, 1, cache_len, cache_len), bool)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), init_batch, encoded, decode=True,
                                             method='decode'))['cache']
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  start = jnp.full((batch_size, 1), start_id, jnp.int32)
  return _apply_decoder(model, params, cache, start, 0, encoded, encoder_segments, cache_len)


_STATIC = ('model', 'max_new_tokens', 'sampling', 'eos_id', 'pad_id', 'rules')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_cached(params, sources, encoder_segments, rng, *, model, max_new_tokens: int, sampling, eos_id: int,
                     pad_id: int, rules: tuple):
  """Generated tokens [B, max_new_tokens] (pad after a row's EOS) with the KV cache."""
  batch_size = sources.shape[0]
  with nn.logical_axis_rules(rules):
    logits, cache = _prefill(model, params, sources, encoder_segments, pad_id, max_new_tokens + 1)

  def advance(carry):
    step, logits, cache, out, done = carry
    token = jnp.where(done, pad_id, sampling_lib.next_tokens(logits, rng, step, sampling))
    done = done | (token == eos_id)
    out = jax.lax.dynamic_update_index_in_dim(out, token, step, axis=1)
    with nn.logical_axis_rules(rules):
      logits, cache = _apply_decoder(model, params, cache, token[:, None], step + 1, None, encoder_segments,
                                     max_new_tokens + 1)
    return step + 1, logits, cache, out, done
  carry = (jnp.int32(0), logits, cache, jnp.full((batch_size, max_new_tokens), pad_id, jnp.int32),
           jnp.zeros((batch_size,), bool))
  carry = jax.lax.while_loop(lambda c: (c[0] < max_new_tokens) & ~jnp.all(c[4]), advance, carry)
  return carry[3]


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_uncached(params, sources, encoder_segments, rng, *, model, max_new_tokens: int, sampling, eos_id: int,
                       pad_id: int, rules: tuple):
  """The same tokens as _generate_cached, re-running encoder and decoder over the whole sequence for every token."""
  batch_size = sources.shape[0]
  decoder = jnp.full((batch_size, max_new_tokens + 1), pad_id, jnp.int32)  # slot 0: the start id (pad)

  def advance(carry):
    step, decoder, done = carry
    with nn.logical_axis_rules(rules):
      logits = model.apply({'params': params}, {'encoder_inputs': sources, 'encoder_segment_ids': encoder_segments,
                                                'inputs': decoder})['logits']
    token = jnp.where(done, pad_id, sampling_lib.next_tokens(logits[:, step], rng, step, sampling))
    decoder = jax.lax.dynamic_update_index_in_dim(decoder, token, step + 1, axis=1)
    return step + 1, decoder, done | (token == eos_id)
  carry = jax.lax.while_loop(lambda c: (c[0] < max_new_tokens) & ~jnp.all(c[2]), advance,
                             (jnp.int32(0), decoder, jnp.zeros((batch_size,), bool)))
  return carry[1][:, 1:]


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'num_beams', 'eos_id', 'pad_id', 'rules'))
def _generate_beams(params, sources, encoder_segments, length_penalty, *, model, max_new_tokens: int,
                    num_beams: int, eos_id: int, pad_id: int, rules: tuple):
  """(best finished hypothesis [B, max_new_tokens], its score [B]) by beam search on the cache."""
  with nn.logical_axis_rules(rules):
    logits, cache = _prefill(model, params, sources, encoder_segments, pad_id, max_new_tokens + 1)
  beam_segments = jnp.repeat(encoder_segments, num_beams, axis=0)

  def step_fn(cache, token, step):
    with nn.logical_axis_rules(rules):
      return _apply_decoder(model, params, cache, token, step + 1, None, beam_segments, max_new_tokens + 1)
  beams = beam_search.beam_search(step_fn, logits, cache, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                  eos_id=eos_id, pad_id=pad_id, length_penalty=length_penalty)
  return beams.tokens[:, 0], beams.scores[:, 0]


def generate(model, params, sources: Sequence[Sequence[int]], *, max_new_tokens: int, eos_id: int, pad_id: int,
             sampling: sampling_lib.Sampling = _GREEDY, seed: int = 0, use_cache: bool = True,
             batch_multiple: int = 1, rules: tuple = sharding.DEFAULT_RULES, num_beams: int = 1,
             length_penalty: float = 1.0) -> list[list[int]]:
  """The generated token ids of each source (token ids, eos included), stopped before EOS: sampled or greedy, or
  the best of `num_beams` beams. Call it under `jax.set_mesh(mesh)` when the params are sharded."""
  sampling.check()
  sampling_lib.check_beams(num_beams, sampling, use_cache)
  if max_new_tokens < 1:
    raise UsageError(f'--max_new_tokens={max_new_tokens}: must be >= 1')
  tokens, segments = right_pad(sources, max_len=model.cfg.max_len, pad_id=pad_id, batch_multiple=batch_multiple)
  if num_beams > 1:
    out, _ = _generate_beams(params, tokens, segments, np.float32(length_penalty), model=model,
                             max_new_tokens=max_new_tokens, num_beams=num_beams, eos_id=eos_id, pad_id=pad_id,
                             rules=rules)
  else:
    fn = _generate_cached if use_cache else _generate_uncached
    out = fn(params, tokens, segments, jax.random.PRNGKey(seed), model=model, max_new_tokens=max_new_tokens,
             sampling=sampling, eos_id=eos_id, pad_id=pad_id, rules=rules)
  return [sampling_lib.cut_at_eos(row, eos_id) for row in sharding.to_host(out)[:len(sources)]]


def sources_of(encoder_inputs, encoder_segment_ids) -> list[list[int]]:
  """The token ids of each row of an encoder batch [B, S] without its padding: what `generate` takes."""
  return [row[segments > 0].tolist() for row, segments in zip(np.asarray(encoder_inputs),
                                                              np.asarray(encoder_segment_ids))]


def generate_texts(model, params, tokenizer, sources: Sequence[Sequence[int]], *, max_new_tokens: int,
                   num_beams: int, mesh, mesh_config) -> list[str]:
  """The decoded text of each source (greedy, or the best of num_beams beams) with the parameters sharded on
  `mesh` (config.mesh gives the activation rules): what generation-based evaluation scores."""
  with jax.set_mesh(mesh):
    ids = generate(model, params, sources, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                   pad_id=tokenizer.pad_id, num_beams=num_beams, batch_multiple=sharding.data_parallel_size(mesh),
                   rules=sharding.logical_rules(mesh_config))
  return [tokenizer.decode(i) for i in ids]
