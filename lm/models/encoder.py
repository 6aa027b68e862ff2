"""The 'bert' family (models/registry.py): a BERT-style encoder — token + position + token-type embeddings,
bidirectional blocks (post-LN by default), pooler over [CLS], MLM head tied to the word embeddings, NSP head. Shares
every layer with the decoder."""
import flax.linen as nn
import jax.numpy as jnp

from lm.errors import ConfigError
from lm.models import heads, layers


class Encoder(nn.Module):
  """Takes a batch dict: `inputs`, optional `positions`, `segment_ids` (0 = padding, masked out of attention),
  `token_types`, `mlm_positions` (then the MLM head runs only there). Returns {'mlm_logits' [B, P or T, vocab],
  'nsp_logits' [B, 2], 'pooled' [B, d], 'hidden' [B, T, d]}, plus the task head's outputs (heads.task_outputs:
  'class_logits' from the pooled [CLS], 'start_logits' / 'end_logits', or 'tag_logits')."""
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
    out.update(heads.task_outputs(cfg, x, lambda: pooled, train))
    return out


Model = Encoder


def example_batch(config) -> dict:
  """A one-row dummy batch with the keys the encoder reads (the MLM head on gathered positions)."""
  return {'inputs': jnp.zeros((1, config.seq_len), jnp.int32),
          'segment_ids': jnp.ones((1, config.seq_len), jnp.int32),
          'mlm_positions': jnp.zeros((1, config.data.max_predictions_per_seq), jnp.int32)}


def check_config(config) -> None:
  """ConfigError for what an encoder cannot do: generate samples, pair without token types, and so on."""
  m = config.model
  if config.num_samples:
    raise ConfigError(f'num_samples={config.num_samples}: an encoder does not generate text; set it to 0 '
                      '(use python -m lm.fill_mask on the workdir)')
  if m.type_vocab_size < 2:
    raise ConfigError(f'model.type_vocab_size={m.type_vocab_size}: BERT pairs need 2 token types (A and B)')
  if not 0 < config.data.max_predictions_per_seq <= config.seq_len:
    raise ConfigError(f'data.max_predictions_per_seq={config.data.max_predictions_per_seq} must be in '
                      f'[1, seq_len={config.seq_len}]')
  if config.eval_steps == 0 and config.data.task == 'pretrain':
    raise ConfigError('eval_steps=0 (the whole eval split) is not available for BERT pretraining, whose examples '
                      'are drawn at random; give a number of batches')


def sparse_params(config) -> float:
  """The MLM head (transform + tied vocabulary projection) runs on the max_predictions_per_seq gathered positions
  only, and the pooler and NSP head once per sequence: the fractions of them that do not run per token."""
  m, seq_len = config.model, config.seq_len
  mlm_head = m.vocab_size * m.d_model + m.d_model * m.d_model  # tied projection + transform dense
  per_sequence = m.d_model * m.d_model + 2 * m.d_model  # pooler + NSP
  return mlm_head * (1 - config.data.max_predictions_per_seq / seq_len) + per_sequence * (1 - 1 / seq_len)


def preset(c):
  """Turns config `c` into an original-BERT-style encoder run (MLM + NSP); shapes and schedule stay the caller's."""
  c.objectives = {'mlm': 1.0, 'nsp': 1.0}
  c.model.type = 'bert'
  c.model.norm = 'post'
  c.model.activation = 'gelu'
  c.model.type_vocab_size = 2
  c.model.layer_norm_eps = 1e-12
  c.model.dropout = 0.1
  c.optimizer.weight_decay = 0.01
  return c
