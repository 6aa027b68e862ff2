"""The t5 family: tiny random T5ForConditionalGeneration (v1.1: gated GELU, untied head, head_dim != d/h; v1.0:
ReLU, tied scaled head, more decoder than encoder blocks) converted and compared with transformers (outputs,
export, greedy and beam decoding); refusals; span-corruption batches and training sharded like on one device;
a seq2seq fine-tune with generation metrics, resumed exactly; the FLOP convention by hand."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import ConfigError

transformers = pytest.importorskip('transformers', reason='test extra: pip install -r requirements-test.txt')
torch = pytest.importorskip('torch')

# v1.0 has more decoder than encoder blocks; v1.1 has as many, because transformers 5.24's generate() sizes its
# cache by num_layers (it fails on a deeper decoder), and the decoding tests compare with it.
VERSIONS = {'1.1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False, num_decoder_layers=2),
            '1.0': dict(feed_forward_proj='relu', tie_word_embeddings=True, num_decoder_layers=3)}


def _tokenizer():
  """A small BPE with T5's special ids (pad 0, eos 1, unk 2), trained on stdlib text."""
  import inspect
  import json as json_module

  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE(unk_token='<unk>'))
  tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
  tok.train_from_iterator([inspect.getsource(json_module.decoder)], trainers.BpeTrainer(
      vocab_size=120, special_tokens=['<pad>', '</s>', '<unk>']))
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='</s>',
                                              unk_token='<unk>')


def _hf_t5(version: str, directory, **overrides):
  """A tiny random T5 saved with save_pretrained (an untied v1.1 head gets its own random weights)."""
  tok = _tokenizer()
  settings = dict(vocab_size=len(tok), d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3,
                  num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                  dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**{**settings, **VERSIONS[version],
                                                                         **overrides})).eval()
  if not VERSIONS[version]['tie_word_embeddings']:
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape))
  model.save_pretrained(directory)
  tok.save_pretrained(directory)
  return model


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """{version: (HF model, HF dir, lm workdir)}."""
  from lm.hf import convert

  class Converted(dict):
    """Made on first use: the fast tier converts v1.1 only."""

    def __missing__(self, version):
      root = tmp_path_factory.mktemp(f't5_{version}')
      model = _hf_t5(version, root / 'hf')
      summary = convert.from_hf(str(root / 'hf'), str(root / 'wd'))
      assert summary['architecture'] == 'T5ForConditionalGeneration' and summary['fresh'] == []
      self[version] = (model, str(root / 'hf'), str(root / 'wd'))
      return self[version]
  return Converted()


# v1.1 in the fast tier, v1.0 (tied, deeper decoder) in the full suite
VERSION_PARAMS = ['1.1', pytest.param('1.0', marks=pytest.mark.slow)]


@pytest.mark.parametrize('version', VERSION_PARAMS)
def test_encoder_output_and_logits_equal_transformers(converted, version):
  from lm.store import workdir
  hf, _, wd = converted[version]
  run = workdir.load(wd)
  assert run.config.model.head_dim == 12
  assert run.config.model.num_decoder_layers == VERSIONS[version]['num_decoder_layers']
  assert run.config.model.tie_embeddings == (version == '1.0')
  rng = np.random.default_rng(0)
  vocab = run.config.model.vocab_size
  encoder = rng.integers(3, vocab, (2, 24))
  encoder_mask = np.ones_like(encoder)
  encoder_mask[1, 15:] = 0  # a padded row
  decoder = np.concatenate([np.zeros((2, 1), int), rng.integers(3, vocab, (2, 9))], axis=1)
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(encoder), attention_mask=torch.tensor(encoder_mask),
             decoder_input_ids=torch.tensor(decoder))
  batch = {'encoder_inputs': jnp.asarray(encoder * encoder_mask), 'encoder_segment_ids': jnp.asarray(encoder_mask),
           'inputs': jnp.asarray(decoder), 'segment_ids': jnp.ones(decoder.shape, jnp.int32)}
  variables = {'params': run.params}
  encoded = run.model.apply(variables, batch, method='encode')
  real = encoder_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(encoded)[real], out.encoder_last_hidden_state.numpy()[real], atol=1e-4)
  logits = run.model.apply(variables, batch)['logits']
  np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=1e-4)


@pytest.mark.parametrize('version', VERSION_PARAMS)
def test_export_round_trip_is_exact_and_loads_in_transformers(converted, version, tmp_path):
  from safetensors.numpy import load_file

  from lm.hf import convert
  hf, hf_dir, wd = converted[version]
  assert convert.to_hf(wd, str(tmp_path / 'out'))['architecture'] == 'T5ForConditionalGeneration'
  original = load_file(os.path.join(hf_dir, 'model.safetensors'))
  exported = load_file(str(tmp_path / 'out' / 'model.safetensors'))
  assert set(exported) == {k for k in original if 'embed_tokens' not in k}
  for key, value in exported.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  config = json.load(open(tmp_path / 'out' / 'config.json'))
  assert config['decoder_start_token_id'] == 0 and config['eos_token_id'] == 1
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / 'out')).eval()
  ids = torch.tensor([[5, 9, 14, 1]])
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(input_ids=ids, decoder_input_ids=ids).logits.numpy(),
                                  hf(input_ids=ids, decoder_input_ids=ids).logits.numpy())


def _hf_generate(hf, sources, eos_id: int, **kwargs) -> list[list[int]]:
  ids, mask = np.zeros((len(sources), 16), int), np.zeros((len(sources), 16), int)
  for row, source in enumerate(sources):
    ids[row, :len(source)], mask[row, :len(source)] = source, 1
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                      do_sample=False, eos_token_id=eos_id, early_stopping=False, **kwargs)
  return [row[1:row.index(eos_id, 1)] if eos_id in row[1:] else row[1:] for row in out.numpy().tolist()]


@pytest.mark.slow
def test_decoding_equals_transformers_greedy_and_beams_and_cached_equals_uncached(converted):
  """Greedy and 4-beam decoding token-equal to transformers' generate, for two sources of different lengths, with
  an EOS the random model does produce (so rows stop at different steps); the cache changes nothing."""
  from lm.inference import seq2seq_decoding
  from lm.store import workdir
  hf, _, wd = converted['1.1']
  run = workdir.load(wd)
  sources = [[17, 44, 9, 81, 30, 62, 1], [5, 99, 23, 71, 12, 54, 33, 8, 60, 41, 27, 1]]
  first = _hf_generate(hf, sources, eos_id=1)[0]
  stop = next(i for i in range(2, len(first)) if first[i] not in first[:i])
  eos = first[stop]  # a token greedy decoding emits: row 0 stops after `stop` tokens
  args = dict(max_new_tokens=12, eos_id=eos, pad_id=0)
  greedy = seq2seq_decoding.generate(run.model, run.params, sources, **args)
  assert greedy == _hf_generate(hf, sources, eos) and len(greedy[0]) == stop
  assert seq2seq_decoding.generate(run.model, run.params, sources, use_cache=False, **args) == greedy
  beams = seq2seq_decoding.generate(run.model, run.params, sources, num_beams=4, **args)
  assert beams == _hf_generate(hf, sources, eos, num_beams=4) and beams != greedy


def test_an_unsupported_t5_layout_is_refused_before_writing(tmp_path):
  from lm.hf import convert
  _hf_t5('1.1', tmp_path / 'hf', feed_forward_proj='gated-silu')
  with pytest.raises(ConfigError, match=r"feed_forward_proj='gated-silu': lm supports") as e:
    convert.from_hf(str(tmp_path / 'hf'), str(tmp_path / 'wd'))
  assert '\n' not in str(e.value) and not (tmp_path / 'wd').exists()


@pytest.fixture(scope='module')
def span_batches():
  from configs import t5_tiny
  from lm.data import pipeline
  config = t5_tiny.get_config('test')
  config.model.dropout = 0.1  # dropout masks must also agree across meshes
  _, rows, _ = pipeline.prepare(config)
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  return config, [next(iterator) for _ in range(2)]


@pytest.mark.slow  # its fixture (a tokenizer and store of the embedded corpus) is shared with the sharded test
def test_span_corruption_batches_reconstruct_the_text(span_batches):
  from lm.data import span_corruption, tokenizer as tokenizer_lib
  config, batches = span_batches
  batch = batches[0]
  raw, target_len = span_corruption.random_spans_helper(64)
  assert batch['encoder_inputs'].shape == (8, 64) and batch['targets'].shape == (8, target_len)
  assert np.all(batch['inputs'][:, 1:] == batch['targets'][:, :-1]) and np.all(batch['inputs'][:, 0] == 0)
  tokenizer = tokenizer_lib.get_tokenizer(config)
  for row in range(2):
    original = span_corruption.reconstruct(batch['encoder_inputs'][row], batch['targets'][row],
                                           tokenizer.vocab_size, config.data.num_sentinels)
    assert len(original) == raw and original.max() < tokenizer.vocab_size - config.data.num_sentinels
    assert tokenizer.id_to_piece(tokenizer.vocab_size - 1) == '<extra_id_0>'


@pytest.mark.slow
@pytest.mark.parametrize('mesh_shape', [(2, 2, 2)])
def test_sharded_losses_equal_one_device(span_batches, mesh_shape):
  from test_sharded import run_steps
  config, batches = span_batches
  reference = run_steps(config, (1, 1, 1), batches)[0]
  losses, state = run_steps(config, mesh_shape, batches)
  np.testing.assert_allclose(losses[0], reference[0], rtol=1e-6)
  np.testing.assert_allclose(losses, reference, rtol=1e-4)
  assert state.params['decoder']['block_0']['cross']['query']['kernel'].sharding.spec == jax.sharding.PartitionSpec(
      'fsdp', 'tensor', None)


def test_flop_convention_is_hand_checked():
  """encoder_decoder_flops for t5_tiny:test by hand: S=64 encoder tokens, T=14 decoder tokens (span corruption of
  72 raw tokens), d=64, A=4x16=64, d_ff=128 gated (3 matrices), 2+2 blocks, V=1024."""
  from configs import t5_tiny
  from lm.models import registry
  from lm.perf import flops
  config = t5_tiny.get_config('test')
  assert flops.decoder_len(config) == 14 and flops.tokens_per_example(config) == 78
  mlp = 3 * 64 * 128
  encoder = 64 * (6 * 2 * (4 * 64 * 64 + mlp) + 12 * 2 * 64 * 64)  # 37,748,736
  decoder = 14 * (6 * (2 * (8 * 64 * 64 + mlp) + 64 * 1024) + 12 * 2 * 64 * (14 + 64))  # 16,816,128
  assert encoder + decoder == 54_564_864 == flops.encoder_decoder_flops(config)
  assert flops.flops_per_step(config, 0) == 8 * 54_564_864
  # the 6N part counts exactly the model's matmul kernels
  shapes = jax.eval_shape(lambda: registry.build(config.model).init(jax.random.PRNGKey(0),
                                                                    registry.example_batch(config)))['params']
  kernels = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(shapes)
                if 'kernel' in jax.tree_util.keystr(path))
  assert kernels == 2 * (4 * 64 * 64 + mlp) + 2 * (8 * 64 * 64 + mlp) + 64 * 1024


@pytest.mark.slow
def test_seq2seq_fine_tune_reports_generation_metrics_resumes_exactly_and_generates(tmp_path):
  """data.task='seq2seq' on a jsonl file through the one loop: eval/bleu and eval/rouge* from decoded held-out
  sources; resumed from its step-3 checkpoint it repeats steps 4-6 exactly; lm.generate's and lm.evaluate's
  libraries on the workdir; a file without the target field stops before writing."""
  from configs import t5_tiny
  from lm.errors import DataError
  from lm.inference import generation, sampling, seq2seq_scoring
  from lm.store import workdir, writers
  from lm.training import loop
  words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta']
  rows = [{'source': ' '.join(words[(i + k) % 8] for k in range(4)), 'target': words[i % 8]} for i in range(64)]
  (tmp_path / 'pairs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  config = t5_tiny.get_config('test')
  config.data.task, config.data.source, config.data.path = 'seq2seq', 'jsonl', str(tmp_path / 'pairs.jsonl')
  config.data.task_prefix, config.data.target_len, config.data.eval_fraction = 'first: ', 8, 0.2
  config.seq_len, config.model.vocab_size, config.data.num_sentinels = 16, 300, 0
  config.num_train_steps, config.eval_every_steps, config.eval_steps = 6, 6, 0
  config.checkpoint_every_steps, config.log_every_steps, config.async_checkpoints = 3, 1, False
  config.generation_eval_examples, config.generation_num_beams = 4, 2
  loop.run(config, str(tmp_path / 'wd'))
  rows = writers.read_rows(str(tmp_path / 'wd'))
  assert {'eval/bleu', 'eval/rouge1', 'eval/rouge2', 'eval/rougeLsum', 'eval/seq2seq_loss'} <= set(rows[-1])
  shutil.rmtree(tmp_path / 'wd' / 'checkpoints' / '6')  # as if killed after the step-3 checkpoint
  loop.run(config, str(tmp_path / 'wd'))
  losses = lambda rs: {r['step']: r['train/loss'] for r in rs if 'train/loss' in r}  # noqa: E731
  assert losses(writers.read_rows(str(tmp_path / 'wd'))) == losses(rows) and len(losses(rows)) == 6
  run = workdir.load(str(tmp_path / 'wd'))
  texts, _ = generation.generate_texts(run, ['alpha beta gamma delta'], sampling.Sampling(), max_new_tokens=4)
  assert len(texts) == 1 and isinstance(texts[0], str)
  scored = seq2seq_scoring.score_pairs(run, str(tmp_path / 'pairs.jsonl'), num_beams=2)
  assert scored['pairs'] == 64 and scored['tokens'] >= 128 and 0 <= scored['bleu'] <= 100
  assert abs(scored['perplexity'] - np.exp(scored['loss'])) < 1e-6 * scored['perplexity']
  assert np.isfinite(scored['other_source_loss']) and scored['other_source_loss'] != scored['loss']
  (tmp_path / 'bad.jsonl').write_text('{"source": "a b", "label": "x"}\n')
  config.data.path = str(tmp_path / 'bad.jsonl')
  with pytest.raises(DataError, match=r'bad.jsonl:1.*target') as e:
    loop.run(config, str(tmp_path / 'bad_wd'))
  assert '\n' not in str(e.value) and not (tmp_path / 'bad_wd').exists()


@pytest.mark.slow
def test_bench_reports_encoder_decoder_throughput_and_mfu(span_batches):
  """lm.bench's library on t5_tiny:test: tokens/s over encoder + decoder tokens, MFU from the per-stack FLOPs."""
  import math

  from lm.perf import flops, measure
  config = span_batches[0].copy_and_resolve_references()
  config.model.dropout = 0.0
  report = measure.measure_all(config, ['train'], steps=1, warmup=1, data_batches=1)
  assert report['batch_tokens'] == 8 * (64 + 14) and report['flops_per_step'] == flops.flops_per_step(config, 0)
  assert report['tokens_per_sec'] > 0 and math.isfinite(report['loss_after']) and report['mfu'] > 0


def test_z_loss_adds_the_squared_log_normaliser():
  """objectives 'seq2seq' with config.z_loss: loss = cross-entropy + z_loss * log(Z)^2 on the weighted tokens."""
  import ml_collections

  from lm import objectives
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 11)) * 3
  batch = {'targets': jnp.array([[1, 2, 3], [4, 5, 0]]), 'weights': jnp.array([[1., 1., 1.], [1., 1., 0.]])}
  plain = objectives.seq2seq_sums({'logits': logits}, batch, ml_collections.ConfigDict({'z_loss': 0.0}))
  with_z = objectives.seq2seq_sums({'logits': logits}, batch, ml_collections.ConfigDict({'z_loss': 1e-2}))
  log_z = jax.nn.logsumexp(logits, axis=-1)
  expected_z = 1e-2 * float(jnp.sum(jnp.square(log_z) * batch['weights']))
  assert 'z_loss' not in plain and with_z['z_loss'] == pytest.approx(expected_z, rel=1e-6)
  assert with_z['loss'] == pytest.approx(float(plain['loss']) + expected_z, rel=1e-6)
