"""lm.bench: the report's keys and their consistency, the FLOP count against a hand count, the PyTorch reference
step, and the einsum attention path. No timing is asserted: speed is measured by lm.bench, not by tests."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.config import base
from lm.models import layers, registry
from lm.perf import flops

REQUIRED_KEYS = ('tokens_per_sec', 'mfu', 'model_tflops_per_sec', 'peak_tflops', 'compile_seconds',
                 'data_tokens_per_sec', 'device', 'jax_version')


def _param_count(config) -> int:
  model = registry.build(config.model)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('tied', [True, False])
def test_flops_per_token_matches_hand_count(tied):
  c = base.get_config()
  L, d, V, T, max_len = 2, 64, 1024, 32, 64
  c.model.num_layers, c.model.d_model, c.model.d_ff, c.model.num_heads = L, d, 4 * d, 2
  c.model.vocab_size, c.model.max_len, c.model.tie_embeddings, c.seq_len = V, max_len, tied, T
  per_block = 4 * d * d + 4 * d + 2 * 4 * d * d + 4 * d + d + 4 * d  # q,k,v,out (+biases), fc_in, fc_out, 2 LNs
  matmul_params = L * per_block + 2 * d + V * d  # + final LN, + the output projection (tied: the token table)
  total = matmul_params + max_len * d + (0 if tied else V * d)  # lookups: positions, an untied input table
  assert _param_count(c) == total  # the hand count describes the real model
  assert flops.flops_per_token(c, total) == 6 * matmul_params + 12 * L * d * T


@pytest.mark.slow
def test_bench_reports_train_data_decode_and_torch(lm_cli):
  result = lm_cli('--config=configs/gpt_tiny.py:test', '--steps=2', '--warmup_steps=1', '--data_batches=5',
                  '--decode_tokens=4', '--repeats=1', '--vs_torch', module='lm.bench', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  report = json.loads(lines[-1])
  for key in REQUIRED_KEYS + ('torch_tokens_per_sec', 'speedup_vs_torch', 'decode_tokens_per_sec',
                              'decode_tokens_per_sec_no_cache', 'data_vs_step'):
    assert key in report, key
  assert any(line.strip().startswith('tokens_per_sec') for line in lines[:-1])  # the readable table
  assert report['mode'] == 'train,data,decode' and report['device'] == jax.devices()[0].device_kind
  assert report['batch_tokens'] == 8 * 64
  # the reported figures are consistent with each other and with the FLOP convention
  assert report['flops_per_step'] == pytest.approx(
      flops.flops_per_token(_tiny(), report['params']) * report['batch_tokens'])
  assert report['tokens_per_sec'] == pytest.approx(report['batch_tokens'] / report['step_seconds'])
  assert report['model_tflops_per_sec'] == pytest.approx(report['flops_per_step'] / report['step_seconds'] / 1e12)
  assert report['mfu'] == pytest.approx(report['model_tflops_per_sec'] / report['peak_tflops'])
  assert report['speedup_vs_torch'] == pytest.approx(report['tokens_per_sec'] / report['torch_tokens_per_sec'])
  assert all(math.isfinite(report[k]) and report[k] > 0 for k in REQUIRED_KEYS if not isinstance(report[k], str))
  assert math.isfinite(report['loss_after']) and math.isfinite(report['torch_loss_after'])


def _tiny():
  from configs import gpt_tiny
  return gpt_tiny.get_config('test')


@pytest.mark.slow
def test_bench_bert_skips_decode(lm_cli):
  result = lm_cli('--config=configs/bert_tiny.py:test', '--steps=1', '--warmup_steps=1', '--data_batches=3',
                  module='lm.bench', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert 'mfu' in report and 'decode_tokens_per_sec' not in report


@pytest.mark.slow
def test_bench_decode_reports_both_paths(lm_cli):
  result = lm_cli('--config=configs/gpt_tiny.py:test', '--mode=decode', '--decode_tokens=32', '--repeats=1',
                  module='lm.bench', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ('decode_tokens_per_sec', 'decode_tokens_per_sec_no_cache', 'decode_speedup', 'device', 'jax_version'):
    assert key in report
  assert report['decode_tokens'] == 32 and report['decode_tokens_per_sec'] > 0 and 'tokens_per_sec' not in report


@pytest.mark.slow
@pytest.mark.parametrize('config_arg, message', [
    ('configs/llama_tiny.py:test', 'GPT2LMHeadModel'),
    ('configs/bert_tiny.py:test', "model.type='bert' is not a decoder"),
    ('configs/gpt_tiny_classify.py', 'data.task=pretrain'),
])
def test_bench_vs_torch_refuses_other_layouts(lm_cli, config_arg, message):
  result = lm_cli(f'--config={config_arg}', '--vs_torch', module='lm.bench', timeout=120)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: --vs_torch') and message in last, last


def test_torch_reference_step_learns_the_same_batch():
  pytest.importorskip('torch')
  from lm.perf import torch_gpt2
  config = _tiny()
  rng = np.random.default_rng(0)
  batch = {'inputs': rng.integers(0, 1024, (8, 64)).astype(np.int32),
           'weights': np.ones((8, 64), np.float32)}
  batch['targets'] = np.roll(batch['inputs'], -1, axis=1)
  step = torch_gpt2.TorchGPT2Step(config, batch)
  losses = []
  for _ in range(5):
    step()
    losses.append(step.loss)
  assert losses[0] == pytest.approx(math.log(1024), rel=0.05)  # a fresh GPT-2 predicts ~uniformly
  assert losses[-1] < losses[0]  # AdamW steps on one batch lower its loss


SLOW = pytest.mark.slow
ATTENTION_CASES = [  # (length, heads, kv_heads, with_mask, causal); 200: query blocks of 64
    pytest.param(16, 4, 4, False, True, marks=SLOW), pytest.param(16, 4, 4, True, True, marks=SLOW),
    (16, 4, 2, True, True),
    pytest.param(16, 4, 1, False, False, marks=SLOW), pytest.param(16, 4, 4, True, False, marks=SLOW),
    pytest.param(200, 4, 2, True, True, marks=SLOW), pytest.param(200, 2, 2, False, True, marks=SLOW)]


@pytest.mark.parametrize('length, heads, kv_heads, with_mask, causal', ATTENTION_CASES)
def test_einsum_attention_equals_dot_product_attention(length, heads, kv_heads, with_mask, causal):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (2, length, heads, 8))
  k, v = (jax.random.normal(key, (2, length, kv_heads, 8)) for key in keys[1:3])
  segments = jnp.array([[1] * (length - 6) + [2] * 6, [1] * length])
  mask = layers.attention_mask(segments) if with_mask else None

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v) * jax.random.normal(keys[3], q.shape))

  ours = lambda q, k, v: layers.einsum_attention(q, k, v, mask, causal)
  reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                                           implementation='xla')
  # The blocked path (200 positions) is faster compiled once than run op by op; short cases share eager op caches.
  compiled = jax.jit if length > 64 else (lambda fn: fn)
  np.testing.assert_allclose(compiled(ours)(q, k, v), compiled(reference)(q, k, v), atol=1e-5)
  grads = [compiled(jax.grad(lambda *a, fn=fn: loss(fn, *a), argnums=(0, 1, 2)))(q, k, v) for fn in (ours, reference)]
  for g_ours, g_ref in zip(*grads):
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-5)


def test_measure_all_in_process(tiny_config, tiny_data):
  """lm.bench's library without the command: train and data figures of the real step and pipeline, one process."""
  from lm.perf import measure
  config = tiny_config.copy_and_resolve_references()
  report = measure.measure_all(config, ['train', 'data'], steps=1, warmup=1, data_batches=2)
  assert report['batch_tokens'] == config.batch_size * config.seq_len and math.isfinite(report['loss_after'])
  assert report['tokens_per_sec'] > 0 and report['data_tokens_per_sec'] > 0 and 'decode_tokens_per_sec' not in report
  assert report['data_vs_step'] == pytest.approx(report['data_tokens_per_sec'] / report['tokens_per_sec'])


@SLOW
@pytest.mark.parametrize('length, causal', [(200, True), (16, False)])
def test_segments_mask_built_per_block_equals_the_dense_mask(length, causal):
  """layers.Segments (the packed-document mask made inside each query block from [B, T] ids) computes exactly what
  the dense [B, 1, T, T] mask did: outputs and gradients bitwise."""
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  q = jax.random.normal(keys[0], (2, length, 4, 8))
  k, v = (jax.random.normal(key, (2, length, 2, 8)) for key in keys[1:3])
  segments = jnp.array([[1] * (length // 3) + [2] * (length - length // 3 - 5) + [0] * 5, [1] * length])
  probe = jax.random.normal(keys[3], q.shape)
  outputs = []
  for mask in (layers.attention_mask(segments), layers.Segments(segments)):
    fn = jax.jit(lambda q, k, v, mask=mask: layers.einsum_attention(q, k, v, mask, causal))
    grad = jax.jit(jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) * probe), argnums=(0, 1, 2)))
    outputs.append((fn(q, k, v), *grad(q, k, v)))
  for dense, per_block in zip(*outputs):
    np.testing.assert_array_equal(dense, per_block)


@pytest.mark.parametrize('vocab, chunk_size', [pytest.param(1000, 128, marks=SLOW), (1000, 333),
                                               pytest.param(1024, 4096, marks=SLOW),
                                               pytest.param(997, 100, marks=SLOW)])
def test_chunked_cross_entropy_equals_the_plain_loss_and_its_gradients(vocab, chunk_size):
  """lm/chunked_cross_entropy.py against objectives.token_cross_entropy of the whole logits: the weighted NLL sum
  and accuracy count, and the gradients w.r.t. the hidden states and the table, within 1e-5 (padded vocabularies
  too: 997 is prime)."""
  from lm import chunked_cross_entropy, objectives
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(48, 16)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(vocab, 16)) * 0.5, jnp.float32)
  targets = jnp.asarray(rng.integers(0, vocab, 48))
  weights = jnp.asarray(rng.integers(0, 2, 48), jnp.float32)
  plain = lambda h, t: tuple(objectives.token_cross_entropy(h @ t.T, targets, weights)[k]
                              for k in ('loss', 'accuracy'))
  fused = lambda h, t: chunked_cross_entropy.chunked_cross_entropy(h, t, targets, weights, chunk_size)
  np.testing.assert_allclose(jax.jit(fused)(hidden, table), plain(hidden, table), rtol=1e-6)
  grads = [jax.jit(jax.grad(lambda h, t, fn=fn: fn(h, t)[0], argnums=(0, 1)))(hidden, table) for fn in (fused, plain)]
  for ours, reference in zip(*grads):
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_compare_variants_parse_typed_values_and_refuse_bad_specs():
  """--compare key=value[,value...]: one config per value (every combination over several flags), values typed as
  the config's key; an unknown key, a wrong type or a spec without '=' is one line naming --compare."""
  from lm.errors import UsageError
  from lm.perf import variants
  config = base.get_config()
  found = variants.parse(['loss_chunk_size=0,4096', 'model.attention_impl=einsum,xla'], config)
  assert list(found) == ['loss_chunk_size=0 model.attention_impl=einsum', 'loss_chunk_size=0 model.attention_impl=xla',
                         'loss_chunk_size=4096 model.attention_impl=einsum',
                         'loss_chunk_size=4096 model.attention_impl=xla']
  assert found['loss_chunk_size=4096 model.attention_impl=xla'].loss_chunk_size == 4096
  assert variants.parse(['step_norms=false'], config)['step_norms=False'].step_norms is False
  assert config.loss_chunk_size == 0  # the command's config is left as it was
  for spec, message in [('model.no_such=1', "no key 'model.no_such'"), ('loss_chunk_size=big', 'not a int'),
                        ('loss_chunk_size', 'write key=value'), ('step_norms=maybe', 'not a bool')]:
    with pytest.raises(UsageError, match=message):
      variants.parse([spec], config)


@SLOW
def test_compare_times_variants_in_one_process(tiny_config, tiny_data):
  """lm.bench --compare's library: both variants compiled and stepped interleaved on the same real batch; the
  chunked loss gives the plain loss after the same steps and holds less XLA temp memory."""
  from lm.perf import measure, variants
  configs = variants.parse(['loss_chunk_size=0,256'], tiny_config.copy_and_resolve_references())
  batch = next(measure.real_batches(tiny_config))
  result = measure.compare(configs, dict.fromkeys(configs, batch), steps=2, warmup=1, vs_torch=False)
  plain, chunked = result['variants']['loss_chunk_size=0'], result['variants']['loss_chunk_size=256']
  assert plain['ratio'] == 1.0 and chunked['ratio'] > 0 and chunked['tokens_per_sec'] > 0
  assert chunked['loss_after'] == pytest.approx(plain['loss_after'], rel=1e-5)
  assert chunked['temp_gib'] < plain['temp_gib']


@SLOW
def test_pallas_tpu_flash_attention_equals_einsum_attention_in_interpret_mode():
  """model.attention_impl='pallas_tpu': the Pallas TPU flash kernel (run by Pallas's TPU interpreter on this CPU)
  with packed documents as segment ids and grouped-query heads gives einsum attention's outputs and gradients."""
  pltpu = pytest.importorskip('jax.experimental.pallas.tpu')
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  q = jax.random.normal(keys[0], (1, 256, 2, 64))
  k, v = (jax.random.normal(key, (1, 256, 1, 64)) for key in keys[1:3])
  mask = layers.Segments(jnp.array([[1] * 100 + [2] * 156]))
  probe = jax.random.normal(keys[3], q.shape)
  results = []
  for fn in (lambda q, k, v: layers.pallas_tpu_attention(q, k, v, mask),
             lambda q, k, v: layers.einsum_attention(q, k, v, mask, True)):
    with pltpu.force_tpu_interpret_mode():
      results.append((fn(q, k, v), *jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) * probe),
                                              argnums=(0, 1, 2))(q, k, v)))
  for kernel, reference in zip(*results):
    np.testing.assert_allclose(kernel, reference, atol=2e-5)


def test_pallas_tpu_attention_and_the_chunked_loss_are_refused_where_they_cannot_run():
  """One line each, before any compile: the Pallas kernel off TPU or in an encoder, loss_chunk_size without clm."""
  from lm.config import validation
  from lm.errors import ConfigError
  config = base.get_config()
  config.model.attention_impl = 'pallas_tpu'
  with pytest.raises(ConfigError, match="'pallas_tpu' needs a TPU, this is cpu"):
    validation.validate(config, num_devices=1, process_count=1)
  validation.validate(config, num_devices=1, process_count=1, platform='tpu')  # what lm.aot passes for a topology
  config.model.position = 'alibi'
  with pytest.raises(ConfigError, match='without a score bias'):
    validation.validate(config)
  config = base.bert(base.get_config())
  config.loss_chunk_size = 4096
  with pytest.raises(ConfigError, match='loss_chunk_size=4096 fuses the clm objective'):
    validation.validate(config)
