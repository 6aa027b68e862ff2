"""Optimizer from `config.optimizer`: AdamW or Adafactor, warmup + cosine/linear/constant, clipping, selective
weight decay, and the fine-tuning strategies: frozen parameters and layer-wise LR decay.

Parameter paths are '/'-joined module names: 'embeddings/token/embedding', 'block_3/attn/query/kernel' (or
'blocks/...' with a leading layer axis when model.scan_layers), 'ln_final/scale', 'pooler/dense/kernel',
'class_head/dense/kernel'.
"""
import re

import jax
import jax.numpy as jnp
import optax

from lm.errors import ConfigError
from lm.models import layers, registry


def learning_rate_schedule(opt_cfg, num_train_steps: int) -> optax.Schedule:
  """Linear warmup to the peak over warmup_steps updates, then cosine / linear decay reaching min_lr_ratio * peak at
  the last update, or constant. Takes optax's 0-based update count."""
  peak, warmup = opt_cfg.learning_rate, opt_cfg.warmup_steps
  end = peak * opt_cfg.min_lr_ratio
  decay_steps = max(num_train_steps - warmup, 1)
  if opt_cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt_cfg.min_lr_ratio)
  elif opt_cfg.schedule == 'linear':
    after = optax.linear_schedule(peak, end, decay_steps)
  else:
    after = optax.constant_schedule(peak)
  schedule = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])
  return lambda count: schedule(count + 1)  # update k (1-based) uses schedule(k): no wasted first step


def weight_decay_mask(params):
  """True for matmul kernels only: biases, norm scales and embedding tables are not decayed."""
  def is_kernel(path, _):
    return any(getattr(key, 'key', None) == 'kernel' for key in path)
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def frozen_mask(params, opt_cfg, adapters_only: bool = False):
  """True for each parameter that optimizer.freeze_* freezes; with `adapters_only` (LoRA) also for every parameter
  that is neither a LoRA adapter nor a task head."""
  patterns = [re.compile(p.strip()) for p in opt_cfg.freeze_patterns.split(',') if p.strip()]

  def frozen(path, _):
    name = layers.path_name(path).removesuffix('/.value')  # boxed (logically partitioned) leaves at init
    top = name.split('/')[0]
    block = re.fullmatch(r'block_(\d+)', top)
    return ((adapters_only and not registry.added_by_finetuning(name))
            or (opt_cfg.freeze_all_but_head and top not in registry.TASK_HEADS)
            or (opt_cfg.freeze_embeddings and top == 'embeddings')
            or (block is not None and int(block.group(1)) < opt_cfg.freeze_layers)
            or any(p.search(name) for p in patterns))
  return jax.tree_util.tree_map_with_path(frozen, params)


def layer_scales(params, num_layers: int, decay: float):
  """Per-parameter LR factors of layer-wise decay (ELECTRA / BEiT): block i of L gets decay**(L - i), the embeddings
  decay**(L + 1), everything above the blocks (final norm, pooler, heads) 1. Scanned blocks get a [L, 1, ...] array."""
  def scale(path, leaf):
    top = layers.path_name(path).split('/')[0]
    if top == 'embeddings':
      return decay ** (num_layers + 1)
    if top == 'blocks':
      factors = decay ** (num_layers - jnp.arange(num_layers, dtype=jnp.float32))
      return factors.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
    block = re.fullmatch(r'block_(\d+)', top)
    return decay ** (num_layers - int(block.group(1))) if block else 1.0
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer(num_layers: int, decay: float) -> optax.GradientTransformation:
  """Multiplies each update by its `layer_scales` factor: the same as a per-layer learning rate."""
  def scale(updates, params):
    return jax.tree.map(lambda u, f: u * f, updates, layer_scales(params, num_layers, decay))
  return optax.stateless(scale)


def freezes(config) -> bool:
  """True when the run trains a subset of its parameters (optimizer.freeze_* or LoRA)."""
  o = config.optimizer
  return bool(o.freeze_embeddings or o.freeze_layers or o.freeze_all_but_head or o.freeze_patterns.strip()
              or config.model.lora_rank)


def frozen_paths(params, config) -> frozenset:
  """The '/'-paths of the parameters this run does not train (empty when it trains all)."""
  if not freezes(config):
    return frozenset()
  mask = frozen_mask(params, config.optimizer, adapters_only=bool(config.model.lora_rank))
  return frozenset(layers.path_name(p) for p, f in jax.tree_util.tree_flatten_with_path(mask)[0] if f)


def _labels(params, config):
  mask = frozen_mask(params, config.optimizer, adapters_only=bool(config.model.lora_rank))
  labels = jax.tree.map(lambda f: 'frozen' if f else 'train', mask)
  if 'train' not in jax.tree.leaves(labels):
    what = 'LoRA adapters and task heads' if config.model.lora_rank else 'parameters'
    raise ConfigError(f'optimizer.freeze_*: every one of the {what} is frozen; leave something to train')
  return labels


def build(config) -> optax.GradientTransformation:
  """The optax chain: optional global-norm clipping, AdamW or Adafactor with the schedule (`_update_rule`),
  optional layer-wise LR decay; frozen parameters (optimizer.freeze_*, everything but adapters and heads under
  LoRA) get a zero update and no optimizer state (and training/step.py computes no gradient for them)."""
  o = config.optimizer
  schedule = learning_rate_schedule(o, config.num_train_steps)
  parts = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm > 0 else []
  parts.append(_update_rule(o, schedule))
  if o.layer_decay < 1.0:
    parts.append(scale_by_layer(config.model.num_layers, o.layer_decay))
  tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
  if freezes(config):
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, lambda p: _labels(p, config))
  if config.nonfinite_policy == 'skip':  # a step with NaN/Inf gradients changes nothing (counted in the state)
    tx = optax.apply_if_finite(tx, max_consecutive_errors=config.max_skipped_steps)
  return tx


def _update_rule(o, schedule) -> optax.GradientTransformation:
  """optimizer.name: 'adamw' (b1, b2, eps), or 'adafactor' as T5 / t5x train: factored second moments (decay rate
  optimizer.adafactor_decay_rate), no momentum, each update clipped to RMS 1 and scaled by the parameter's RMS (at
  least 1e-3), so the step is relative to the parameter's size. Weight decay is decoupled, on kernels only, and
  scaled by the learning rate in both (optax's Adafactor alone would subtract weight_decay x param every step)."""
  if o.name == 'adafactor':
    decay = (lambda count: o.weight_decay * schedule(count)) if o.weight_decay else None
    return optax.adafactor(schedule, decay_rate=o.adafactor_decay_rate, multiply_by_parameter_scale=True,
                           clipping_threshold=1.0, weight_decay_rate=decay, weight_decay_mask=weight_decay_mask)
  return optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=weight_decay_mask)


def skip_counts(opt_state):
  """(updates skipped for non-finite gradients so far, how many of the last steps in a row) under
  nonfinite_policy='skip', else None."""
  total = optax.tree_utils.tree_get(opt_state, 'total_notfinite', default=None)
  if total is None:
    return None
  return total, optax.tree_utils.tree_get(opt_state, 'notfinite_count')
