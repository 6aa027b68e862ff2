"""LoRA adapters (Hu et al. 2021): a kernel W targeted by model.lora_targets computes x·W + (alpha/r)·(x·A)·B, with
A [in, r] and B [r, out] its only trained parameters ('<module>/lora_a', '<module>/lora_b' beside its kernel).

B starts at zero, so step 0 is the base model exactly; A starts uniform in ±1/sqrt(in) (PEFT's kaiming-uniform
default); model.lora_dropout drops x on the adapter's path only. Every dense layer of the model families can take an
adapter: the attention projections (layers.HeadsDense, 3-D kernels: A and B keep the head axes) and the 2-D denses
(layers.Dense: MLP, heads). `merged` folds the adapters into the kernels (the model without LoRA computes the same
function); training freezes everything else (training/optim.frozen_mask) and checkpoints hold the adapters and task
heads only (store/checkpoint.persistent_params).
"""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ADAPTERS = ('lora_a', 'lora_b')  # parameter names of an adapter, beside the kernel it adapts


def is_adapter(path: str) -> bool:
  """True for the '/'-path of a LoRA parameter ('block_0/attn/query/lora_a')."""
  return path.rsplit('/', 1)[-1] in ADAPTERS


def targets(cfg, kernel_path: str) -> bool:
  """True when model.lora_targets (a regex, searched) selects the kernel at `kernel_path`, LoRA being on."""
  return bool(cfg.lora_rank) and re.search(cfg.lora_targets, kernel_path) is not None


def scale(cfg) -> float:
  """The adapter's output scale alpha / r."""
  return cfg.lora_alpha / cfg.lora_rank


def delta(module: nn.Module, x, in_axes: tuple, out_shape: tuple, out_axes: tuple, deterministic: bool = True):
  """(alpha/r)·(x·A)·B for a kernel of `module` reading the last len(in_axes) dims of x and writing `out_shape`,
  creating lora_a [*in, r] and lora_b [r, *out] (logical axes: the kernel's, the rank unsharded)."""
  cfg = module.cfg
  in_shape = x.shape[x.ndim - len(in_axes):]
  bound = 1.0 / np.sqrt(int(np.prod(in_shape)))
  a = module.param('lora_a', nn.with_logical_partitioning(
      lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound), in_axes + (None,)),
      in_shape + (cfg.lora_rank,), cfg.param_dtype)
  b = module.param('lora_b', nn.with_logical_partitioning(nn.initializers.zeros, (None,) + out_axes),
                   (cfg.lora_rank,) + tuple(out_shape), cfg.param_dtype)
  x = nn.Dropout(cfg.lora_dropout)(x, deterministic=deterministic) if cfg.lora_dropout else x
  x, a, b = nn.dtypes.promote_dtype(x, a, b, dtype=cfg.dtype)
  low = jnp.tensordot(x, a, axes=len(in_axes))
  return jnp.tensordot(low, b, axes=1) * jnp.asarray(scale(cfg), low.dtype)


def merged(params: dict, cfg) -> dict:
  """The parameter tree without adapters, each adapted kernel replaced by W + (alpha/r)·A·B (computed in float32,
  stored in the kernel's dtype): what the model with model.lora_rank=0 takes. Under 'blocks' (scanned) every
  array has a leading layer axis."""
  def fold(node, stacked: bool):
    if not isinstance(node, dict):
      return node
    out = {k: fold(v, stacked or k == 'blocks') for k, v in node.items() if k not in ADAPTERS}
    if 'lora_a' in node:
      kernel, a, b = (jnp.asarray(node[k], jnp.float32) for k in ('kernel', 'lora_a', 'lora_b'))
      product = jax.vmap(_product)(a, b) if stacked else _product(a, b)
      out['kernel'] = (kernel + scale(cfg) * product).astype(node['kernel'].dtype)
    return out
  return fold(params, False)


def _product(a, b):
  """A·B over the rank axis: [*in, r] x [r, *out] -> [*in, *out]."""
  return jnp.tensordot(a, b, axes=1)
