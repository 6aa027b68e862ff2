"""GPT-style decoder: token (+ learned position) embeddings, pre-LN causal blocks, final LN, tied output."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.models import layers


class Decoder(nn.Module):
  """Causal language model. `__call__` returns float32 logits [B, T, vocab]."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, inputs, positions=None, segment_ids=None, train: bool = False):
    cfg = self.cfg
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='embed',
                     embedding_init=layers.logical_init(layers.dense_init(), ('vocab', 'embed')))
    x = embed(inputs)
    if cfg.position == 'learned':
      pos_embed = nn.Embed(cfg.max_len, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='pos_embed',
                           embedding_init=layers.logical_init(layers.dense_init(0.01), (None, 'embed')))
      x = x + pos_embed(positions)
    x = nn.with_logical_constraint(x, layers.ACTIVATION_AXES)
    x = nn.Dropout(cfg.dropout)(x, deterministic=not train)
    x = layers.stack_blocks(layers.PreLNBlock, cfg, not train, x, layers.attention_mask(segment_ids), positions)
    x = layers.layer_norm(cfg, 'ln_final')(x)
    if cfg.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name='lm_head',
                        kernel_init=layers.logical_init(layers.dense_init(), ('embed', 'vocab')))(x)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    return logits.astype(jnp.float32)
