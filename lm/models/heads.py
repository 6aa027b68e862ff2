"""Heads on top of a transformer body: pooler over [CLS], the MLM transform, NSP, and the fine-tuning heads a
config's model.task_head picks: sequence classification, extractive QA spans, token tags (`task_outputs`)."""
import flax.linen as nn
import jax.numpy as jnp

from lm.models import layers


def _dense(cfg: layers.ModelConfig, features: int, axes: tuple, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                  kernel_init=layers.logical_init(layers.dense_init(), axes),
                  bias_init=layers.logical_init(nn.initializers.zeros, axes[-1:]))


class Pooler(nn.Module):
  """BERT pooler: tanh(dense(hidden state of the first token, [CLS]))."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, first_token):
    return jnp.tanh(_dense(self.cfg, self.cfg.d_model, ('embed', 'mlp'), 'dense')(first_token))


class MlmTransform(nn.Module):
  """dense -> GELU -> LayerNorm, applied before the tied output projection of the MLM head."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    x = layers.ACTIVATIONS[cfg.activation](_dense(cfg, cfg.d_model, ('embed', 'mlp'), 'dense')(x))
    return layers.layer_norm(cfg, 'ln')(x)


class NspHead(nn.Module):
  """Next-sentence prediction: 2 logits from the pooled [CLS] (0 = B follows A, 1 = B is random)."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, pooled):
    return _dense(self.cfg, 2, ('mlp', None), 'dense')(pooled)


class ClassHead(nn.Module):
  """Sequence classification: dropout, then num_labels logits from one summary vector per sequence (BERT's pooled
  [CLS], or a decoder's last token)."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, summary, deterministic: bool):
    summary = nn.Dropout(self.cfg.dropout)(summary, deterministic=deterministic)
    return _dense(self.cfg, self.cfg.num_labels, ('embed', None), 'dense')(summary).astype(jnp.float32)


class SpanHead(nn.Module):
  """Extractive QA: a start and an end logit per token (one dense layer to 2, like BERT's `qa_outputs`)."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, hidden):
    logits = _dense(self.cfg, 2, ('embed', None), 'dense')(hidden).astype(jnp.float32)
    return {'start_logits': logits[..., 0], 'end_logits': logits[..., 1]}


class TokenHead(nn.Module):
  """Token classification: dropout, then num_labels logits per token."""
  cfg: layers.ModelConfig

  @nn.compact
  def __call__(self, hidden, deterministic: bool):
    hidden = nn.Dropout(self.cfg.dropout)(hidden, deterministic=deterministic)
    return _dense(self.cfg, self.cfg.num_labels, ('embed', None), 'dense')(hidden).astype(jnp.float32)


TASK_HEAD_NAMES = {'class': 'class_head', 'span': 'qa_head', 'token': 'tag_head'}  # model.task_head -> module name


def task_outputs(cfg: layers.ModelConfig, hidden, summary, train: bool) -> dict:
  """The outputs of the head model.task_head names: 'class' -> {'class_logits' [B, num_labels]} from `summary()`
  (the sequence's summary vector; only when num_labels > 0), 'span' -> {'start_logits', 'end_logits' [B, T]},
  'token' -> {'tag_logits' [B, T, num_labels]} from the final hidden states [B, T, d]."""
  name = TASK_HEAD_NAMES[cfg.task_head]
  if cfg.task_head == 'span':
    return SpanHead(cfg, name=name)(hidden)
  if not cfg.num_labels:
    return {}
  if cfg.task_head == 'token':
    return {'tag_logits': TokenHead(cfg, name=name)(hidden, deterministic=not train)}
  return {'class_logits': ClassHead(cfg, name=name)(summary(), deterministic=not train)}


def last_token(x, segment_ids):
  """[B, T, d] -> [B, d] at each row's last non-padding position (segment id != 0), or at T-1 without ids."""
  if segment_ids is None:
    return x[:, -1]
  last = jnp.maximum(jnp.sum(segment_ids != 0, axis=1) - 1, 0)
  return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
