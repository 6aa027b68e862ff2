"""The FLOP model (PaLM's 6N + 12·L·d·T per token), matmul peak measurements and the datasheet peak table: what MFU is
measured against, in training's progress line, lm.bench and lm.aot."""
import functools
import math
import time

import jax
import jax.numpy as jnp

from lm import objectives
from lm.models import registry

# Peak dense bf16 FLOP/s per chip, from the vendors' spec sheets. Matched against `device.device_kind` (lowercase,
# first substring hit). CPUs are measured instead (see `measured_cpu_flops`).
PEAK_FLOPS = (
    ('v6', 918e12), ('v5p', 459e12), ('v5 lite', 197e12), ('v5e', 197e12), ('tpu v5', 459e12), ('v4', 275e12),
    ('v3', 123e12),
    ('h200', 989e12), ('h100', 989e12), ('a100', 312e12), ('l4', 121e12), ('a10', 125e12),
)


def flops_per_token(config, num_params: int) -> float:
  """Training FLOPs per token of `config`, PaLM convention (Chowdhery et al. 2022, App. B): 6·N + 12·L·d·T.

  N counts the parameters whose matmuls run for every token: all except lookup tables (learned positions, token
  types, and the input token table when it is not tied; tied, the table counts once as the output projection).
  The attention term counts the full score and value matmuls (no causal discount, as PaLM and nanoGPT do; an
  encoder computes them all anyway). Forward + backward = 3x forward. For the BERT encoder the MLM head (transform
  + vocab projection) runs only on the max_predictions_per_seq gathered positions and the pooler/NSP head once per
  sequence, so they count with those fractions (the family's `sparse_params`, models/registry.py). Objectives with
  two views (contrastive) double it.
  """
  m, seq_len = config.model, config.seq_len
  lookups = (m.max_len if m.position == "learned" else 0) + m.type_vocab_size
  lookups += 0 if m.tie_embeddings else m.vocab_size
  n = num_params - lookups * m.d_model
  sparse = registry.get(m.type).impl.sparse_params(config)  # e.g. BERT's MLM head on the gathered positions
  if sparse:
    n -= sparse
  flops = 6.0 * n + 12.0 * m.num_layers * m.d_model * seq_len
  views = max(objectives.OBJECTIVES[name].views for name in config.objectives)
  return flops * views


def decoder_len(config) -> int:
  """Decoder tokens per example of an encoder-decoder config: span corruption's target length for pretraining
  (data/span_corruption.decoder_length), else data.target_len (0 = seq_len)."""
  if config.data.task == 'pretrain':
    from lm.data import span_corruption
    return span_corruption.decoder_length(config.seq_len, config.data.noise_density,
                                          config.data.mean_noise_span_length, config.data.span_targets)
  return config.data.target_len or config.seq_len


def tokens_per_example(config) -> int:
  """Tokens one example feeds the model: seq_len, or encoder + decoder tokens for an encoder-decoder."""
  if registry.get(config.model.type).encoder_decoder:
    return config.seq_len + decoder_len(config)
  return config.seq_len


def encoder_decoder_flops(config) -> float:
  """Training FLOPs of one encoder-decoder example, the PaLM convention applied to each stack: 6 x (matmul
  parameters) per token of the stack that runs them, plus 12·L·A·(keys) per token for the score and value matmuls
  (A = heads x head_dim). Encoder (S tokens): attention 4·d·A + MLP per block, self-attention over S keys. Decoder
  (T tokens): self- and cross-attention 8·d·A + MLP per block, attention over T + S keys, and the output projection
  d·V (tied or not: the input table is a lookup). Norms and the relative position tables are not counted."""
  m = config.model
  source, target = config.seq_len, decoder_len(config)
  inner = m.num_heads * (m.head_dim or m.d_model // m.num_heads)
  mlp = (3 if m.activation in ('swiglu', 'geglu') else 2) * m.d_model * m.d_ff
  decoder_layers = m.num_decoder_layers or m.num_layers
  encoder = source * (6.0 * m.num_layers * (4 * m.d_model * inner + mlp) + 12.0 * m.num_layers * inner * source)
  decoder = target * (6.0 * (decoder_layers * (8 * m.d_model * inner + mlp) + m.d_model * m.vocab_size)
                      + 12.0 * decoder_layers * inner * (target + source))
  return encoder + decoder


def flops_per_step(config, num_params: int) -> float:
  """Training FLOPs of one step of config.batch_size examples (flops_per_token x seq_len per example, or
  encoder_decoder_flops)."""
  if registry.get(config.model.type).encoder_decoder:
    return encoder_decoder_flops(config) * config.batch_size
  return flops_per_token(config, num_params) * config.batch_size * config.seq_len


def matmul_flops(n: int, dtype: str = 'float32', repeats: int = 4, device=None) -> float:
  """FLOP/s of a jitted n×n @ n×n matmul in `dtype` on `device` (best of `repeats` timed calls after a warm-up)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def best_matmul_flops(dtype: str = 'float32', sizes: tuple[int, ...] = (1024, 2048, 4096), device=None,
                      repeats: int = 8) -> dict:
  """{'flops': the best FLOP/s over square matmuls of `sizes`, 'n': its size, 'by_size': {n: FLOP/s}}: the
  measured peak of one device in the training dtype, which lm.bench reports MFU against."""
  by_size = {n: matmul_flops(n, dtype, repeats, device) for n in sizes}
  n = max(by_size, key=by_size.get)
  return {'flops': by_size[n], 'n': n, 'by_size': by_size}


@functools.cache
def measured_cpu_flops() -> float:
  """FLOP/s of a jitted f32 1024×1024 matmul on this CPU: what training's MFU line is relative to on a CPU (a quick
  measure at start-up; lm.bench measures the best of larger sizes)."""
  return matmul_flops(1024, repeats=8)


def datasheet_peak_flops(device=None) -> float:
  """Dense bf16 FLOP/s of one accelerator from PEAK_FLOPS (0 for CPUs and unknown kinds)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return 0.0
  kind = device.device_kind.lower()
  return next((peak for key, peak in PEAK_FLOPS if key in kind), 0.0)


def peak_flops_per_device(device=None) -> float:
  """Peak FLOP/s of one device: from PEAK_FLOPS for accelerators, measured for CPUs (0 if unknown)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return measured_cpu_flops() / max(len(jax.local_devices()), 1)
  return datasheet_peak_flops(device)
