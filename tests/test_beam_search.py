"""Beam search (lm/inference/beam_search.py through sampling.generate) against transformers' generate(num_beams=4):
tiny random GPT-2 and Llama models converted in-process with lm's HF layouts, a batch of two prompts of different
lengths (left-padded in both), an EOS the models do produce; plus one beam = greedy, scanned layers, the cache
reordering rule and the flag checks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import UsageError
from lm.hf import architectures, convert
from lm.inference import beam_search, sampling
from lm.models import registry
from lm.parallel import sharding
from lm.store import checkpoint

transformers = pytest.importorskip('transformers', reason='test extra: pip install -r requirements-test.txt')
torch = pytest.importorskip('torch')

PROMPTS = [[5, 6, 7, 8, 9], [40, 41]]
PAD, NEW, BEAMS = 0, 12, 4
EOS = {'gpt2': 63, 'llama': 85}  # tokens these random models produce: some hypotheses end early
PENALTIES = (1.0, 0.5, 2.0)


def _hf_model(name: str):
  """A tiny random transformers model (vocab 96) with weights large enough that decoding does not repeat one
  token."""
  torch.manual_seed(0)
  if name == 'gpt2':
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     initializer_range=0.3, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()
  config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                    tie_word_embeddings=False, initializer_range=0.3, bos_token_id=1, eos_token_id=2)
  return transformers.LlamaForCausalLM(config).eval()


def _param_shapes(config):
  """The parameter tree of config.model as ShapeDtypeStructs (nothing computed)."""
  model = registry.build(config.model)
  init = lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))  # noqa: E731
  return nn.unbox(jax.eval_shape(init))['params']


def _lm_model(hf_model, **overrides):
  """(lm model, params) holding hf_model's tensors through lm's HF layout (hf/convert.py), without files;
  scan_layers=True stacks the converted blocks on a leading layer axis."""
  arch = type(hf_model).__name__
  config = convert.lm_config({**hf_model.config.to_dict(), 'architectures': [arch]}, arch, 'float32')
  layout = architectures.ARCHITECTURES[arch]
  tensors = {name: value.detach().numpy() for name, value in hf_model.state_dict().items()}
  shapes = {name: leaf.shape for name, leaf in checkpoint.flatten(_param_shapes(config)).items()}
  mapped, fresh = convert.map_tensors(tensors, layout.layout.tensor_rules(config.model, list(tensors)),
                                      layout.ignored, shapes, arch)
  assert not fresh
  config.model.update(overrides)
  target = _param_shapes(config)
  layers = range(config.model.num_layers)
  loaded = {name: np.stack([mapped[f'block_{i}/{name[len("blocks/"):]}'] for i in layers])
            if name.startswith('blocks/') else mapped[name] for name in checkpoint.flatten(target)}
  return registry.build(config.model), checkpoint.merge_params(target, {k: jnp.asarray(v) for k, v in loaded.items()})


def _cut(row: list[int], eos: int) -> list[int]:
  return row[:row.index(eos)] if eos in row else row


def _hf_beams(hf_model, eos: int, length_penalty: float = 1.0, num_beams: int = BEAMS):
  """(new tokens of each prompt before EOS, sequence scores) from transformers' generate, prompts left-padded."""
  width = max(len(p) for p in PROMPTS)
  ids = torch.tensor([[PAD] * (width - len(p)) + p for p in PROMPTS])
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
  out = hf_model.generate(ids, attention_mask=mask, num_beams=num_beams, do_sample=False, max_new_tokens=NEW,
                          length_penalty=length_penalty, early_stopping=False, eos_token_id=eos, pad_token_id=PAD,
                          return_dict_in_generate=True, output_scores=True)
  scores = out.sequences_scores.tolist() if num_beams > 1 else None
  return [_cut(row, eos) for row in out.sequences[:, width:].tolist()], scores


def _lm_beams(model, params, eos: int, length_penalty: float = 1.0, num_beams: int = BEAMS):
  """(new tokens of each prompt before EOS, best scores) from lm's beam search."""
  tokens, pads = sampling.left_pad(PROMPTS, max_len=model.cfg.max_len, max_new_tokens=NEW, pad_id=PAD, eos_id=eos)
  out, scores = sampling._generate_beams(params, tokens, pads, np.float32(length_penalty), model=model,
                                         max_new_tokens=NEW, num_beams=num_beams, eos_id=eos, pad_id=PAD,
                                         rules=sharding.DEFAULT_RULES)
  return [_cut(row, eos) for row in np.asarray(out).tolist()], np.asarray(scores).tolist()


@pytest.fixture(scope='module')
def gpt2():
  """(HF GPT-2, lm model, lm params)."""
  hf_model = _hf_model('gpt2')
  return (hf_model, *_lm_model(hf_model))


# One variant per layout and per layer stacking: unrolled GPT-2 (fast tier) and scanned Llama (cache leaves
# [layers, B, ...]; full suite).
@pytest.mark.parametrize('name, scan_layers', [('gpt2', False), pytest.param('llama', True, marks=pytest.mark.slow)])
def test_beams_equal_transformers(name, scan_layers, gpt2):
  """Tokens and scores for three length penalties; scan_layers=True (cache leaves [layers, B, ...]) gives the beams
  transformers gives, as the unrolled model does."""
  hf_model = gpt2[0] if name == 'gpt2' else _hf_model(name)
  model, params = gpt2[1:] if name == 'gpt2' and not scan_layers else _lm_model(hf_model, scan_layers=scan_layers)
  lengths = []
  for length_penalty in PENALTIES:
    expected, expected_scores = _hf_beams(hf_model, EOS[name], length_penalty)
    ours, scores = _lm_beams(model, params, EOS[name], length_penalty)
    assert ours == expected, length_penalty
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, err_msg=str(length_penalty))
    lengths.append(tuple(len(row) for row in ours))
  assert min(map(min, lengths)) < NEW and max(map(max, lengths)) == NEW  # hypotheses ended by EOS and by the length
  assert any(len(set(pair)) > 1 for pair in lengths)  # the two rows of a batch stopping at different lengths


@pytest.mark.slow
def test_one_beam_is_greedy(gpt2):
  hf_model, model, params = gpt2
  eos = 95  # never chosen: one beam then runs to the end like greedy decoding
  greedy, _ = _hf_beams(hf_model, eos, num_beams=1)
  assert _lm_beams(model, params, eos, num_beams=1)[0] == greedy
  assert all(len(row) == NEW and len(set(row)) > 3 for row in greedy)


def test_reorder_cache_gathers_the_batch_axis_of_keys_and_values_only():
  keys = np.arange(3 * 2 * 1 * 1).reshape(3, 2, 1, 1)  # [B, length, heads, head_dim]
  cache = {'layer': {'cached_key': keys, 'cache_index': np.int32(5)},
           'scanned': {'cached_value': np.stack([keys, -keys]), 'cache_index': np.array([5, 5])}}  # [layers, B, ...]
  out = beam_search.reorder_cache(cache, jnp.array([2, 2, 0, 1]))
  np.testing.assert_array_equal(out['layer']['cached_key'], keys[[2, 2, 0, 1]])
  np.testing.assert_array_equal(out['scanned']['cached_value'], np.stack([keys, -keys])[:, [2, 2, 0, 1]])
  assert int(out['layer']['cache_index']) == 5 and out['scanned']['cache_index'].tolist() == [5, 5]


def test_beam_flags_are_checked():
  greedy, hot = sampling.Sampling(), sampling.Sampling(temperature=0.8)
  sampling.check_beams(4, greedy)
  sampling.check_beams(1, hot)
  with pytest.raises(UsageError, match=r'--num_beams=4 with --temperature=0.8: beam sampling is not supported'):
    sampling.generate(None, None, PROMPTS, max_new_tokens=4, eos_id=3, pad_id=PAD, sampling=hot, num_beams=4)
  with pytest.raises(UsageError, match='--num_beams=0: must be >= 1'):
    sampling.check_beams(0, greedy)
  with pytest.raises(UsageError, match='--num_beams=2 with --nocache: beam search runs on the KV cache'):
    sampling.check_beams(2, greedy, use_cache=False)
