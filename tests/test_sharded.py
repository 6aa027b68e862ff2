"""Sharded training on 8 simulated CPU devices: same losses on every mesh, parameters really sharded.

XLA_FLAGS=--xla_force_host_platform_device_count=8 is set below and by conftest.py, before jax is imported.
"""
import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from lm.data import pipeline  # noqa: E402
from lm.models import registry  # noqa: E402
from lm.parallel import sharding  # noqa: E402
from lm.training import (
  optim,  # noqa: E402
  state as state_lib,
  step as step_lib,
)

MESHES = [(8, 1, 1), (1, 8, 1), (1, 4, 2), (2, 2, 2)]
# -m 'not slow' keeps pure data parallelism and the mixed mesh; the full suite runs all four
FAST_MESHES = [m if m in ((8, 1, 1), (2, 2, 2)) else pytest.param(m, marks=pytest.mark.slow) for m in MESHES]



def run_steps(config, mesh_shape, batches, **rules):
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  config.mesh.rules.update(rules)
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  model = registry.build(config.model)
  _, shardings, init_fn = state_lib.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
  losses = []
  with jax.set_mesh(mesh):
    state = init_fn(jax.random.PRNGKey(config.seed))
    for batch in batches:
      state, metrics = p_train(state, sharding.global_batch(batch, mesh))
      losses.append(float(metrics['train/loss']))
  return losses, state


def run_sharded_like_one_device(config, workdir: str, mesh_shape=(2, 2, 2)):
  """Trains `config` through the loop on `mesh_shape` (losses logged every step), checks its losses against
  run_steps of the same batches on one device; returns (metrics rows, train examples, eval examples)."""
  from lm.store import writers
  from lm.training import loop
  config.log_every_steps = 1
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  loop.run(config, workdir)
  rows = writers.read_rows(workdir)
  _, train_rows, eval_rows = pipeline.prepare(config)  # the same tokenizer and examples: cached
  iterator = pipeline.train_iterator(config, train_rows, 0, 1)
  reference = run_steps(config, (1, 1, 1), [next(iterator) for _ in range(config.num_train_steps)])[0]
  np.testing.assert_allclose([r['train/loss'] for r in rows if 'train/loss' in r], reference, rtol=1e-4)
  return rows, train_rows, eval_rows


@pytest.fixture(scope='module')
def batches(tiny_config, tiny_data):
  iterator = pipeline.train_iterator(tiny_config, tiny_data[1], 0, 1)
  return [next(iterator) for _ in range(3)]


def test_eight_devices():
  assert jax.device_count() == 8


@pytest.fixture(scope='module')
def reference(tiny_config, batches):
  return run_steps(tiny_config, (1, 1, 1), batches)


@pytest.mark.parametrize('mesh_shape', FAST_MESHES)
def test_same_losses_on_every_mesh(tiny_config, batches, reference, mesh_shape):
  losses, state = run_steps(tiny_config, mesh_shape, batches)
  np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
  # Adam divides by sqrt(v): where a gradient is ~0, summation-order noise (~1e-9) becomes an lr-scaled step, so a
  # handful of coordinates differ by ~1e-5 after 3 steps at lr 1e-2; the losses above are the criterion.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4),
               state.params, reference[1].params)


@pytest.mark.slow
def test_chunked_loss_trains_sharded_like_the_plain_loss_on_one_device(tiny_config, batches, reference):
  """loss_chunk_size: the fused LM head + cross-entropy over strided vocabulary chunks, with the vocabulary sharded
  over 'tensor' and the tokens over data x fsdp, gives the plain loss's steps on one device."""
  config = tiny_config.copy_and_resolve_references()
  config.loss_chunk_size = 300  # 1024 rows: 4 chunks of 256, strided over the tensor-sharded table
  losses, _ = run_steps(config, (2, 2, 2), batches)
  np.testing.assert_allclose(losses, reference[0], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('layout', ['bloom_tiny'])  # opt_tiny: learned positions + ReLU, nothing new to shard
def test_bloom_and_opt_layouts_train_sharded_like_one_device(tiny_config, batches, layout):
  """ALiBi (a per-head score bias, no position parameters) and OPT's offset position table under fsdp + tensor."""
  import importlib
  config = importlib.import_module(f'configs.{layout}').get_config('test')
  config.model.vocab_size = tiny_config.model.vocab_size  # the shared test batches' tokenizer
  losses, state = run_steps(config, (2, 2, 2), batches[:2])
  np.testing.assert_allclose(losses, run_steps(config, (1, 1, 1), batches[:2])[0], rtol=1e-5)
  assert losses[1] < losses[0]


@pytest.mark.slow
@pytest.mark.parametrize('scan', [True])  # unscanned adapters are sliced the same way, without the layer axis
def test_lora_adapters_train_sharded_like_one_device(tiny_config, batches, scan):
  """Adapters carry their kernels' logical axes (the rank unsharded); the frozen base and the adapters on (2,2,2)."""
  config = tiny_config.copy_and_resolve_references()
  config.model.lora_rank, config.model.scan_layers = 4, scan
  config.model.lora_targets = r'(attn/(query|value)|mlp/fc_in)/kernel$'
  losses, state = run_steps(config, (2, 2, 2), batches[:2])
  np.testing.assert_allclose(losses, run_steps(config, (1, 1, 1), batches[:2])[0], rtol=1e-5)
  query = state.params['blocks' if scan else 'block_0']['attn']['query']
  assert tuple(query['lora_b'].sharding.spec)[-2:] == ('tensor', None)
  assert float(np.abs(np.asarray(query['lora_b'])).max()) > 0  # the adapters moved


@pytest.fixture(scope='module')
def bert_setup():
  from configs import bert_tiny
  config = bert_tiny.get_config('test')
  config.model.dropout = 0.1  # dropout masks must also agree across meshes
  _, rows, _ = pipeline.prepare(config)
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  return config, [next(iterator) for _ in range(2)]


@pytest.fixture(scope='module')
def bert_reference(bert_setup):
  return run_steps(bert_setup[0], (1, 1, 1), bert_setup[1])[0]


@pytest.mark.parametrize('mesh_shape', [m for m in MESHES if m != (1, 8, 1)])  # fsdp alone: the decoder's test
@pytest.mark.slow
def test_encoder_same_losses_on_every_mesh(bert_setup, bert_reference, mesh_shape):
  config, batches = bert_setup
  losses, state = run_steps(config, mesh_shape, batches)
  np.testing.assert_allclose(losses[0], bert_reference[0], rtol=1e-6)  # same init, same dropout masks, same loss
  # Adam's first update is ~lr·sign(g): coordinates with a ~0 gradient can step either way on another summation
  # order, so later losses agree to 1e-4 (the tolerance of the scale-out equivalence tests), not bitwise.
  np.testing.assert_allclose(losses, bert_reference, rtol=1e-4)
  if mesh_shape == (2, 2, 2):
    assert state.params['embeddings']['token']['embedding'].sharding.spec == P('tensor', 'fsdp')


def _state_bytes_per_device(config, mesh_shape) -> int:
  """Per-device bytes of the whole train state (params + Adam moments), from the compiled sharded init."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_shape
  mesh = sharding.make_mesh(config.mesh)
  abstract, _, init_fn = state_lib.abstract_state(config, registry.build(config.model), optim.build(config), mesh)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  return init_fn.lower(jax.random.PRNGKey(0)).compile().memory_analysis().output_size_in_bytes, num_params


@pytest.mark.slow
def test_fsdp_keeps_one_eighth_of_the_state_per_device(tiny_config):
  replicated, num_params = _state_bytes_per_device(tiny_config, (8, 1, 1))
  fsdp, _ = _state_bytes_per_device(tiny_config, (1, 8, 1))
  assert replicated >= 3 * 4 * num_params  # params + 2 Adam moments in float32, whole on every device
  assert fsdp <= (1 / 8 + 0.10) * replicated, (fsdp, replicated, fsdp / replicated)


@pytest.mark.slow
def test_rules_come_from_the_config_and_indivisible_dimensions_fail_early(tiny_config, batches):
  from lm.config import validation as config_lib
  losses, state = run_steps(tiny_config, (1, 8, 1), batches[:2], embed='')  # replicate d_model everywhere
  assert state.params['block_0']['mlp']['fc_in']['kernel'].sharding.spec == P(None, 'tensor')
  np.testing.assert_allclose(losses, run_steps(tiny_config, (1, 1, 1), batches[:2])[0], rtol=1e-5)
  config = tiny_config.copy_and_resolve_references()
  config.mesh.data, config.mesh.tensor = 1, 8  # gpt_tiny:test has 4 heads
  with pytest.raises(config_lib.ConfigError, match=r'model.num_heads=4 is not divisible by mesh.tensor=8 .*'
                                                   r"rule mesh.rules.heads\); .* --config.mesh.rules.heads=''"):
    config_lib.validate(config, num_devices=8)
  config.mesh.rules.heads = ''
  config_lib.validate(config, num_devices=8)
  config.model.vocab_size = 1004
  with pytest.raises(config_lib.ConfigError, match=r'model.vocab_size=1004 is not divisible by mesh.tensor=8'):
    config_lib.validate(config, num_devices=8)
  config.model.vocab_size = 1024
  config.mesh.rules.embed = 'model'
  with pytest.raises(config_lib.ConfigError, match="mesh.rules.embed='model': 'model' is not a mesh axis"):
    config_lib.validate(config, num_devices=8)


@pytest.mark.slow
def test_parameters_and_optimizer_state_are_sharded(tiny_config, batches):
  _, state = run_steps(tiny_config, (2, 2, 2), batches[:1])
  kernel = state.params['block_0']['mlp']['fc_in']['kernel']  # logical ('embed', 'mlp') -> ('fsdp', 'tensor')
  assert kernel.sharding.spec == P('fsdp', 'tensor')
  assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 2, kernel.shape[1] // 2)
  query = state.params['block_0']['attn']['query']['kernel']  # ('embed', 'heads', 'kv')
  assert query.sharding.spec == P('fsdp', 'tensor', None)
  adam_mu = state.opt_state[1][0].mu['block_0']['mlp']['fc_in']['kernel']
  assert adam_mu.sharding.spec == P('fsdp', 'tensor')


@pytest.mark.slow
def test_adafactor_trains_sharded_like_one_device_with_factored_moments_replicated(tiny_config, batches):
  """optimizer.name='adafactor' (T5's): the same losses on (2,2,2) as on one device. A matrix whose two largest
  dimensions are >= 128 keeps a row and a column vector of second moments (replicated: the parameter's logical
  names do not fit them); a smaller parameter keeps a full moment, sharded like the parameter."""
  import optax
  config = tiny_config.copy_and_resolve_references()
  config.optimizer.name, config.model.d_model = 'adafactor', 128  # the token table [1024, 128] is factored
  losses, state = run_steps(config, (2, 2, 2), batches)
  np.testing.assert_allclose(losses, run_steps(config, (1, 1, 1), batches)[0], rtol=1e-5)
  assert losses[-1] < losses[0]
  row, col = (optax.tree_utils.tree_get(state.opt_state, k)['embeddings']['token']['embedding']
              for k in ('v_row', 'v_col'))
  assert {row.shape, col.shape} == {(1024,), (128,)}
  assert row.sharding.is_fully_replicated and col.sharding.is_fully_replicated
  full = optax.tree_utils.tree_get(state.opt_state, 'v')['block_0']['attn']['query']['kernel']
  assert full.shape == state.params['block_0']['attn']['query']['kernel'].shape
  assert full.sharding.spec == P('fsdp', 'tensor', None)


@pytest.mark.slow
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
  model = registry.build(config.model)
  _, shardings, _ = state_lib.abstract_state(config, model, optim.build(config), mesh)
  _, p_eval = step_lib.jit_steps(config, model, shardings, mesh)
  with jax.set_mesh(mesh):
    batches = [sharding.global_batch(b, mesh) for b in eval_batches]
    return step_lib.evaluate(p_eval, state.params, batches, dict(config.objectives))
