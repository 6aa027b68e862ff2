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
