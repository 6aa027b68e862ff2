"""Sharded training on 8 simulated CPU devices: same losses on every mesh, parameters really sharded.

XLA_FLAGS=--xla_force_host_platform_device_count=8 is set below and by conftest.py, before jax is imported.
"""
import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from lm import models, optim, sharding, train  # noqa: E402
from lm.data import pipeline  # noqa: E402


def run_steps(config, mesh_shape, batches):
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  model = models.build(config.model)
  _, shardings, init_fn = train.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = train.jit_steps(config, model, shardings, mesh)
  losses = []
  with jax.set_mesh(mesh):
    state = init_fn(jax.random.PRNGKey(config.seed))
    for batch in batches:
      state, metrics = p_train(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics['train/loss']))
  return losses, state


@pytest.fixture(scope='module')
def batches(tiny_config, tiny_data):
  iterator = pipeline.train_iterator(tiny_config, tiny_data[1], 0, 1)
  return [next(iterator) for _ in range(3)]


def test_eight_devices():
  assert jax.device_count() == 8


@pytest.fixture(scope='module')
def reference(tiny_config, batches):
  return run_steps(tiny_config, (1, 1, 1), batches)


@pytest.mark.parametrize('mesh_shape', [(2, 2, 2), (8, 1, 1), (1, 4, 2)])
def test_same_losses_on_every_mesh(tiny_config, batches, reference, mesh_shape):
  losses, state = run_steps(tiny_config, mesh_shape, batches)
  np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
  # Adam divides by sqrt(v): where a gradient is ~0, summation-order noise (~1e-9) becomes an lr-scaled step, so a
  # handful of coordinates differ by ~1e-5 after 3 steps at lr 1e-2; the losses above are the criterion.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4),
               state.params, reference[1].params)


@pytest.fixture(scope='module')
def bert_setup():
  from configs import bert_tiny
  config = bert_tiny.get_config('test')
  config.model.dropout = 0.1  # dropout masks must also agree across meshes
  _, rows, _ = pipeline.prepare(config)
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  return config, [next(iterator) for _ in range(2)]


def test_encoder_same_losses_on_one_device_and_2x2x2(bert_setup):
  config, batches = bert_setup
  reference, _ = run_steps(config, (1, 1, 1), batches)
  losses, state = run_steps(config, (2, 2, 2), batches)
  np.testing.assert_allclose(losses[0], reference[0], rtol=1e-6)  # same init, same dropout masks, same loss
  # Adam's first update is ~lr·sign(g): coordinates with a ~0 gradient can step either way on another summation
  # order, so later losses agree to 1e-4 (the tolerance of the scale-out equivalence tests), not bitwise.
  np.testing.assert_allclose(losses, reference, rtol=1e-4)
  assert state.params['embeddings']['token']['embedding'].sharding.spec == P('tensor', 'fsdp')


def test_parameters_and_optimizer_state_are_sharded(tiny_config, batches):
  _, state = run_steps(tiny_config, (2, 2, 2), batches[:1])
  kernel = state.params['block_0']['mlp']['fc_in']['kernel']  # logical ('embed', 'mlp') -> ('fsdp', 'tensor')
  assert kernel.sharding.spec == P('fsdp', 'tensor')
  assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 2, kernel.shape[1] // 2)
  query = state.params['block_0']['attn']['query']['kernel']  # ('embed', 'heads', 'kv')
  assert query.sharding.spec == P('fsdp', 'tensor', None)
  adam_mu = state.opt_state[1][0].mu['block_0']['mlp']['fc_in']['kernel']
  assert adam_mu.sharding.spec == P('fsdp', 'tensor')


def test_finetune_classifier_with_freezing_and_layer_decay_on_2x2x2():
  """Classification with frozen embeddings + block 0 and layer decay: the same losses and eval metrics on 8
  devices as on one, frozen blocks unchanged, no optimizer state for them."""
  from configs import bert_tiny_finetune
  config = bert_tiny_finetune.get_config('test')
  config.optimizer.freeze_embeddings, config.optimizer.freeze_layers, config.optimizer.layer_decay = True, 1, 0.8
  _, rows, eval_rows = pipeline.prepare(config)  # sets model.num_labels=4 from the data
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  batches = [next(iterator) for _ in range(3)]
  eval_batches = pipeline.eval_batches(config, eval_rows, 0, 1)[:3]
  results = []
  for mesh_shape in ((1, 1, 1), (2, 2, 2)):
    losses, state = run_steps(config, mesh_shape, batches)
    results.append((losses, state, _evaluate(config, mesh_shape, state, eval_batches)))
  (losses_1, state_1, eval_1), (losses_8, state_8, eval_8) = results
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-4)
  assert eval_8.keys() == eval_1.keys() and 'eval/macro_f1' in eval_8
  np.testing.assert_allclose([eval_8[k] for k in sorted(eval_8)], [eval_1[k] for k in sorted(eval_1)], rtol=1e-4)
  for state in (state_1, state_8):
    assert not jax.tree.leaves(state.opt_state.inner_states['train'].inner_state[1][0].mu['block_0'])
  np.testing.assert_array_equal(np.asarray(state_8.params['block_0']['mlp']['fc_in']['kernel']),
                                np.asarray(state_1.params['block_0']['mlp']['fc_in']['kernel']))
  assert state_8.params['class_head']['dense']['kernel'].sharding.spec == P('fsdp', None)


def _evaluate(config, mesh_shape, state, eval_batches) -> dict:
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:int(np.prod(mesh_shape))])
  model = models.build(config.model)
  _, shardings, _ = train.abstract_state(config, model, optim.build(config), mesh)
  _, p_eval = train.jit_steps(config, model, shardings, mesh)
  with jax.set_mesh(mesh):
    batches = [sharding.global_batch(b, mesh) for b in eval_batches]
    return train.evaluate(p_eval, state.params, batches, dict(config.objectives))
