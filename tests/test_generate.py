"""KV-cache decoding, sampling filters, lm.generate and lm.evaluate."""
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference import sampling, scoring
from lm.models import registry
from lm.store import workdir as workdir_lib

PROMPTS = [[10, 11, 12], list(range(20, 41)), [7], [300, 301, 302, 303, 304]]
EOS, PAD = 3, 0


def random_decoder(**model_overrides):
  """(model, params) of gpt_tiny:test with fresh weights scaled x4, so greedy decoding does not repeat one token."""
  from configs import gpt_tiny
  config = gpt_tiny.get_config('test')
  config.model.update(model_overrides)
  model = registry.build(config.model)
  params = nn.unbox(jax.jit(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))['params'])())
  return model, jax.tree.map(lambda x: x * 4, params)


LLAMA = {'norm_type': 'rmsnorm', 'activation': 'swiglu', 'position': 'rope', 'use_bias': False,
         'tie_embeddings': False, 'num_kv_heads': 2}
MODEL_VARIANTS = [{}, {'scan_layers': True}, {'position': 'rope', 'scan_layers': True, 'remat': 'full'}, LLAMA]


def slow_param(value):
  """A parameter that runs in the full suite only (-m 'not slow' keeps one variant of each check)."""
  return pytest.param(value, marks=pytest.mark.slow)


@pytest.mark.parametrize('overrides', [slow_param(MODEL_VARIANTS[0]), slow_param(MODEL_VARIANTS[1]),
                                       slow_param(MODEL_VARIANTS[2]), LLAMA])
def test_cached_greedy_equals_recomputing_the_full_sequence(overrides):
  model, params = random_decoder(**overrides)
  kw = dict(max_new_tokens=24, eos_id=EOS, pad_id=PAD)
  cached = sampling.generate(model, params, PROMPTS, **kw)
  assert cached == sampling.generate(model, params, PROMPTS, use_cache=False, **kw)
  assert len({tuple(row) for row in cached}) == len(PROMPTS) and all(len(set(row)) > 3 for row in cached)


@pytest.mark.parametrize('overrides', [MODEL_VARIANTS[0], slow_param(MODEL_VARIANTS[1]), slow_param(LLAMA)])
def test_cached_logits_equal_the_full_forward_pass(overrides):
  model, params = random_decoder(**overrides)
  tokens, pads = sampling.left_pad(PROMPTS[:2], max_len=64, max_new_tokens=8, pad_id=PAD, eos_id=EOS)
  continuation = np.array([[50, 51, 52, 53], [60, 61, 62, 63]], np.int32)
  cache = sampling._empty_cache(model, 2, tokens.shape[1] + 8)
  apply_cached = jax.jit(sampling._apply_cached, static_argnums=(0,))  # one compile per shape, not op by op
  logits, cache = apply_cached(model, params, cache, tokens, pads, 0)
  stepped = [logits]
  for i in range(4):  # teacher-forced steps through the cache
    logits, cache = apply_cached(model, params, cache, continuation[:, i:i + 1], pads, tokens.shape[1] + i)
    stepped.append(logits)
  for row, prompt in enumerate(PROMPTS[:2]):  # each row alone, unpadded, through the training forward pass
    inputs = jnp.asarray([prompt + continuation[row].tolist()])
    full = jax.jit(model.apply)({'params': params}, {'inputs': inputs})['logits']
    expected = full[0, len(prompt) - 1:]
    np.testing.assert_allclose(np.stack([s[row] for s in stepped]), expected, atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_a_batch_gives_each_prompt_the_tokens_it_gets_alone():
  model, params = random_decoder()
  kw = dict(max_new_tokens=16, eos_id=EOS, pad_id=PAD)
  batch = sampling.generate(model, params, PROMPTS, **kw)
  assert batch == [sampling.generate(model, params, [p], **kw)[0] for p in PROMPTS]
  # sampled, the first row is the same alone or in a batch (row keys are folded from the row index)
  hot = sampling.Sampling(temperature=1.0, top_k=50)
  assert (sampling.generate(model, params, PROMPTS, sampling=hot, seed=3, **kw)[0]
          == sampling.generate(model, params, PROMPTS[:1], sampling=hot, seed=3, **kw)[0])


@pytest.mark.slow
def test_top_k_1_is_greedy_and_a_seed_fixes_the_sample():
  model, params = random_decoder()
  kw = dict(max_new_tokens=16, eos_id=EOS, pad_id=PAD)
  greedy = sampling.generate(model, params, PROMPTS, **kw)
  assert sampling.generate(model, params, PROMPTS, sampling=sampling.Sampling(2.0, top_k=1), seed=5, **kw) == greedy
  hot = sampling.Sampling(temperature=1.5, top_p=0.95)
  first = sampling.generate(model, params, PROMPTS, sampling=hot, seed=0, **kw)
  assert sampling.generate(model, params, PROMPTS, sampling=hot, seed=0, **kw) == first
  assert sampling.generate(model, params, PROMPTS, sampling=hot, seed=1, **kw) != first
  assert sampling.generate(model, params, PROMPTS, sampling=hot, seed=0, use_cache=False, **kw) == first


@pytest.mark.slow
def test_stream_yields_what_generate_returns():
  model, params = random_decoder()
  kw = dict(max_new_tokens=12, eos_id=EOS, pad_id=PAD, sampling=sampling.Sampling(1.0, top_k=20), seed=7)
  streamed = list(sampling.stream(model, params, PROMPTS[1], **kw))
  assert streamed == sampling.generate(model, params, PROMPTS[1:2], **kw)[0]


def test_top_p_keeps_the_smallest_set_with_enough_mass():
  probs = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
  logits = jnp.log(jnp.asarray(probs))[None]
  kept = lambda p: set(np.flatnonzero(np.isfinite(np.asarray(sampling.filter_logits(logits, top_p=p))[0])))
  assert kept(0.4) == {1}  # 0.4 alone reaches 0.4
  assert kept(0.41) == {1, 3}
  assert kept(0.7) == {1, 3}  # 0.4 + 0.3 = 0.7
  assert kept(0.71) == {1, 3, 4}
  assert kept(0.96) == {0, 1, 2, 3, 4}
  assert kept(1.0) == {0, 1, 2, 3, 4}
  assert set(np.flatnonzero(np.isfinite(np.asarray(sampling.filter_logits(logits, top_k=2))[0]))) == {1, 3}
  # sampling only ever picks kept tokens
  draws = [int(sampling.next_tokens(logits, jax.random.PRNGKey(s), 0, sampling.Sampling(1.0, top_p=0.7))[0])
           for s in range(40)]
  assert set(draws) == {1, 3}


def test_eos_stops_a_row_and_the_prompt_must_fit():
  model, params = random_decoder()
  free = sampling.generate(model, params, PROMPTS[:1], max_new_tokens=10, eos_id=EOS, pad_id=PAD)[0]
  stop = free[4]
  assert sampling.generate(model, params, PROMPTS[:1], max_new_tokens=10, eos_id=stop, pad_id=PAD)[0] \
      == free[:free.index(stop)]
  with pytest.raises(ValueError, match='max_new_tokens=10 that is 70 > the model.s context of 64'):
    sampling.generate(model, params, [list(range(60))], max_new_tokens=10, eos_id=EOS, pad_id=PAD)


@pytest.mark.slow
def test_sharded_params_decode_like_replicated_ones(gpt_run):
  kw = dict(max_new_tokens=12, eos_id=EOS, pad_id=PAD)
  outputs = []
  for mesh in ('', '2,2,2', '1,2,4'):
    run = workdir_lib.load(gpt_run[0], mesh=mesh)
    if mesh:
      assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(run.params))
    with jax.set_mesh(run.mesh):
      outputs.append(sampling.generate(run.model, run.params, PROMPTS[:3], batch_multiple=run.mesh.shape['data']
                                       * run.mesh.shape['fsdp'], **kw))
  assert outputs[0] == outputs[1] == outputs[2]


def test_windows_score_every_token_once():
  for n, max_len, stride in [(10, 16, 15), (100, 16, 15), (100, 16, 5), (17, 16, 1), (33, 8, 7)]:
    ids = np.arange(n)
    rows = scoring.causal_rows(ids, max_len, stride)
    targets = np.concatenate([t[w > 0] for t, w in zip(rows.targets, rows.weights)])
    assert sorted(targets.tolist()) == list(range(1, n))
    owners = np.concatenate([o[o >= 0] for o in rows.owner])
    assert sorted(owners.tolist()) == list(range(n))
    assert all(len(t) <= max_len for t in rows.tokens)
  ids = np.concatenate([[5], np.arange(10, 60), [6]])  # [CLS] 50 tokens [SEP]
  rows = scoring.masked_rows(ids, 16, mask_id=4, passes=7)
  masked = np.concatenate([t[w > 0] for t, w in zip(rows.targets, rows.weights)])
  assert sorted(masked.tolist()) == list(range(10, 60))
  owners = np.concatenate([o[o >= 0] for o in rows.owner])
  assert sorted(owners.tolist()) == list(range(52))
  assert all(t[0] == 5 and t[-1] == 6 and len(t) <= 16 for t in rows.tokens)


def _evaluate(lm_cli, workdir, text_file, *flags):
  result = lm_cli(f'--workdir={workdir}', f'--text_file={text_file}', *flags, module='lm.evaluate', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def held_out_text(tmp_path_factory):
  """A text the runs never trained on (written for this test)."""
  path = tmp_path_factory.mktemp('text') / 'held_out.txt'
  path.write_text('def moving_average(values, window):\n    """Mean of each run of `window` values."""\n'
                  '    total = sum(values[:window])\n    out = [total / window]\n'
                  '    for i in range(window, len(values)):\n        total += values[i] - values[i - window]\n'
                  '        out.append(total / window)\n    return out\n')
  return str(path)


@pytest.mark.slow
def test_evaluate_decoder_perplexity_and_logits_dump(gpt_run, lm_cli, held_out_text, tmp_path):
  workdir = gpt_run[0]
  dump = str(tmp_path / 'logits.npy')
  result = _evaluate(lm_cli, workdir, held_out_text, f'--dump_logits={dump}')
  run = workdir_lib.load(workdir)
  ids = run.tokenizer.encode(open(held_out_text).read())
  assert result['tokens'] == len(ids) - 1 and result['objective'] == 'clm' and result['windows'] > 1
  assert result['perplexity'] == pytest.approx(math.exp(result['loss']), rel=1e-12)
  assert 0 < result['loss'] < 1.5 * math.log(run.config.model.vocab_size)
  logits = np.load(dump)
  assert logits.shape == (len(ids), run.config.model.vocab_size) and logits.dtype == np.float32
  with jax.set_mesh(run.mesh):  # the first window is a plain forward pass over the first max_len tokens
    direct = np.asarray(run.model.apply({'params': run.params}, {'inputs': jnp.asarray([ids[:64]])})['logits'][0])
  np.testing.assert_allclose(logits[:63], direct[:63], atol=1e-4, rtol=1e-4)
  log_probs = jax.nn.log_softmax(jnp.asarray(logits[:-1]), axis=-1)  # the dump reproduces the loss
  nll = -np.asarray(jnp.take_along_axis(log_probs, jnp.asarray(ids[1:])[:, None], axis=-1))
  assert float(nll.mean()) == pytest.approx(result['loss'], rel=1e-4)
  overlapping = _evaluate(lm_cli, workdir, held_out_text, '--stride=16')
  assert overlapping['tokens'] == result['tokens'] and overlapping['windows'] > result['windows']


@pytest.mark.slow
def test_evaluate_encoder_masked_loss_and_logits_dump(bert_run, lm_cli, held_out_text, tmp_path):
  dump = str(tmp_path / 'mlm.npy')
  result = _evaluate(lm_cli, bert_run[0], held_out_text, f'--dump_logits={dump}')
  run = workdir_lib.load(bert_run[0])
  ids = [run.tokenizer.cls_id] + run.tokenizer.encode(open(held_out_text).read()) + [run.tokenizer.sep_id]
  assert result['objective'] == 'mlm' and result['tokens'] == len(ids) - 2
  assert result['perplexity'] == pytest.approx(math.exp(result['loss']), rel=1e-12)
  assert result == {**_evaluate(lm_cli, bert_run[0], held_out_text), 'logits': dump}  # deterministic
  logits = np.load(dump)
  assert logits.shape == (len(ids), run.config.model.vocab_size)
  window = ids if len(ids) <= run.config.model.max_len else ids[:run.config.model.max_len - 1] + [ids[-1]]
  batch = {'inputs': jnp.asarray([window]), 'token_types': jnp.zeros((1, len(window)), jnp.int32)}
  with jax.set_mesh(run.mesh):
    direct = np.asarray(run.model.apply({'params': run.params}, batch)['mlm_logits'][0])
  rows = len(window) if window == ids else len(window) - 1  # a cut window's [SEP] row is not the text's
  np.testing.assert_allclose(logits[:rows], direct[:rows], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_generate_cli_same_seed_same_text_and_batches(gpt_tiny_run, lm_cli, tmp_path):
  args = (f'--workdir={gpt_tiny_run[0]}', '--prompt=def parse(', '--max_new_tokens=24', '--temperature=0.8',
          '--top_k=40', '--top_p=0.95', '--seed=0')
  first, again = (lm_cli(*args, module='lm.generate', timeout=300) for _ in range(2))
  assert first.returncode == 0, first.stderr[-2000:]
  assert first.stdout.startswith('def parse(') and len(first.stdout) > len('def parse(') + 5
  assert again.stdout == first.stdout
  prompt_file = tmp_path / 'prompts.jsonl'
  prompt_file.write_text(json.dumps({'prompt': 'import os\n'}) + '\n' + json.dumps({'prompt': 'class '}) + '\n')
  batch = lm_cli(*args, f'--prompt_file={prompt_file}', module='lm.generate', timeout=300)
  assert batch.returncode == 0, batch.stderr[-2000:]
  texts = batch.stdout.split('--- prompt ')[1:]
  heads = ['0 ---\ndef parse(', '1 ---\nimport os\n', '2 ---\nclass ']
  assert len(texts) == 3 and all(text.startswith(head) for text, head in zip(texts, heads))
  assert texts[0][len('0 ---\n'):] == first.stdout  # row 0 of a batch samples what the prompt streams alone


@pytest.mark.slow
def test_generate_and_evaluate_errors(bert_run, gpt_run, lm_cli, tmp_path):
  cases = [
      ((f'--workdir={bert_run[0]}', '--prompt=x'), 'lm.generate', 'is an encoder and does not generate'),
      ((f'--workdir={gpt_run[0]}', '--prompt=' + 'x = 1\n' * 100), 'lm.generate', "the model's context of 64"),
      ((f'--workdir={tmp_path}', '--prompt=x'), 'lm.generate', 'no config.json'),
      ((f'--workdir={gpt_run[0]}', '--prompt=x', '--top_p=0'), 'lm.generate', '--top_p=0.0: must be in (0, 1]'),
      ((f'--workdir={gpt_run[0]}', '--prompt=x', '--step=7'), 'lm.generate', '--step=7: no such checkpoint'),
      ((f'--workdir={gpt_run[0]}', f'--text_file={tmp_path}/missing.txt'), 'lm.evaluate', 'no such file'),
  ]
  os.makedirs(tmp_path / 'empty' / 'checkpoints')
  with open(os.path.join(gpt_run[0], 'config.json')) as f, open(tmp_path / 'empty' / 'config.json', 'w') as g:
    g.write(f.read())
  cases.append(((f'--workdir={tmp_path}/empty', '--prompt=x'), 'lm.generate', 'no checkpoint in'))
  for args, module, message in cases:
    result = lm_cli(*args, module=module, timeout=120)
    assert result.returncode == 2, (args, result.stderr[-1000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, (args, last)
    assert result.stdout == ''


def _loaded_run(config, tokenizer):
  """A workdir.LoadedRun of fresh parameters (no checkpoint), replicated on one device."""
  from lm.parallel import sharding
  config.model.vocab_size = tokenizer.vocab_size
  model = registry.build(config.model)
  params = nn.unbox(jax.jit(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))['params'])())
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  return workdir_lib.LoadedRun(config, tokenizer, model, params, 0, mesh)


def test_generation_library_reads_prompts_streams_and_batches(tiny_config, tiny_data, tmp_path):
  """inference/generation.py without the command: prompts from a .jsonl file, and one prompt streamed gives the text
  the batch path gives it."""
  import io

  from lm.errors import UsageError
  from lm.inference import generation
  prompt_file = tmp_path / 'prompts.jsonl'
  prompt_file.write_text('{"prompt": "def f(x):\\n    return"}\n{"prompt": "import "}\n')
  prompts = generation.read_prompts(['class '], str(prompt_file))
  assert prompts == ['class ', 'def f(x):\n    return', 'import ']
  with pytest.raises(UsageError, match='--prompt_file=.*: no such file'):
    generation.read_prompts([], str(tmp_path / 'missing.txt'))
  run = _loaded_run(tiny_config.copy_and_resolve_references(), tiny_data[0])
  sampling_args = sampling.Sampling(0.8, top_k=20)
  with jax.set_mesh(run.mesh):
    texts, count = generation.generate_texts(run, prompts, sampling_args, max_new_tokens=6, seed=3)
    out = io.StringIO()
    streamed = generation.stream_text(run, prompts[0], sampling_args, out, max_new_tokens=6, seed=3)
  assert len(texts) == 3 and all(t.startswith(p) for t, p in zip(texts, prompts)) and 0 < count <= 18
  assert out.getvalue() == texts[0] + '\n' and 0 < streamed <= 6


def test_fill_mask_library_gives_top_k_per_mask(tiny_data):
  from configs import bert_tiny
  from lm.errors import UsageError
  from lm.inference import fill_mask
  run = _loaded_run(bert_tiny.get_config('test'), tiny_data[0])
  fill_mask.check_fillable(run, 'import [MASK] as np', 'wd')
  predictions = fill_mask.fill_mask(run, 'import [MASK] as [MASK]', top_k=3)
  assert len(predictions) == 2 and all(len(p) == 3 for p in predictions)
  assert all(p[0][1] >= p[1][1] >= p[2][1] > 0 for p in predictions)
  with pytest.raises(UsageError, match='has no \\[MASK\\] token'):
    fill_mask.check_fillable(run, 'no mask', 'wd')
