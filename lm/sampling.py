"""Sampling text from a decoder by re-running the model on a fixed-size buffer (compiled once per buffer shape).

Used for the samples printed at the end of training. It recomputes the whole prefix for each new token; the
KV-cache decoder of `lm.generate` is the fast path for long generations.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_PROMPTS = ('def ', 'import ', 'class ', 'The ', 'for ', '# ')


@functools.partial(jax.jit, static_argnames=('apply_fn', 'max_new_tokens', 'temperature'))
def _sample_loop(params, tokens, prompt_len, rng, *, apply_fn, max_new_tokens: int, temperature: float):
  """Fills tokens[:, prompt_len:prompt_len+max_new_tokens] one token at a time (causal model: the tail is ignored)."""
  def body(i, tokens):
    pos = prompt_len + i
    logits = apply_fn({'params': params}, {'inputs': tokens}, train=False)['logits']
    logits = jax.lax.dynamic_index_in_dim(logits, pos - 1, axis=1, keepdims=False)
    if temperature > 0:
      next_token = jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature)
    else:
      next_token = jnp.argmax(logits, axis=-1)
    return jax.lax.dynamic_update_index_in_dim(tokens, next_token.astype(tokens.dtype)[:, None], pos, axis=1)
  return jax.lax.fori_loop(0, max_new_tokens, body, tokens)


def sample_texts(model, params, tokenizer, prompts, *, max_new_tokens: int, temperature: float, seed: int) -> list:
  """Each prompt followed by its sampled continuation (stopped at EOS), as text. Deterministic for a seed."""
  max_len = model.cfg.max_len
  out = []
  for index, prompt in enumerate(prompts):
    ids = tokenizer.encode(prompt)[-(max_len - max_new_tokens):]
    length = -(-(len(ids) + max_new_tokens) // 64) * 64  # round up: few distinct shapes, few compiles
    tokens = np.full((1, min(length, max_len)), tokenizer.pad_id, np.int32)
    tokens[0, :len(ids)] = ids
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    result = _sample_loop(params, jnp.asarray(tokens), len(ids), rng, apply_fn=model.apply,
                          max_new_tokens=max_new_tokens, temperature=float(temperature))
    new = np.asarray(result)[0, len(ids):len(ids) + max_new_tokens].tolist()
    if tokenizer.eos_id in new:
      new = new[:new.index(tokenizer.eos_id)]
    out.append(tokenizer.decode(ids + new))
  return out
