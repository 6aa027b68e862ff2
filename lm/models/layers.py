"""Transformer building blocks shared by every model: embeddings, norms, attention, MLP, blocks.

Every parameter carries logical axis names (`batch`, `length`, `embed`, `mlp`, `heads`, `kv`, `vocab`, `layers`);
`lm/sharding.py` maps them to mesh axes. Activations are constrained at block boundaries.
"""
import dataclasses
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.models import lora

ACTIVATION_AXES = ('batch', 'length', 'embed')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static, hashable copy of `config.model` (see lm/config/base.py for each field)."""
  num_layers: int
  num_heads: int
  d_model: int
  d_ff: int
  vocab_size: int
  max_len: int
  position: str = 'learned'
  rope_theta: float = 10000.0
  dropout: float = 0.0
  layer_norm_eps: float = 1e-5
  tie_embeddings: bool = True
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  attention_impl: str = 'einsum'
  attention_block: int = 0  # causal einsum attention: query block size (0 = causal_block(T))
  projection_impl: str = 'auto'  # Dense / HeadsDense: 'matmul' (2-D over flattened tokens), 'einsum', 'auto' (both)
  remat: str = 'none'
  scan_layers: bool = False
  norm: str = 'pre'
  activation: str = 'gelu_tanh'
  norm_type: str = 'layernorm'
  use_bias: bool = True
  num_kv_heads: int = 0
  type_vocab_size: int = 0
  num_labels: int = 0
  task_head: str = 'class'  # the fine-tuning head: 'class' (per sequence), 'span' (QA start/end), 'token' (tags)
  causal: bool = True
  head_dim: int = 0  # per-head size (0 = d_model // num_heads; filled in by __post_init__)
  num_decoder_layers: int = 0  # encoder-decoder: decoder blocks (0 = num_layers)
  relative_attention_buckets: int = 32  # position='relative' (T5): buckets of the relative position bias
  relative_attention_max_distance: int = 128  # position='relative': distances beyond this share the last bucket
  embedding_norm: bool = False  # a LayerNorm right after the embeddings in a pre-LN model (BLOOM)
  position_offset: int = 0  # position='learned': row of position 0 in the table (OPT: 2; the table has max_len + it)
  lora_rank: int = 0  # LoRA adapters (models/lora.py) of this rank on the kernels lora_targets selects (0 = none)
  lora_alpha: float = 16.0  # LoRA: the adapter's output is scaled by lora_alpha / lora_rank
  lora_targets: str = ''  # LoRA: regex searched in kernel paths ('block_0/attn/query/kernel')
  lora_dropout: float = 0.0  # LoRA: dropout on the adapter's input

  def __post_init__(self):
    if not self.head_dim:
      object.__setattr__(self, 'head_dim', self.d_model // self.num_heads)

  @classmethod
  def from_config(cls, model_cfg, **overrides) -> 'ModelConfig':
    """Builds it from an ml_collections `config.model`, ignoring keys that are not model-shape fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in model_cfg.items() if k in names}
    values.update(overrides)
    return cls(**values)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads


def path_name(path) -> str:
  """'block_0/attn/query/kernel' for a jax tree path: the one naming of parameters (optimizer masks, checkpoints,
  init_from tables, HF rules)."""
  return '/'.join(str(getattr(key, 'key', key)) for key in path)


def logical_init(initializer, axes):
  """Wraps an initializer so the parameter carries logical axis names."""
  return nn.with_logical_partitioning(initializer, axes)


def dense_init(std: float = 0.02):
  return nn.initializers.normal(stddev=std)


def token_matmul(x: jax.Array, kernel: jax.Array, in_dims: int = 1, precision=None) -> jax.Array:
  """x [..., *K] times kernel [*K, *N] (x's last `in_dims` axes contracted with the kernel's first) as ONE 2-D matmul
  [tokens, prod K] x [prod K, prod N], reshaped to [..., *N]: the products and sums of the einsum, but XLA:CPU lays
  out a 2-D dot and its two gradient dots without the transposed copies it makes around contractions of [B, T, ...]
  activations (model.projection_impl='matmul'; WORKSPACE.md, Benchmarks: +5-7% of a GPT-2 train step on CPU)."""
  lead, contracted = x.shape[:-in_dims], x.shape[-in_dims:]
  size = math.prod(contracted)
  out = jnp.matmul(x.reshape(-1, size), kernel.reshape(size, -1), precision=precision)
  return out.reshape(*lead, *kernel.shape[in_dims:])


def _token_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """lax.dot_general for nn.Dense ([..., K] x [K, N]) by `token_matmul` (nn.Dense's `dot_general` field)."""
  assert dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and preferred_element_type is None
  return token_matmul(lhs, rhs, precision=precision)


def _per_platform(cpu, other, x, kernel):
  """cpu(x, kernel) when the program is lowered for a CPU, other(x, kernel) elsewhere (lax.platform_dependent: the
  choice is made at lowering, so lm.aot on a CPU host compiles the TPU program; the compiler sees one branch)."""
  return jax.lax.platform_dependent(x, kernel, cpu=cpu, default=other)


def _auto_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """nn.Dense's `dot_general` for projection_impl='auto': `_token_dot_general` on CPU, lax.dot_general elsewhere."""
  cpu = functools.partial(_token_dot_general, dimension_numbers=dimension_numbers, precision=precision)
  other = functools.partial(jax.lax.dot_general, dimension_numbers=dimension_numbers, precision=precision,
                            preferred_element_type=preferred_element_type)
  return _per_platform(cpu, other, lhs, rhs)


def dense_dot_general(cfg: ModelConfig):
  """The `dot_general` of the model's nn.Dense projections: `token_matmul` (projection_impl='matmul'), XLA's (None:
  nn.Dense's own lax.dot_general over [B, T, K]; 'einsum'), or the first on CPU and the second elsewhere ('auto')."""
  return {'matmul': _token_dot_general, 'einsum': None, 'auto': _auto_dot_general}[cfg.projection_impl]


def head_projection(cfg: ModelConfig, equation: str, in_dims: int):
  """x, kernel -> the per-head projection `equation` ('btd,dhk->bthk' or 'bthk,hkd->btd', `in_dims` contracted
  axes of x) as `token_matmul` ('matmul'), jnp.einsum ('einsum'), or the first on CPU and the second elsewhere."""
  matmul = functools.partial(token_matmul, in_dims=in_dims)
  einsum = functools.partial(jnp.einsum, equation)
  if cfg.projection_impl == 'auto':
    return functools.partial(_per_platform, matmul, einsum)
  return matmul if cfg.projection_impl == 'matmul' else einsum


def layer_norm(cfg: ModelConfig, name: str | None = None) -> nn.Module:
  """The model's normalisation (LayerNorm, or RMSNorm for norm_type='rmsnorm') with logically partitioned params."""
  if cfg.norm_type == 'rmsnorm':
    return nn.RMSNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                      scale_init=logical_init(nn.initializers.ones, ('embed',)))
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
      scale_init=logical_init(nn.initializers.ones, ('embed',)),
      bias_init=logical_init(nn.initializers.zeros, ('embed',)))


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (rotate-half form) of x [B, T, H, D] at integer positions [B, T]."""
  half = x.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None].astype(jnp.float32) * freqs  # [B, T, D/2]
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi's per-head slopes (Press et al. 2022, as BLOOM computes them): 2^(-8k/n) for k = 1..n, n the largest
  power of two <= num_heads; the heads left over take every other slope of the sequence for 2n (1st, 3rd, ...)."""
  closest = 2 ** math.floor(math.log2(num_heads))
  base = np.float32(2.0 ** (-(2.0 ** -(math.log2(closest) - 3))))
  slopes = [np.power(base, np.arange(1, closest + 1, dtype=np.float32))]
  if closest != num_heads:
    extra = np.float32(2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3))))
    slopes.append(np.power(extra, np.arange(1, 1 + 2 * min(closest, num_heads - closest), 2, dtype=np.float32)))
  return np.concatenate(slopes).astype(np.float32)


def alibi_bias(num_heads: int, key_positions: jax.Array) -> jax.Array:
  """ALiBi's additive score bias [B, heads, 1, S] = slope_h * key position. The linear penalty -slope * (query
  position - key position) differs from it by a constant per query row, which softmax ignores; so any positions
  that count up by one within each attended document work: per-document positions (packing), or cache slots
  (decoding, where a left-padded row's slots and positions differ by its padding)."""
  slopes = jnp.asarray(alibi_slopes(num_heads))
  return slopes[None, :, None, None] * key_positions[:, None, None, :].astype(jnp.float32)


def attention_mask(segment_ids: jax.Array | None) -> jax.Array | None:
  """Boolean mask [B, 1, T, T]: a token attends only inside its own segment (document)."""
  if segment_ids is None:
    return None
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None, :, :]


class Segments(NamedTuple):
  """Self-attention's mask given as packed documents: query i sees key j iff ids[i] == ids[j]. Attention builds
  the [B, 1, t, s] part each query block needs from the [B, T] ids (`mask_block`), so no [B, 1, T, T] mask is
  made or kept for the backward pass."""
  ids: jax.Array


def mask_block(mask, start: int, end: int, key_end: int):
  """Rows start:end, keys :key_end of a mask: a boolean [B, 1, T, S] array, `Segments`, or None (no mask)."""
  if isinstance(mask, Segments):
    return (mask.ids[:, None, start:end, None] == mask.ids[:, None, None, :key_end])
  return None if mask is None else mask[:, :, start:end, :key_end]


def _softmax_attend(q, k, v, mask, causal: bool, offset: int, bias=None, scale: float | None = None):
  """Head-major q [B, H, t, D] against k, v [B, Hkv, s, D]; query i sits at position offset + i for causality.

  With grouped-query attention (Hkv < H) each group of H/Hkv query heads reads its key/value head in place (no
  repeated copy of the keys and values, which matters when decoding against a long cache). Scores are scaled by
  `scale` (None = 1/sqrt(D)) and `bias` [B or 1, H, t, s] (float32) is added to them (T5's relative positions).
  """
  b, heads, t, dim = q.shape
  groups = heads // k.shape[1]
  if groups > 1:
    q = q.reshape(b, k.shape[1], groups, t, dim)
    mask = None if mask is None else mask[:, :, None]
    bias = None if bias is None else bias.reshape(bias.shape[0], k.shape[1], groups, *bias.shape[2:])
  spec = 'bkgtd,bksd->bkgts' if groups > 1 else 'bhtd,bhsd->bhts'
  scores = jnp.einsum(spec, q, k, preferred_element_type=jnp.float32)
  scores = scores * dim ** -0.5 if scale is None else scores * scale
  if bias is not None:
    scores = scores + bias
  allowed = mask
  if causal:
    lower = (jnp.arange(t) + offset)[:, None] >= jnp.arange(k.shape[2])[None, :]
    allowed = lower if allowed is None else allowed & lower
  if allowed is not None:
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum('bkgts,bksd->bkgtd' if groups > 1 else 'bhts,bhsd->bhtd', probs, v)
  return out.reshape(b, heads, t, dim)


def causal_block(length: int) -> int:
  """Query block of causal einsum attention: 64 tokens, more for long sequences (at most 8 blocks)."""
  return max(64, -(-length // 8))


def einsum_attention(q, k, v, mask: jax.Array | None, causal: bool, bias: jax.Array | None = None,
                     scale: float | None = None, block: int = 0) -> jax.Array:
  """Softmax attention as einsums over head-major copies of q, k, v [B, T, heads, head_dim].

  Scores and softmax in float32. Grouped-query keys/values (fewer heads) serve their query heads in place.
  `mask` ([B, 1, T, S] booleans, True = may attend, or `Segments`, built block by block) and `causal` combine.
  Causal self-attention runs in query blocks (`causal_block`), each against the keys up to its end only, so the
  masked upper triangle is mostly not computed (5/8 of the scores at 4 blocks). On a CPU this is 3x faster than
  jax.nn.dot_product_attention's 'xla' path (WORKSPACE.md, Benchmarks). `bias` [B or 1, heads, T, S] is added to the
  scores, which are scaled by `scale` (None = 1/sqrt(head_dim); T5 uses 1). `block` overrides the query block
  (model.attention_block; >= T: one block).
  """
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B, heads, T, head_dim]
  length = q.shape[2]
  block = block or causal_block(length)
  if not causal or length != k.shape[2] or length <= block:
    whole = mask_block(mask, 0, length, k.shape[2])
    return _softmax_attend(q, k, v, whole, causal, 0, bias, scale).transpose(0, 2, 1, 3)
  outs = []
  for start in range(0, length, block):
    end = min(start + block, length)
    block_mask = mask_block(mask, start, end, end)
    block_bias = None if bias is None else bias[:, :, start:end, :end] if bias.shape[2] > 1 else bias[..., :end]
    outs.append(_softmax_attend(q[:, :, start:end], k[:, :, :end], v[:, :, :end], block_mask, True, start,
                                block_bias, scale))
  return jnp.concatenate(outs, axis=2).transpose(0, 2, 1, 3)


def pallas_tpu_attention(q, k, v, mask) -> jax.Array:
  """Causal self-attention by the Pallas TPU flash-attention kernel (jax.experimental.pallas.ops.tpu), with the
  packed documents of `Segments` as its segment ids; q, k, v [B, T, heads, head_dim]. TPU only (model.attention_impl
  'pallas_tpu'; lm.aot compiles it for a TPU topology anywhere). A Mosaic kernel is not partitioned by XLA, so under
  a mesh it runs per shard (shard_map over the batch and head axes, as the logical rules place them); grouped-query
  keys/values are repeated per head."""
  from jax.experimental.pallas.ops.tpu import flash_attention  # TPU-only: imports Pallas and Mosaic
  groups = q.shape[2] // k.shape[2]
  if groups > 1:
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  ids = mask.ids if isinstance(mask, Segments) else jnp.ones(q.shape[:2], jnp.int32)

  def kernel(q, k, v, ids):
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    out = flash_attention.flash_attention(q, k, v, segment_ids=flash_attention.SegmentIds(ids, ids), causal=True,
                                          sm_scale=q.shape[-1] ** -0.5)
    return out.transpose(0, 2, 1, 3)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return kernel(q, k, v, ids)
  spec = nn.logical_to_mesh_axes(('batch', 'length', 'heads', 'kv'))
  in_specs = (spec, spec, spec, jax.sharding.PartitionSpec(*spec[:2]))
  return jax.shard_map(kernel, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)(q, k, v, ids)


class HeadsDense(nn.Module):
  """Projection between [.., embed] and [.., heads, head_dim] with a 3-D kernel carrying logical names.

  (nn.DenseGeneral initialises a flat 2-D kernel and reshapes it, which breaks 3-D logical names under a mesh.)
  """
  cfg: ModelConfig
  to_heads: bool  # True: embed -> (heads, kv); False: (heads, kv) -> embed
  init_std: float = 0.02
  heads: int = 0  # number of heads (0 = cfg.num_heads; grouped-query keys/values have fewer)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    cfg = self.cfg
    heads = self.heads or cfg.num_heads
    out = self._project(x, heads)
    if lora.targets(cfg, '/'.join(self.path) + '/kernel'):
      out_shape, in_axes, out_axes = (((heads, cfg.head_dim), ('embed',), ('heads', 'kv')) if self.to_heads else
                                      ((cfg.d_model,), ('heads', 'kv'), ('embed',)))
      out = out + lora.delta(self, x, in_axes, out_shape, out_axes, deterministic)
    return out

  def _project(self, x, heads: int):
    cfg = self.cfg
    if self.to_heads:
      shape, axes, bias_shape, bias_axes = (cfg.d_model, heads, cfg.head_dim), ('embed', 'heads', 'kv'), (
          heads, cfg.head_dim), ('heads', 'kv')
      equation = 'btd,dhk->bthk'
    else:
      shape, axes, bias_shape, bias_axes = (heads, cfg.head_dim, cfg.d_model), ('heads', 'kv', 'embed'), (
          cfg.d_model,), ('embed',)
      equation = 'bthk,hkd->btd'
    kernel = self.param('kernel', logical_init(dense_init(self.init_std), axes), shape, cfg.param_dtype)
    project = head_projection(cfg, equation, in_dims=1 if self.to_heads else 2)
    if not cfg.use_bias:
      x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=cfg.dtype)
      return project(x, kernel)
    bias = self.param('bias', logical_init(nn.initializers.zeros, bias_axes), bias_shape, cfg.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=cfg.dtype)
    return project(x, kernel) + bias


class Attention(nn.Module):
  """Multi-head self-attention: `einsum_attention` (model.attention_impl='einsum', the default, and always when
  decoding) or `jax.nn.dot_product_attention` with the named implementation ('xla', 'cudnn', 'auto').

  decode=True: keys and values also go into a 'cache' collection ([B, cache_len, heads, head_dim] each, plus the
  write index); the call attends over the whole cache, and `mask` [B, 1, T, cache_len] says which slots each query
  sees (causality included). `model.init` in decode mode creates the cache with the input's length.
  """
  cfg: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask, positions, deterministic: bool):
    cfg = self.cfg
    q = HeadsDense(cfg, True, name='query')(x, deterministic)
    k, v = (HeadsDense(cfg, True, heads=cfg.kv_heads, name=name)(x, deterministic) for name in ('key', 'value'))
    if cfg.position == 'rope':
      q, k = rope(q, positions, cfg.rope_theta), rope(k, positions, cfg.rope_theta)
    impl = cfg.attention_impl
    if self.decode:
      k, v = self._cached(k, v)
      impl = 'einsum'  # one query row against a long cache: memory-bound, and every backend has it
    bias = None
    if cfg.position == 'alibi':  # keys at their positions, or at their cache slots when decoding (see alibi_bias)
      bias = alibi_bias(cfg.num_heads, jnp.arange(k.shape[1])[None] if self.decode else positions)
    if impl == 'einsum':
      out = einsum_attention(q, k, v, mask, cfg.causal and not self.decode, bias, block=cfg.attention_block)
    elif impl == 'pallas_tpu':
      out = pallas_tpu_attention(q, k, v, mask)
    else:
      dense = mask_block(mask, 0, q.shape[1], k.shape[1])
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=dense, is_causal=cfg.causal,
                                         implementation=None if impl == 'auto' else impl)
    out = nn.with_logical_constraint(out, ('batch', 'length', 'heads', 'kv'))
    out = HeadsDense(cfg, False, init_std=0.02 / (2 * cfg.num_layers) ** 0.5, name='out')(out, deterministic)
    return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)

  def _cached(self, k, v):
    return cache_keys_values(self, k, v)


def cache_keys_values(module: nn.Module, k, v):
  """Writes k, v [B, T, ...] into `module`'s KV cache at its index, advances the index by T; returns the whole
  cache. The first call (model.init in decode mode) creates the cache with the input's length."""
  initialised = module.has_variable('cache', 'cached_key')
  cached_k = module.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
  cached_v = module.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
  index = module.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
  if not initialised:  # creating the cache (model.init): nothing to write yet
    return k, v
  axes = ('batch', 'length', 'heads', 'kv')
  for var, new in ((cached_k, k), (cached_v, v)):
    updated = jax.lax.dynamic_update_slice_in_dim(var.value, new.astype(var.value.dtype), index.value, axis=1)
    var.value = nn.with_logical_constraint(updated, axes)
  index.value = index.value + k.shape[1]
  return cached_k.value, cached_v.value


ACTIVATIONS = {
    'gelu_tanh': functools.partial(nn.gelu, approximate=True),  # GPT-2
    'gelu': functools.partial(nn.gelu, approximate=False),  # BERT (exact, erf)
    'swiglu': nn.silu,  # Llama: the gate's activation (Mlp multiplies it by the up projection)
    'geglu': functools.partial(nn.gelu, approximate=True),  # T5 v1.1: gated tanh-GELU (gate activation, as swiglu)
    'relu': nn.relu,  # T5 v1.0
}
GATED = ('swiglu', 'geglu')  # activations of a gated MLP: fc_out(act(fc_gate(x)) * fc_in(x))


class Embeddings(nn.Module):
  """Token (+ learned position) (+ token-type) embeddings, LayerNorm for post-LN models (and BLOOM's
  embedding_norm), dropout. A learned table with position_offset k holds max_len + k rows, position p at row p + k
  (OPT keeps 2 unused rows first).

  `attend` is the tied output projection onto the token table.
  """
  cfg: ModelConfig
  token_std: float = 0.02  # init of the token table (T5: 1.0)

  def setup(self):
    cfg = self.cfg
    embed = functools.partial(nn.Embed, features=cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.token = embed(cfg.vocab_size, embedding_init=logical_init(dense_init(self.token_std), ('vocab', 'embed')))
    if cfg.position == 'learned':
      self.position = embed(cfg.max_len + cfg.position_offset,
                            embedding_init=logical_init(dense_init(0.01), (None, 'embed')))
    if cfg.type_vocab_size:
      self.token_type = embed(cfg.type_vocab_size, embedding_init=logical_init(dense_init(), (None, 'embed')))
    if cfg.norm == 'post' or cfg.embedding_norm:
      self.norm = layer_norm(cfg)
    self.dropout = nn.Dropout(cfg.dropout)

  def __call__(self, inputs, positions, token_types=None, deterministic: bool = True):
    x = self.token(inputs)
    if self.cfg.position == 'learned':
      x = x + self.position(positions + self.cfg.position_offset if self.cfg.position_offset else positions)
    if self.cfg.type_vocab_size:
      x = x + self.token_type(jnp.zeros_like(inputs) if token_types is None else token_types)
    if self.cfg.norm == 'post' or self.cfg.embedding_norm:
      x = self.norm(x)
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x):
    return self.token.attend(x)


class Dense(nn.Dense):
  """nn.Dense (the same parameters and computation) that carries a LoRA adapter when model.lora_targets selects its
  kernel (models/lora.py)."""
  cfg: ModelConfig | None = None
  kernel_axes: tuple = ()  # the kernel's logical axes (the adapter's A and B take them)

  @nn.compact
  def __call__(self, inputs, deterministic: bool = True):
    out = super().__call__(inputs)
    if self.cfg is not None and lora.targets(self.cfg, '/'.join(self.path) + '/kernel'):
      out = out + lora.delta(self, inputs, self.kernel_axes[:1], (self.features,), self.kernel_axes[1:], deterministic)
    return out


class Mlp(nn.Module):
  """Position-wise feed-forward: dense -> activation -> dense, or gated (GATED: SwiGLU for Llama, GeGLU for T5
  v1.1): fc_out(act(fc_gate(x)) * fc_in(x))."""
  cfg: ModelConfig
  in_std: float = 0.02  # init of fc_in / fc_gate
  out_std: float | None = None  # init of fc_out (None = 0.02 / sqrt(2 * num_layers), GPT-2's scaled init)

  def _dense(self, features: int, axes: tuple, name: str, std: float = 0.02) -> Dense:
    cfg = self.cfg
    return Dense(features, use_bias=cfg.use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
                 dot_general=dense_dot_general(cfg),
                 kernel_init=logical_init(dense_init(std), axes),
                 bias_init=logical_init(nn.initializers.zeros, axes[-1:]), cfg=cfg, kernel_axes=axes)

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    h = self._dense(cfg.d_ff, ('embed', 'mlp'), 'fc_in', self.in_std)(x, deterministic)
    if cfg.activation in GATED:
      gate = self._dense(cfg.d_ff, ('embed', 'mlp'), 'fc_gate', self.in_std)(x, deterministic)
      h = ACTIVATIONS[cfg.activation](gate) * h
    else:
      h = ACTIVATIONS[cfg.activation](h)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    out_std = 0.02 / (2 * cfg.num_layers) ** 0.5 if self.out_std is None else self.out_std
    out = self._dense(cfg.d_model, ('mlp', 'embed'), 'fc_out', out_std)(h, deterministic)
    return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
  """A transformer block. Signature (carry, mask, positions) -> (carry, None), as nn.scan wants.

  norm='pre' (GPT-2): x + attn(LN(x)), then + mlp(LN(.)). norm='post' (original BERT): LN(x + attn(x)), then
  LN(. + mlp(.)).
  """
  cfg: ModelConfig
  deterministic: bool = True
  decode: bool = False  # see Attention

  @nn.compact
  def __call__(self, x, mask, positions):
    cfg = self.cfg
    attn, mlp = Attention(cfg, self.decode, name='attn'), Mlp(cfg, name='mlp')
    ln_attn, ln_mlp = layer_norm(cfg, 'ln_attn'), layer_norm(cfg, 'ln_mlp')
    x = nn.with_logical_constraint(x, ACTIVATION_AXES)
    if cfg.norm == 'pre':
      x = x + attn(ln_attn(x), mask, positions, self.deterministic)
      x = x + mlp(ln_mlp(x), self.deterministic)
    else:
      x = ln_attn(x + attn(x, mask, positions, self.deterministic))
      x = ln_mlp(x + mlp(x, self.deterministic))
    return nn.with_logical_constraint(x, ACTIVATION_AXES), None


_REMAT_POLICIES = {
    'full': None,
    'dots': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def stack_blocks(cfg: ModelConfig, deterministic: bool, x, *args, decode: bool = False, block_cls=Block,
                 num_layers: int = 0):
  """Applies `num_layers` (0 = cfg.num_layers) blocks of `block_cls` to x, each also given `args` (the same for
  every block: masks, positions, biases), optionally rematerialised (training only) and/or scanned (one compiled
  block). A block is `block_cls(cfg, deterministic, decode)`, called as (x, *args) -> (x, None)."""
  num_layers = num_layers or cfg.num_layers
  if cfg.remat != 'none' and not decode:
    block_cls = nn.remat(block_cls, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    scanned = nn.scan(block_cls, variable_axes={'params': 0, 'cache': 0}, split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * len(args), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
    x, _ = scanned(cfg, deterministic, decode, name='blocks')(x, *args)
    return x
  for i in range(num_layers):
    x, _ = block_cls(cfg, deterministic, decode, name=f'block_{i}')(x, *args)
  return x


def body(cfg: ModelConfig, batch: dict, train: bool, decode: bool = False):
  """Embeddings -> blocks (-> final LN for pre-LN): the part every model shares. Returns (hidden, embeddings).

  The attention mask is `batch['attention_mask']` [B, 1, T, S] when given (decoding), else `Segments` of
  `segment_ids` (built inside each attention block). Call it from a model's compact `__call__`; the submodules it
  creates belong to that model.
  """
  inputs = batch['inputs']
  positions = batch['positions'] if 'positions' in batch else jnp.broadcast_to(
      jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape)
  embeddings = Embeddings(cfg, name='embeddings')
  x = embeddings(inputs, positions, batch.get('token_types'), deterministic=not train)
  segment_ids = batch.get('segment_ids')
  mask = batch['attention_mask'] if 'attention_mask' in batch else None if segment_ids is None else Segments(
      segment_ids)
  x = stack_blocks(cfg, not train, x, mask, positions, decode=decode)
  if cfg.norm == 'pre':
    x = layer_norm(cfg, 'ln_final')(x)
  return x, embeddings
