"""Decoder behaviour: causality, no attention across packed documents, scan/remat/RoPE variants."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.config import base
from lm.models import registry


def tiny_model_cfg(**overrides):
  m = base.get_config().model
  m.num_layers, m.num_heads, m.d_model, m.d_ff, m.vocab_size, m.max_len = 2, 4, 32, 64, 97, 32
  for k, v in overrides.items():
    m[k] = v
  return m


def apply(model_cfg, params, inputs, **batch):
  return registry.build(model_cfg).apply({'params': params}, {'inputs': inputs, **batch})['logits']


def init_apply(model_cfg, inputs, **batch):
  model = registry.build(model_cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), {'inputs': inputs}))['params']
  return params, apply(model_cfg, params, inputs, **batch)


def tokens(seed=0, shape=(2, 16)):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, 97)


@pytest.mark.parametrize('position', [pytest.param('learned', marks=pytest.mark.slow), 'rope', 'alibi'])
def test_future_tokens_do_not_change_past_logits(position):
  cfg = tiny_model_cfg(position=position)
  x = tokens()
  params, logits = init_apply(cfg, x)
  y = x.at[:, 10:].set((x[:, 10:] + 1) % 97)
  logits_y = apply(cfg, params, y)
  np.testing.assert_allclose(logits[:, :10], logits_y[:, :10], atol=1e-5)
  assert not np.allclose(logits[:, 10:], logits_y[:, 10:], atol=1e-3)


@pytest.mark.parametrize('position', ['learned', 'alibi'])
def test_packed_documents_do_not_attend_to_each_other(position):
  cfg = tiny_model_cfg(position=position)
  x = tokens()
  segments = jnp.array([[1] * 6 + [2] * 10] * 2)
  positions = jnp.array([list(range(6)) + list(range(10))] * 2)
  params, packed = init_apply(cfg, x, positions=positions, segment_ids=segments)
  # The second document alone, at the same positions, gives the same logits: nothing leaks from the first.
  alone = apply(cfg, params, x[:, 6:], positions=positions[:, 6:])
  np.testing.assert_allclose(packed[:, 6:], alone, atol=1e-5)
  # Changing the first document changes nothing in the second.
  other = apply(cfg, params, x.at[:, :6].set(5), positions=positions, segment_ids=segments)
  np.testing.assert_allclose(packed[:, 6:], other[:, 6:], atol=1e-5)


def test_scan_and_remat_compute_the_same_function():
  x = tokens()
  params, reference = init_apply(tiny_model_cfg(), x)
  scanned_cfg = tiny_model_cfg(scan_layers=True, remat='full')
  blocks = [params[f'block_{i}'] for i in range(2)]
  scanned_params = {k: v for k, v in params.items() if not k.startswith('block_')}
  scanned_params['blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  out = apply(scanned_cfg, scanned_params, x)
  np.testing.assert_allclose(out, reference, atol=1e-5)


def test_every_parameter_has_logical_axis_names():
  variables = registry.build(tiny_model_cfg()).init(jax.random.PRNGKey(0), {'inputs': tokens()})
  leaves = jax.tree.leaves(variables['params'], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
  assert all(len(leaf.names) == leaf.value.ndim for leaf in leaves)


def test_tied_embeddings_have_no_separate_head():
  params, _ = init_apply(tiny_model_cfg(), tokens())
  assert 'lm_head' not in params
  untied, logits = init_apply(tiny_model_cfg(tie_embeddings=False), tokens())
  assert untied['lm_head']['kernel'].shape == (32, 97) and logits.shape == (2, 16, 97)


def test_bfloat16_compute_returns_float32_logits():
  _, logits = init_apply(tiny_model_cfg(dtype='bfloat16'), tokens())
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def bert_cfg(**overrides):
  return tiny_model_cfg(**{'type': 'bert', 'norm': 'post', 'activation': 'gelu', 'type_vocab_size': 2, **overrides})


def init_encoder(cfg, batch):
  model = registry.build(cfg)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch))['params']
  return params, lambda b, **kw: model.apply({'params': params}, b, **kw)


def test_encoder_is_bidirectional_and_ignores_padding():
  x = tokens()
  segments = jnp.array([[1] * 12 + [0] * 4] * 2)  # last 4 positions are padding
  batch = {'inputs': x, 'segment_ids': segments, 'token_types': jnp.zeros_like(x)}
  _, run = init_encoder(bert_cfg(), batch)
  out = run(batch)['mlm_logits']
  later = run({**batch, 'inputs': x.at[:, 10].set((x[:, 10] + 1) % 97)})['mlm_logits']
  assert not np.allclose(out[:, :10], later[:, :10], atol=1e-4)  # earlier positions see a later token
  padded = run({**batch, 'inputs': x.at[:, 12:].set(3)})['mlm_logits']
  np.testing.assert_allclose(out[:, :12], padded[:, :12], atol=1e-5)  # padding is invisible


def test_encoder_gathers_mlm_positions_and_ties_the_head():
  x = tokens()
  batch = {'inputs': x, 'token_types': jnp.ones_like(x)}
  params, run = init_encoder(bert_cfg(), batch)
  full = run(batch)
  positions = jnp.array([[0, 5, 7], [1, 2, 15]])
  gathered = run({**batch, 'mlm_positions': positions})
  np.testing.assert_allclose(gathered['mlm_logits'], jnp.take_along_axis(full['mlm_logits'], positions[..., None], 1),
                             atol=1e-5)
  assert full['nsp_logits'].shape == (2, 2) and full['pooled'].shape == (2, 32)
  assert set(params) >= {'embeddings', 'pooler', 'mlm_transform', 'mlm_bias', 'nsp_head', 'block_0'}
  assert 'token_type' in params['embeddings'] and 'norm' in params['embeddings']  # BERT: types + embedding LN
  assert not any('vocab' in str(k) for k in params['mlm_transform'])  # output projection = word embeddings


def test_encoder_pre_ln_option_and_dropout_views_differ():
  x = tokens()
  _, run = init_encoder(bert_cfg(norm='pre', dropout=0.1), {'inputs': x})
  one = run({'inputs': x}, train=True, rngs={'dropout': jax.random.PRNGKey(1)})['pooled']
  two = run({'inputs': x}, train=True, rngs={'dropout': jax.random.PRNGKey(2)})['pooled']
  same = run({'inputs': x}, train=False)['pooled']
  assert not np.allclose(one, two, atol=1e-4)
  np.testing.assert_allclose(same, run({'inputs': x}, train=False)['pooled'])


def test_a_registered_family_trains_through_the_generic_path(tiny_config, tiny_data, monkeypatch):
  """Adding a family is its module plus one registry record: a family registered here (reusing the decoder's module
  under another name) validates, counts FLOPs and trains with the same losses as 'gpt', with no other change."""
  from lm.config import validation
  from lm.data import pipeline
  from lm.parallel import sharding
  from lm.perf import flops
  from lm.training import optim, state as state_lib, step as step_lib
  probe = registry.Family('probe_decoder', 'lm.models.decoder', causal=True, objectives=('clm',),
                          tasks=('pretrain',), pretrain_examples='packed', class_summary='last')
  monkeypatch.setitem(registry.FAMILIES, probe.name, probe)
  losses = {}
  for family in (registry.DEFAULT, probe.name):
    config = tiny_config.copy_and_resolve_references()
    config.model.type = family
    validation.validate(config, num_devices=1, process_count=1)
    mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
    model = registry.build(config.model)
    _, shardings, init_fn = state_lib.abstract_state(config, model, optim.build(config), mesh)
    p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
    batch = next(pipeline.train_iterator(config, tiny_data[1], process_index=0, process_count=1))
    with jax.set_mesh(mesh):
      state = init_fn(jax.random.PRNGKey(config.seed))
      for _ in range(2):
        state, out = p_train(state, sharding.global_batch(batch, mesh))
    losses[family] = float(out['train/loss'])
    assert flops.flops_per_token(config, 1000) > 0
  assert losses[probe.name] == losses[registry.DEFAULT]
  config.objectives = {'mlm': 1.0}  # a family refuses objectives it does not list
  with pytest.raises(validation.ConfigError, match="objectives.mlm needs model.type in"):
    validation.validate(config)


def _dot_signatures(mlir: str) -> list[str]:
  """The operand and result types of every dot_general in a StableHLO module, in order."""
  return [line.split(' : ', 1)[-1].split(' loc(')[0] for line in mlir.splitlines() if 'stablehlo.dot_general' in line]


@pytest.mark.parametrize('family', ['gpt_tiny', pytest.param('llama_tiny', marks=pytest.mark.slow),
                                    pytest.param('t5_tiny', marks=pytest.mark.slow)])  # ~15-30 s each
def test_matmul_and_einsum_projections_compute_the_same_function(family):
  """model.projection_impl: every Dense / per-head projection as one 2-D matmul over the flattened tokens or as an
  einsum over [B, T, ...]: the same parameters, and the same logits and gradients (GPT-2 layout: tied, biases;
  Llama: untied head, grouped keys/values, no biases; T5: cross-attention, untied head). 'auto' (the default) is
  the matmul program when lowered for a CPU (bitwise) and the einsum program when lowered for a TPU."""
  import importlib
  config = importlib.import_module(f'configs.{family}').get_config('test')
  config.model.update(num_layers=2, d_model=32, d_ff=64, num_heads=4, vocab_size=97)
  batch = {k: v.repeat(2, axis=0)[:, :16] for k, v in registry.example_batch(config).items()}
  for key in ('inputs', 'encoder_inputs'):
    if key in batch:
      batch[key] = tokens(seed=len(key), shape=batch[key].shape)
  results, tpu_dots = {}, {}
  for impl in ('einsum', 'matmul', 'auto'):
    config.model.projection_impl = impl
    model = registry.build(config.model)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), batch))['params']
    logits = lambda p: model.apply({'params': p}, batch)['logits']  # noqa: E731
    grad = jax.jit(jax.grad(lambda p: jnp.mean(logits(p) ** 2)))
    results[impl] = (params, jax.jit(logits)(params), grad(params))
    tpu_dots[impl] = _dot_signatures(jax.export.export(grad, platforms=['tpu'])(params).mlir_module())
  (params_e, logits_e, grads_e), (params_m, logits_m, grads_m) = results['einsum'], results['matmul']
  assert tpu_dots['einsum'] != tpu_dots['matmul']  # the key changes the program
  assert jax.tree.all(jax.tree.map(lambda a, b: a.shape == b.shape and bool(jnp.all(a == b)), params_e, params_m))
  np.testing.assert_allclose(logits_m, logits_e, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads_m, grads_e)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), results['auto'], results['matmul']))
  assert tpu_dots['auto'] == tpu_dots['einsum']
