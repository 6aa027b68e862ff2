"""Decoding from a causal model with a KV cache: prefill the prompts, then one token per step against a fixed-size
cache, all compiled once per (batch, prompt length, max_new_tokens); greedy, temperature, top-k and top-p sampling;
a row stops at EOS, the loop when every row has stopped or after max_new_tokens.

A batch of prompts of different lengths is left-padded to one length P; row b has pads[b] padding slots. Cache slot
s of row b holds that row's token at position s - pads[b], and a query in slot q sees the slots pads[b] <= s <= q (a
padding slot sees only itself), so every row decodes as it would alone. Row b's random key at step i is
fold_in(fold_in(key(seed), i), b): a prompt in row 0 samples the same text alone or in a batch.

`use_cache=False` is the reference decoder: it re-runs the whole sequence through the training forward pass at every
step. Tests check the cached decoder against it; lm.bench times both.

num_beams > 1 is beam search (beam_search.py, Hugging Face's semantics) on the same cache: the prompts are prefilled
once per row, the cache is copied to the row's K beams, and beam k of row b is cache row b*K + k with row b's pads.
"""
import dataclasses
import functools
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UsageError
from lm.inference import beam_search
from lm.parallel import sharding

DEFAULT_PROMPTS = ('def ', 'import ', 'class ', 'The ', 'for ', '# ')
_PROMPT_ROUNDING = 16  # prompts are left-padded to a multiple of this: few distinct shapes, few compiles


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is chosen from the logits (applied in this order: temperature, top-k, top-p)."""
  temperature: float = 0.0  # 0 = greedy (argmax); otherwise logits / temperature
  top_k: int = 0  # keep only the k most likely tokens (0 = no limit)
  top_p: float = 1.0  # keep the smallest set of most likely tokens with probability mass >= top_p (1 = no limit)

  def check(self) -> 'Sampling':
    """Itself, or UsageError naming the flag out of range."""
    if self.temperature < 0:
      raise UsageError(f'--temperature={self.temperature}: must be >= 0 (0 = greedy)')
    if self.top_k < 0:
      raise UsageError(f'--top_k={self.top_k}: must be >= 0 (0 = no limit)')
    if not 0 < self.top_p <= 1:
      raise UsageError(f'--top_p={self.top_p}: must be in (0, 1] (1 = no limit)')
    return self


def check_beams(num_beams: int, sampling: Sampling, use_cache: bool = True) -> None:
  """UsageError naming the flag when num_beams cannot decode with these settings (beam search is deterministic and
  runs on the KV cache)."""
  if num_beams < 1:
    raise UsageError(f'--num_beams={num_beams}: must be >= 1 (1 = greedy or sampling, no beams)')
  if num_beams > 1 and sampling.temperature > 0:
    raise UsageError(f'--num_beams={num_beams} with --temperature={sampling.temperature}: beam sampling is not '
                     'supported; use --temperature=0 with beams')
  if num_beams > 1 and not use_cache:
    raise UsageError(f'--num_beams={num_beams} with --nocache: beam search runs on the KV cache; drop --nocache')


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """logits [..., V] with -inf outside the top-k, then outside the smallest set whose probability mass is >= top_p
  (tokens tied with that set's least likely member are kept too)."""
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    needed = jnp.cumsum(probs, axis=-1) - probs < top_p  # the mass before this token does not reach top_p yet
    threshold = jnp.min(jnp.where(needed, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def next_tokens(logits: jax.Array, rng: jax.Array, step, sampling: Sampling) -> jax.Array:
  """The chosen token of each row of logits [B, V] at decoding step `step` (int32 [B])."""
  if sampling.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
  step_key = jax.random.fold_in(rng, step)
  keys = jax.vmap(lambda row: jax.random.fold_in(step_key, row))(jnp.arange(logits.shape[0]))
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


def _positions(pads, first_slot, num_queries: int):
  """Token positions [B, T] of the slots first_slot ... first_slot + T - 1 (0 in padding)."""
  return jnp.maximum(first_slot + jnp.arange(num_queries)[None, :] - pads[:, None], 0).astype(jnp.int32)


def _attention_mask(pads, first_slot, num_queries: int, cache_len: int):
  """[B, 1, T, cache_len]: query slot q of row b sees slots pads[b] <= s <= q; a padding slot sees itself."""
  slots = jnp.arange(cache_len)[None, None, :]
  queries = (first_slot + jnp.arange(num_queries))[None, :, None]
  visible = ((slots >= pads[:, None, None]) & (slots <= queries)) | (slots == queries)
  return visible[:, None]


def _apply_cached(model, params, cache, tokens, pads, first_slot):
  """Runs tokens [B, T] in slots first_slot.. against the cache; (logits of the last slot [B, V], new cache)."""
  cache_len = _cache_len(cache)
  batch = {'inputs': tokens, 'positions': _positions(pads, first_slot, tokens.shape[1]),
           'attention_mask': _attention_mask(pads, first_slot, tokens.shape[1], cache_len)}
  out, variables = model.apply({'params': params, 'cache': cache}, batch, decode=True, mutable=['cache'])
  return out['logits'][:, -1], variables['cache']


def _empty_cache(model, batch_size: int, cache_len: int):
  """Zero keys/values [B, cache_len, ...] for every layer and a zero write index (shapes from the model's init)."""
  batch = {'inputs': jnp.zeros((batch_size, cache_len), jnp.int32)}
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, decode=True))['cache']
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _choose(logits, carry_done, rng, step, sampling: Sampling, eos_id: int, pad_id: int):
  """(token [B], done [B]): the next token of each row; rows already done get pad."""
  token = jnp.where(carry_done, pad_id, next_tokens(logits, rng, step, sampling))
  return token, carry_done | (token == eos_id)


def _prefill(params, tokens, pads, *, model, max_new_tokens: int, rules: tuple):
  """The loop's first carry (step, last logits, cache, generated tokens, done) after running the prompts."""
  batch_size, prompt_len = tokens.shape
  with nn.logical_axis_rules(rules):
    cache = _empty_cache(model, batch_size, prompt_len + max_new_tokens)
    logits, cache = _apply_cached(model, params, cache, tokens, pads, 0)
  out = jnp.zeros((batch_size, max_new_tokens), jnp.int32)
  return jnp.int32(0), logits, cache, out, jnp.zeros((batch_size,), bool)


def _advance(params, carry, pads, rng, *, model, sampling: Sampling, eos_id: int, pad_id: int, rules: tuple):
  """One decoding step: choose each row's token from the last logits, store it, run it through the cache."""
  step, logits, cache, out, done = carry
  token, done = _choose(logits, done, rng, step, sampling, eos_id, pad_id)
  out = jax.lax.dynamic_update_index_in_dim(out, token, step, axis=1)
  with nn.logical_axis_rules(rules):
    logits, cache = _apply_cached(model, params, cache, token[:, None], pads, _prompt_len(cache, out) + step)
  return step + 1, logits, cache, out, done


def _cache_len(cache) -> int:
  """Slots in the cache: keys and values are [(layers,) B, cache_len, heads, head_dim]."""
  return max(leaf.shape[-3] for leaf in jax.tree.leaves(cache) if leaf.ndim >= 4)


def _prompt_len(cache, out) -> int:
  """P, from cache_len = P + max_new_tokens."""
  return _cache_len(cache) - out.shape[1]


_STATIC = ('model', 'max_new_tokens', 'sampling', 'eos_id', 'pad_id', 'rules')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_cached(params, tokens, pads, rng, *, model, max_new_tokens: int, sampling: Sampling, eos_id: int,
                     pad_id: int, rules: tuple):
  """Generated tokens [B, max_new_tokens] (pad after a row's EOS), with the KV cache."""
  carry = _prefill(params, tokens, pads, model=model, max_new_tokens=max_new_tokens, rules=rules)
  advance = functools.partial(_advance, model=model, sampling=sampling, eos_id=eos_id, pad_id=pad_id, rules=rules)
  carry = jax.lax.while_loop(lambda c: (c[0] < max_new_tokens) & ~jnp.all(c[4]),
                             lambda c: advance(params, c, pads, rng), carry)
  return carry[3]


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate_uncached(params, tokens, pads, rng, *, model, max_new_tokens: int, sampling: Sampling, eos_id: int,
                       pad_id: int, rules: tuple):
  """The same tokens as _generate_cached, re-running the full (fixed-size) sequence for every new token."""
  batch_size, prompt_len = tokens.shape
  slots = jnp.arange(prompt_len + max_new_tokens)[None, :]
  padding = jnp.full((batch_size, max_new_tokens), pad_id, tokens.dtype)
  batch = {'positions': jnp.maximum(slots - pads[:, None], 0),
           'segment_ids': (slots >= pads[:, None]).astype(jnp.int32)}  # padding is segment 0: unseen by tokens

  def body(carry):
    step, buffer, out, done = carry
    with nn.logical_axis_rules(rules):
      logits = model.apply({'params': params}, {**batch, 'inputs': buffer})['logits']
    logits = jax.lax.dynamic_index_in_dim(logits, prompt_len + step - 1, axis=1, keepdims=False)
    token, done = _choose(logits, done, rng, step, sampling, eos_id, pad_id)
    buffer = jax.lax.dynamic_update_index_in_dim(buffer, token, prompt_len + step, axis=1)
    return step + 1, buffer, jax.lax.dynamic_update_index_in_dim(out, token, step, axis=1), done

  carry = (jnp.int32(0), jnp.concatenate([tokens, padding], axis=1), jnp.zeros_like(padding),
           jnp.zeros((batch_size,), bool))
  return jax.lax.while_loop(lambda c: (c[0] < max_new_tokens) & ~jnp.all(c[3]), body, carry)[2]


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'num_beams', 'eos_id', 'pad_id', 'rules'))
def _generate_beams(params, tokens, pads, length_penalty, *, model, max_new_tokens: int, num_beams: int, eos_id: int,
                    pad_id: int, rules: tuple):
  """(the best finished hypothesis of each row [B, max_new_tokens] (EOS, then pad), its score [B]): beam search
  on the KV cache (length_penalty is traced: one compile serves every value). Beam k of row b is cache row b*K + k
  and keeps row b's pads."""
  prompt_len = tokens.shape[1]
  with nn.logical_axis_rules(rules):
    cache = _empty_cache(model, tokens.shape[0], prompt_len + max_new_tokens)
    logits, cache = _apply_cached(model, params, cache, tokens, pads, 0)
  beam_pads = jnp.repeat(pads, num_beams)

  def step_fn(cache, token, step):
    with nn.logical_axis_rules(rules):
      return _apply_cached(model, params, cache, token, beam_pads, prompt_len + step)
  beams = beam_search.beam_search(step_fn, logits, cache, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                  eos_id=eos_id, pad_id=pad_id, length_penalty=length_penalty)
  return beams.tokens[:, 0], beams.scores[:, 0]


def left_pad(prompts: Sequence[Sequence[int]], *, max_len: int, max_new_tokens: int, pad_id: int, eos_id: int,
             batch_multiple: int = 1):
  """(tokens int32 [B', P], pads int32 [B']) for token-id prompts; B' rounds B up to batch_multiple (extra rows are
  dummies). An empty prompt starts from EOS, the separator between training documents. UsageError when a prompt
  and max_new_tokens do not fit in max_len."""
  if max_new_tokens < 1:
    raise UsageError(f'--max_new_tokens={max_new_tokens}: must be >= 1')
  if not prompts:
    raise UsageError('no prompt to decode')
  prompts = [list(p) or [eos_id] for p in prompts]
  for index, prompt in enumerate(prompts):
    if len(prompt) + max_new_tokens > max_len:
      raise UsageError(f'prompt {index} has {len(prompt)} tokens: with --max_new_tokens={max_new_tokens} that is '
                        f'{len(prompt) + max_new_tokens} > the model\'s context of {max_len} (model.max_len); shorten '
                        'the prompt or lower --max_new_tokens')
  longest = max(len(p) for p in prompts)
  length = min(-(-longest // _PROMPT_ROUNDING) * _PROMPT_ROUNDING, max_len - max_new_tokens)
  rows = -(-len(prompts) // batch_multiple) * batch_multiple
  prompts += [[eos_id]] * (rows - len(prompts))
  tokens = np.full((rows, length), pad_id, np.int32)
  pads = np.array([length - len(p) for p in prompts], np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, pads[row]:] = prompt
  return tokens, pads


def cut_at_eos(row, eos_id: int) -> list[int]:
  """The generated ids of one row up to (without) its EOS."""
  row = [int(t) for t in row]
  return row[:row.index(eos_id)] if eos_id in row else row


def generate(model, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos_id: int, pad_id: int,
             sampling: Sampling = Sampling(), seed: int = 0, use_cache: bool = True, batch_multiple: int = 1,
             rules: tuple = sharding.DEFAULT_RULES, num_beams: int = 1,
             length_penalty: float = 1.0) -> list[list[int]]:
  """The new token ids of each prompt (token ids), stopped before EOS. Call it under `jax.set_mesh(mesh)` when the
  params are sharded; batch_multiple (the mesh's data-parallel size) rounds the batch up so it divides evenly, and
  `rules` (sharding.logical_rules(config.mesh)) place the activations. num_beams > 1: beam search (greedy only,
  with the cache) returning each prompt's best hypothesis, scored sum_logprobs / new_tokens ** length_penalty."""
  sampling.check()
  check_beams(num_beams, sampling, use_cache)
  tokens, pads = left_pad(prompts, max_len=model.cfg.max_len, max_new_tokens=max_new_tokens, pad_id=pad_id,
                          eos_id=eos_id, batch_multiple=batch_multiple)
  if num_beams > 1:
    out, _ = _generate_beams(params, tokens, pads, np.float32(length_penalty), model=model,
                             max_new_tokens=max_new_tokens, num_beams=num_beams, eos_id=eos_id, pad_id=pad_id,
                             rules=rules)
  else:
    fn = _generate_cached if use_cache else _generate_uncached
    out = fn(params, tokens, pads, jax.random.PRNGKey(seed), model=model, max_new_tokens=max_new_tokens,
             sampling=sampling, eos_id=eos_id, pad_id=pad_id, rules=rules)
  return [cut_at_eos(row, eos_id) for row in sharding.to_host(out)[:len(prompts)]]


def stream(model, params, prompt: Sequence[int], *, max_new_tokens: int, eos_id: int, pad_id: int,
           sampling: Sampling = Sampling(), seed: int = 0, batch_multiple: int = 1,
           rules: tuple = sharding.DEFAULT_RULES) -> Iterator[int]:
  """An iterator over the new token ids of one prompt as they are decoded (the ids `generate` returns), until EOS.
  The prompt is checked now (UsageError), before anything is decoded."""
  sampling.check()
  tokens, pads = left_pad([prompt], max_len=model.cfg.max_len, max_new_tokens=max_new_tokens, pad_id=pad_id,
                          eos_id=eos_id, batch_multiple=batch_multiple)
  prefill = jax.jit(functools.partial(_prefill, model=model, max_new_tokens=max_new_tokens, rules=rules))
  advance = jax.jit(functools.partial(_advance, model=model, sampling=sampling, eos_id=eos_id, pad_id=pad_id,
                                      rules=rules))
  rng = jax.random.PRNGKey(seed)

  def tokens_as_decoded():
    carry = prefill(params, tokens, pads)
    for step in range(max_new_tokens):
      carry = advance(params, carry, pads, rng)
      token = int(sharding.to_host(carry[3])[0, step])
      if token == eos_id:
        return
      yield token
  return tokens_as_decoded()


def sample_texts(model, params, tokenizer, prompts, *, max_new_tokens: int, temperature: float, seed: int,
                 batch_multiple: int = 1, rules: tuple = sharding.DEFAULT_RULES) -> list[str]:
  """Each text prompt followed by its continuation, decoded as text (prompts keep their last tokens when too long)."""
  ids = [tokenizer.encode_default(p)[-(model.cfg.max_len - max_new_tokens):] for p in prompts]
  new = generate(model, params, ids, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                 pad_id=tokenizer.pad_id, sampling=Sampling(temperature=temperature), seed=seed,
                 batch_multiple=batch_multiple, rules=rules)
  return [tokenizer.decode(prompt + continuation) for prompt, continuation in zip(ids, new)]
