"""The 'gpt' family (models/registry.py): a causal decoder — embeddings, causal blocks (pre-LN by default), final
norm, tied output projection. GPT-2 layout by default, Llama layout with base.llama(config)."""
import flax.linen as nn
import jax.numpy as jnp

from lm.models import heads, layers


class Decoder(nn.Module):
  """Causal language model. Takes a batch dict (`inputs`, optional `positions`, `segment_ids`); returns
  {'logits': float32 [B, T, vocab], 'lm_hidden': the head's input [B, T, d], 'lm_table': its weights [vocab, d]},
  plus the task head's outputs (heads.task_outputs: 'class_logits' from the
  last non-pad token, 'start_logits' / 'end_logits', or 'tag_logits').

  decode=True runs against a KV cache (the mutable 'cache' collection, see layers.Attention); the batch then also
  holds `attention_mask` [B, 1, T, cache_len] and `positions`, and 'logits' are those of the last slot only,
[B, 1, vocab]. lm/sampling.py drives it.
  """
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, batch: dict, train: bool = False, decode: bool = False):
    cfg = self.cfg
    x, embeddings = layers.body(cfg, batch, train, decode)
    if decode:  # decoding needs the next-token logits of the last slot only: skip the vocab projection elsewhere
      x = x[:, -1:]
    if cfg.tie_embeddings:
      logits = embeddings.attend(x)
      table = lambda: nn.meta.unbox(embeddings.variables['params']['token']['embedding'])
    else:
      lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='lm_head',
                         dot_general=layers.dense_dot_general(cfg),
                         kernel_init=layers.logical_init(layers.dense_init(), ('embed', 'vocab')))
      logits = lm_head(x)
      table = lambda: nn.meta.unbox(lm_head.variables['params']['kernel']).T
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    out = {'logits': logits.astype(jnp.float32)}
    if not decode:  # jit drops what no objective reads: the logits when only a task head trains or the loss is chunked
      out.update(lm_hidden=x, lm_table=table())  # the head's input and [V, d] weights (chunked_cross_entropy)
      out.update(heads.task_outputs(cfg, x, lambda: heads.last_token(x, batch.get('segment_ids')), train))
    return out


Model = Decoder


def example_batch(config) -> dict:
  """A one-row dummy batch with the keys the decoder reads."""
  return {'inputs': jnp.zeros((1, config.seq_len), jnp.int32),
          'segment_ids': jnp.ones((1, config.seq_len), jnp.int32)}


def check_config(config) -> None:
  """Nothing beyond the generic checks: every decoder config that validates generically can run."""
  del config


def sparse_params(config) -> float:
  """Every decoder parameter runs for every token."""
  del config
  return 0.0


def llama_preset(c):
  """Turns config `c` into a Llama-style decoder: RMSNorm, RoPE, SwiGLU MLP, no biases, untied output head."""
  c.model.type = 'gpt'
  c.model.norm, c.model.norm_type, c.model.activation = 'pre', 'rmsnorm', 'swiglu'
  c.model.position, c.model.use_bias, c.model.tie_embeddings = 'rope', False, False
  return c


def bloom_preset(c):
  """Turns config `c` into a BLOOM-style decoder: ALiBi (no position parameters), a LayerNorm after the embedding,
  pre-LN blocks with biases, tanh GELU, a 4·d MLP, tied output head."""
  m = c.model
  m.type, m.norm, m.norm_type, m.activation, m.use_bias, m.tie_embeddings = 'gpt', 'pre', 'layernorm', 'gelu_tanh', \
      True, True
  m.position, m.position_offset, m.embedding_norm, m.d_ff = 'alibi', 0, True, 4 * m.d_model
  return c


def opt_preset(c):
  """Turns config `c` into an OPT-style decoder: learned positions read from row p + 2, pre-LN blocks with a final
  LayerNorm, ReLU MLP, biases, tied output head."""
  m = c.model
  m.type, m.norm, m.norm_type, m.activation, m.use_bias, m.tie_embeddings = 'gpt', 'pre', 'layernorm', 'relu', True, \
      True
  m.position, m.position_offset, m.embedding_norm = 'learned', 2, False
  return c
