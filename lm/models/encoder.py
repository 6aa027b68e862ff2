"""BERT-style encoder: token + position + token-type embeddings, bidirectional blocks (post-LN by default),
pooler over [CLS], MLM head tied to the word embeddings, NSP head. Shares every layer with the decoder."""
import flax.linen as nn
import jax.numpy as jnp

from lm.models import heads, layers


class Encoder(nn.Module):
  """Takes a batch dict: `inputs`, optional `positions`, `segment_ids` (0 = padding, masked out of attention),
  `token_types`, `mlm_positions` (then the MLM head runs only there). Returns {'mlm_logits' [B, P or T, vocab],
  'nsp_logits' [B, 2], 'pooled' [B, d], 'hidden' [B, T, d]}, plus 'class_logits' [B, num_labels] when
  cfg.num_labels > 0."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, batch: dict, train: bool = False):
    cfg = self.cfg
    x, embeddings = layers.body(cfg, batch, train)
    pooled = heads.Pooler(cfg, name='pooler')(x[:, 0])
    masked = x
    if 'mlm_positions' in batch:  # gather first: the vocab projection runs only where there is a prediction
      masked = jnp.take_along_axis(x, batch['mlm_positions'][..., None], axis=1)
    h = heads.MlmTransform(cfg, name='mlm_transform')(masked)
    bias = self.param('mlm_bias', layers.logical_init(nn.initializers.zeros, ('vocab',)), (cfg.vocab_size,),
                      cfg.param_dtype)
    mlm_logits = nn.with_logical_constraint(embeddings.attend(h) + bias, ('batch', 'length', 'vocab'))
    nsp_logits = heads.NspHead(cfg, name='nsp_head')(pooled)
    out = {'mlm_logits': mlm_logits.astype(jnp.float32), 'nsp_logits': nsp_logits.astype(jnp.float32),
           'pooled': pooled.astype(jnp.float32), 'hidden': x}
    if cfg.num_labels:
      out['class_logits'] = heads.ClassHead(cfg, name='class_head')(pooled, deterministic=not train)
    return out
