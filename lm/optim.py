"""Optimizer from `config.optimizer`: AdamW, warmup + cosine/linear/constant, clipping, selective weight decay."""
import jax
import optax


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


def build(config) -> optax.GradientTransformation:
  """The optax chain: optional global-norm clipping, then AdamW with the schedule."""
  o = config.optimizer
  schedule = learning_rate_schedule(o, config.num_train_steps)
  adamw = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=weight_decay_mask)
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), adamw)
  return adamw
