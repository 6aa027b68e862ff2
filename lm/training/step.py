"""The ONE train step (every objective, gradient accumulation inside), the eval step, and the evaluation that sums
eval steps over a fixed list of batches."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from lm import objectives
from lm.parallel import sharding
from lm.store import checkpoint
from lm.training import optim


def forward(apply_fn, params, batch: dict, *, config, train: bool, rng=None) -> dict:
  """The model's outputs for a batch; a second dropout view under 'second_view' if an objective needs one."""
  rngs = {'dropout': rng} if train else None
  with nn.logical_axis_rules(sharding.logical_rules(config.mesh)):
    outputs = apply_fn({'params': params}, batch, train=train, rngs=rngs)
    if any(objectives.OBJECTIVES[name].views > 1 for name in config.objectives):
      second_rngs = {'dropout': jax.random.fold_in(rng, 1)} if train else None
      outputs['second_view'] = apply_fn({'params': params}, batch, train=train, rngs=second_rngs)
  return outputs


def _objective_terms(outputs, batch, denominators: dict, config):
  """Weighted total loss and per-objective means (`<name>_loss`, `<name>_accuracy`, ...)."""
  total, out = 0.0, {}
  for name, weight in config.objectives.items():
    sums = objectives.OBJECTIVES[name].sums(outputs, batch, config)
    total += weight * sums['loss'] / denominators[name]
    out.update({f'{name}_{key}': value / denominators[name] for key, value in sums.items()})
  return total, out


def _split_microbatches(x, accum: int):
  """[B, ...] -> [accum, B/accum, ...], microbatch j = rows j, j+accum, ... so each stays spread over devices."""
  x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(x, P(None, sharding.BATCH_AXES))


def train_step(state, batch: dict, *, config, schedule):
  """One optimizer update on a global batch (gradient accumulation over grad_accum_steps microbatches inside).

  Every objective goes through here: `config.objectives` names them and their weights.
  """
  accum = config.grad_accum_steps
  denominators = {name: objectives.OBJECTIVES[name].denominator(batch) for name in config.objectives}
  step_rng = jax.random.fold_in(state.rng, state.step)
  frozen = optim.frozen_paths(state.params, config)

  def loss_fn(trained, micro, rng):
    params = checkpoint.merge_params(state.params, trained) if frozen else trained
    outputs = forward(state.apply_fn, params, micro, config=config, train=True, rng=rng)
    return _objective_terms(outputs, micro, denominators, config)

  # Frozen parameters are closed over, not differentiated: no gradient is computed for them at all.
  trained = {k: v for k, v in checkpoint.flatten(state.params).items() if k not in frozen} if frozen else state.params
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accum == 1:
    (loss, terms), grads = grad_fn(trained, batch, step_rng)
  else:
    micro = jax.tree.map(functools.partial(_split_microbatches, accum=accum), batch)

    def body(carry, xs):
      out = grad_fn(trained, xs[0], jax.random.fold_in(step_rng, xs[1]))
      return jax.tree.map(jnp.add, carry, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, trained, first, step_rng))
    ((loss, terms), grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
  grad_norm = optax.tree.norm(grads) if config.step_norms else None
  if frozen:  # the optimizer's frozen branch (set_to_zero) reads no gradient: the frozen values stand in, no copy
    grads = checkpoint.merge_params(state.params, grads)
  new_state = state.apply_gradients(grads=grads)
  out = {'train/loss': loss, **{f'train/{k}': v for k, v in terms.items()}, 'train/learning_rate': schedule(state.step)}
  if config.step_norms:
    out.update({'train/grad_norm': grad_norm, 'train/param_norm': optax.tree.norm(new_state.params)})
  skipped = optim.skip_counts(new_state.opt_state)
  if skipped is not None:
    out['train/skipped_steps'], out['train/skipped_in_a_row'] = skipped
  return new_state, out


def eval_step(params, batch: dict, *, apply_fn, config) -> dict:
  """Per-objective SUMS and denominators over one eval batch (accumulated on the host)."""
  outputs = forward(apply_fn, params, batch, config=config, train=False)
  out = {}
  for name in config.objectives:
    obj = objectives.OBJECTIVES[name]
    out[name] = {**obj.sums(outputs, batch, config), 'denominator': obj.denominator(batch)}
    if obj.eval_counts:
      out[name]['counts'] = obj.eval_counts(outputs, batch)
  return out


def eval_totals(p_eval, params, eval_batches: list) -> dict:
  """The eval step's sums over all batches, on the host: {objective: {name: sum, 'denominator': ..}}."""
  totals = None
  for batch in eval_batches:
    sums = p_eval(params, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return jax.device_get(totals)


def summarize(totals: dict, weights: dict, prefix: str = 'eval/') -> dict:
  """<prefix><name>_loss, <name>_accuracy..., <prefix>loss (weighted), perplexity (clm), and an objective's
  summarized counts (classify: accuracy, f1, macro_f1 unprefixed by the name) of `eval_totals` sums."""
  totals = jax.tree.map(lambda x: x, totals)  # summarizing pops from the dicts: leave the caller's intact
  out, loss = {}, 0.0
  for name, sums in totals.items():
    counts = sums.pop('counts', None)
    out.update({f'{prefix}{name}_{k}': float(v / sums['denominator']) for k, v in sums.items() if k != 'denominator'})
    loss += weights[name] * out[f'{prefix}{name}_loss']
    if counts is not None:
      out.update({f'{prefix}{k}': v for k, v in objectives.OBJECTIVES[name].summarize(counts).items()})
  out[f'{prefix}loss'] = loss
  if 'clm' in totals:
    out[f'{prefix}perplexity'] = math.exp(min(out[f'{prefix}clm_loss'], 80.0))
  return out


def evaluate(p_eval, params, eval_batches: list, weights: dict, prefix: str = 'eval/') -> dict:
  """`summarize` of the eval objectives over all `eval_batches`."""
  return summarize(eval_totals(p_eval, params, eval_batches), weights, prefix)


def jit_steps(config, model, shardings, mesh):
  """(train step, eval step), jitted with explicit shardings; the train step donates the state."""
  batch_sharding = sharding.batch_sharding(mesh)
  step_fn = functools.partial(train_step, config=config,
                              schedule=optim.learning_rate_schedule(config.optimizer, config.num_train_steps))
  p_train = jax.jit(step_fn, in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                    donate_argnums=0)
  eval_fn = functools.partial(eval_step, apply_fn=model.apply, config=config)
  p_eval = jax.jit(eval_fn, in_shardings=(shardings.params, batch_sharding))
  return p_train, p_eval
