"""The train state and its sharded initialisation: parameters and optimizer state are born on their shardings."""
import flax.linen as nn
import jax
from flax.training import train_state

from lm.models import registry
from lm.parallel import sharding


class TrainState(train_state.TrainState):
  """flax TrainState plus the base dropout rng (per-step keys are folded from it with the step)."""
  rng: jax.Array


def abstract_state(config, model, tx, mesh):
  """(abstract unboxed TrainState, its shardings, init fn): parameters are born sharded by the jitted init."""
  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    variables = model.init({'params': params_rng}, registry.example_batch(config))
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx, rng=dropout_rng)

  boxed = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  shardings = sharding.logical_shardings(boxed, mesh, sharding.logical_rules(config.mesh))
  init_fn = jax.jit(lambda rng: nn.unbox(init(rng)), out_shardings=shardings)
  return nn.unbox(boxed), shardings, init_fn
