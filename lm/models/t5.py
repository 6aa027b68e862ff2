"""The 't5' family (models/registry.py): an encoder-decoder Transformer in T5's layout (Raffel et al. 2020).

A shared token embedding; an encoder stack and a decoder stack of pre-norm blocks (RMS norm without bias, no biases
anywhere); the decoder adds cross-attention over the encoder output. Positions are a learned relative position bias,
one table per stack (bidirectional buckets in the encoder, causal in the decoder, none in cross-attention),
computed once per stack and added to every layer's attention scores, which are not scaled by 1/sqrt(d) (T5 folds
that into the query init). T5 v1.1: gated tanh-GELU MLP ('geglu'), untied output head; v1.0: ReLU MLP, output
tied to the embedding with the d_model^-0.5 scale. `preset(c, version)` sets either.

Batch (lm/data/span_corruption.py, lm/data/seq2seq.py): `encoder_inputs` [B, S], `encoder_segment_ids` [B, S]
(0 = padding), decoder `inputs` [B, T] (the targets shifted right, starting with pad id 0), `segment_ids` [B, T],
optional `positions` / `encoder_positions` (packed rows); the 'seq2seq' objective reads 'logits' against `targets`.

Parameter names: embeddings/token, encoder_bias, encoder/{block_i/{ln_attn, attn, ln_mlp, mlp}, ln_final},
decoder_bias, decoder/{block_i/{ln_attn, attn, ln_cross, cross, ln_mlp, mlp}, ln_final}, lm_head (untied).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import ConfigError
from lm.models import layers


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
  """T5's bucket of `relative_position` (key position - query position): exact buckets for small distances,
  logarithmic ones up to max_distance; bidirectional buckets split the table between the two directions, causal
  ones see only the past (positive distances share bucket 0)."""
  buckets = 0
  if bidirectional:
    num_buckets //= 2
    buckets = (relative_position > 0).astype(jnp.int32) * num_buckets
    relative_position = jnp.abs(relative_position)
  else:
    relative_position = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = relative_position < max_exact
  scaled = jnp.log(relative_position.astype(jnp.float32) / max_exact) / np.log(max_distance / max_exact)
  large = max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, relative_position, large)


class RelativeBias(nn.Module):
  """The stack's relative position bias: float32 [B or 1, heads, T, S] for query positions [B or 1, T] and key
  positions [B or 1, S]."""
  cfg: layers.ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions, key_positions):
    cfg = self.cfg
    table = self.param('embedding', layers.logical_init(layers.dense_init(cfg.d_model ** -0.5), (None, 'heads')),
                       (cfg.relative_attention_buckets, cfg.num_heads), cfg.param_dtype)
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    bucket = relative_position_bucket(relative, self.bidirectional, cfg.relative_attention_buckets,
                                      cfg.relative_attention_max_distance)
    bias = jnp.asarray(table, jnp.float32)[bucket]  # [B, T, S, heads]
    return nn.with_logical_constraint(bias.transpose(0, 3, 1, 2), ('batch', 'heads', 'length', None))


class T5Attention(nn.Module):
  """Self- or cross-attention without biases or 1/sqrt(d) scaling, plus an additive bias on the scores.

  decode=True: self-attention writes keys/values to the KV cache (layers.cache_keys_values); cross-attention keeps
  the encoder's keys/values in the cache, projected from `context` once (at prefill) and read back on later steps,
  whose `context` is None.
  """
  cfg: layers.ModelConfig
  cross: bool = False  # attend over `context` (the encoder output) rather than x
  causal: bool = False  # the decoder's self-attention
  decode: bool = False

  @nn.compact
  def __call__(self, x, context, mask, bias, deterministic: bool):
    cfg = self.cfg
    inner = cfg.num_heads * cfg.head_dim
    q = layers.HeadsDense(cfg, True, init_std=(cfg.d_model * cfg.head_dim) ** -0.5, name='query')(x, deterministic)
    if not self.cross:
      k, v = self._project(x, deterministic)
      if self.decode:
        k, v = layers.cache_keys_values(self, k, v)
    elif self.decode:
      k, v = self._cross_cache(context)
    else:
      k, v = self._project(context, deterministic)
    causal = self.causal and not self.decode  # decoding: `mask` holds causality over the cache slots
    out = layers.einsum_attention(q, k, v, mask, causal, bias=bias, scale=1.0)
    out = nn.with_logical_constraint(out, ('batch', 'length', 'heads', 'kv'))
    out = layers.HeadsDense(cfg, False, init_std=inner ** -0.5, name='out')(out, deterministic)
    return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)

  def _project(self, source, deterministic: bool = True):
    cfg = self.cfg
    return tuple(layers.HeadsDense(cfg, True, init_std=cfg.d_model ** -0.5, name=name)(source, deterministic)
                 for name in ('key', 'value'))

  def _cross_cache(self, context):
    """The encoder output's keys/values: projected and stored when `context` is given, else read from the cache."""
    if context is not None:
      k, v = self._project(context)
      for name, value in (('cross_key', k), ('cross_value', v)):
        self.variable('cache', name, lambda x=value: x).value = value
      return k, v
    return self.variable('cache', 'cross_key').value, self.variable('cache', 'cross_value').value


class EncoderBlock(nn.Module):
  """x + attn(norm(x)), then + mlp(norm(.)). Called as (x, mask, bias) -> (x, None) (layers.stack_blocks)."""
  cfg: layers.ModelConfig
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask, bias):
    cfg = self.cfg
    x = nn.with_logical_constraint(x, layers.ACTIVATION_AXES)
    h = layers.layer_norm(cfg, 'ln_attn')(x)
    x = x + T5Attention(cfg, name='attn')(h, None, mask, bias, self.deterministic)
    x = x + _mlp(cfg)(layers.layer_norm(cfg, 'ln_mlp')(x), self.deterministic)
    return nn.with_logical_constraint(x, layers.ACTIVATION_AXES), None


class DecoderBlock(nn.Module):
  """Causal self-attention, cross-attention over the encoder output, MLP; each pre-norm with a residual.
  Called as (x, mask, bias, encoded, cross_mask) -> (x, None)."""
  cfg: layers.ModelConfig
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask, bias, encoded, cross_mask):
    cfg = self.cfg
    x = nn.with_logical_constraint(x, layers.ACTIVATION_AXES)
    h = layers.layer_norm(cfg, 'ln_attn')(x)
    x = x + T5Attention(cfg, causal=True, decode=self.decode, name='attn')(h, None, mask, bias, self.deterministic)
    h = layers.layer_norm(cfg, 'ln_cross')(x)
    x = x + T5Attention(cfg, cross=True, decode=self.decode, name='cross')(h, encoded, cross_mask, None,
                                                                          self.deterministic)
    x = x + _mlp(cfg)(layers.layer_norm(cfg, 'ln_mlp')(x), self.deterministic)
    return nn.with_logical_constraint(x, layers.ACTIVATION_AXES), None


def _mlp(cfg):
  return layers.Mlp(cfg, in_std=cfg.d_model ** -0.5, out_std=cfg.d_ff ** -0.5, name='mlp')


def _positions(batch: dict, key: str, tokens) -> jax.Array:
  """The batch's positions under `key`, else 0..L-1 for every row ([1, L]: one bias for the whole batch)."""
  if key in batch:
    return batch[key]
  return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]


def _cross_mask(decoder_segments, encoder_segments):
  """[B, 1, T, S]: a decoder token sees the encoder tokens of its own example (segment), never padding."""
  return ((decoder_segments[:, :, None] == encoder_segments[:, None, :])
          & (encoder_segments[:, None, :] != 0))[:, None]


class Stack(nn.Module):
  """One stack: blocks of `block_cls` (layers.stack_blocks: looped or scanned, remat), final RMS norm, dropout."""
  cfg: layers.ModelConfig
  block_cls: type
  num_layers: int = 0  # 0 = cfg.num_layers

  @nn.compact
  def __call__(self, x, *args, train: bool, decode: bool = False):
    cfg = self.cfg
    x = layers.stack_blocks(cfg, not train, x, *args, decode=decode, block_cls=self.block_cls,
                            num_layers=self.num_layers)
    x = layers.layer_norm(cfg, 'ln_final')(x)
    return nn.Dropout(cfg.dropout)(x, deterministic=not train)


class T5(nn.Module):
  """Encoder-decoder LM. `__call__(batch)` -> {'logits': float32 [B, T, vocab]} (teacher forcing); `encode` and
  `decode` are the two halves, which lm/inference calls on their own: encode once, then decode with decode=True
  against a KV cache (batch: `inputs` [B, t], `positions` [B, t], `attention_mask` [B, 1, t, cache_len] over the
  cache slots, `encoder_segment_ids`; the encoder output at the first call only, None after)."""
  cfg: layers.ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embeddings = layers.Embeddings(cfg, token_std=1.0)
    self.encoder_bias = RelativeBias(cfg, bidirectional=True)
    self.decoder_bias = RelativeBias(cfg, bidirectional=False)
    self.encoder = Stack(cfg, EncoderBlock)
    self.decoder = Stack(cfg, DecoderBlock, cfg.num_decoder_layers)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                              dot_general=layers.dense_dot_general(cfg),
                              kernel_init=layers.logical_init(layers.dense_init(cfg.d_model ** -0.5),
                                                              ('embed', 'vocab')))

  def encode(self, batch: dict, train: bool = False) -> jax.Array:
    """The encoder output [B, S, d_model] of `encoder_inputs` (padding: `encoder_segment_ids` 0)."""
    tokens, segments = batch['encoder_inputs'], batch['encoder_segment_ids']
    x = self.embeddings(tokens, None, deterministic=not train)
    positions = _positions(batch, 'encoder_positions', tokens)
    bias = self.encoder_bias(positions, positions)
    mask = layers.attention_mask(segments) & (segments[:, None, None, :] != 0)
    return self.encoder(x, mask, bias, train=train)

  def decode(self, batch: dict, encoded, train: bool = False, decode: bool = False) -> dict:
    """{'logits'} of the decoder `inputs` given the encoder output (None on decoding steps after the first)."""
    cfg = self.cfg
    tokens = batch['inputs']
    x = self.embeddings(tokens, None, deterministic=not train)
    positions = _positions(batch, 'positions', tokens)
    if decode:  # slot s of the cache holds position s
      mask = batch['attention_mask']
      keys = jnp.arange(mask.shape[-1], dtype=jnp.int32)[None]
      cross_mask = (batch['encoder_segment_ids'] != 0)[:, None, None, :]
    else:
      segments = batch.get('segment_ids', jnp.ones_like(tokens))
      keys, mask = positions, layers.attention_mask(segments)
      cross_mask = _cross_mask(segments, batch['encoder_segment_ids'])
    bias = self.decoder_bias(positions, keys)
    x = self.decoder(x, mask, bias, encoded, cross_mask, train=train, decode=decode)
    if cfg.tie_embeddings:
      logits = self.embeddings.attend(x * cfg.d_model ** -0.5)
    else:
      logits = self.lm_head(x)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    return {'logits': logits.astype(jnp.float32)}

  def __call__(self, batch: dict, train: bool = False, decode: bool = False) -> dict:
    del decode  # decoding calls encode / decode directly
    return self.decode(batch, self.encode(batch, train), train)


Model = T5


def example_batch(config) -> dict:
  """A one-row dummy batch with the keys the model reads (decoder length = data.target_len or seq_len)."""
  target_len = config.data.target_len or config.seq_len
  return {'encoder_inputs': jnp.zeros((1, config.seq_len), jnp.int32),
          'encoder_segment_ids': jnp.ones((1, config.seq_len), jnp.int32),
          'inputs': jnp.zeros((1, target_len), jnp.int32),
          'segment_ids': jnp.ones((1, target_len), jnp.int32)}


def check_config(config) -> None:
  """T5's layout: relative positions, RMS norm, pre-norm, no biases."""
  m = config.model
  wanted = {'position': 'relative', 'norm_type': 'rmsnorm', 'norm': 'pre', 'use_bias': False}
  for key, value in wanted.items():
    if m[key] != value:
      raise ConfigError(f'model.{key}={m[key]!r}: the t5 family needs {value!r} (start from lm.models.t5.preset)')
  if m.activation not in ('geglu', 'relu'):
    raise ConfigError(f"model.activation={m.activation!r}: the t5 family uses 'geglu' (v1.1) or 'relu' (v1.0)")
  if config.data.task == 'pretrain' and config.data.target_len:
    raise ConfigError(f'data.target_len={config.data.target_len}: span corruption derives the decoder length from '
                      'seq_len and data.noise_density; leave it 0')
  if m.relative_attention_buckets < 4 or m.relative_attention_max_distance < m.relative_attention_buckets // 2:
    raise ConfigError('model.relative_attention_buckets must be >= 4 and relative_attention_max_distance >= half '
                      f'of it, got {m.relative_attention_buckets} / {m.relative_attention_max_distance}')


def sparse_params(config) -> float:
  """Every parameter runs for every token of its stack (the FLOP model counts the stacks separately)."""
  del config
  return 0.0


def preset(c, version: str = '1.1'):
  """Turns config `c` into a T5 encoder-decoder: '1.1' (gated GELU, untied head) or '1.0' (ReLU, tied head)."""
  if version not in ('1.0', '1.1'):
    raise ValueError(f'T5 version {version!r}: choose 1.0 or 1.1')
  m = c.model
  m.type, m.position, m.norm, m.norm_type = 't5', 'relative', 'pre', 'rmsnorm'
  m.use_bias, m.layer_norm_eps = False, 1e-6
  m.activation, m.tie_embeddings = ('geglu', False) if version == '1.1' else ('relu', True)
  # T5's optimizer (t5x): Adafactor, steps relative to each parameter's RMS, lr 1e-2 for pretraining. AdamW at that
  # scale blows the encoder's residual stream up to a near-constant vector the decoder cannot use (WORKSPACE).
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay = 'adafactor', 1e-2, 0.0
  c.objectives = {'seq2seq': 1.0}
  c.data.num_sentinels = 100  # T5's <extra_id_0..99> at the top of the vocabulary
  c.num_samples = 0  # lm's end-of-training samples are for causal models
  return c
