"""BLOOM and OPT against transformers: tiny random BloomForCausalLM (4 and 6 heads: ALiBi's slopes for a power of two
and the interleaved extra slopes otherwise) and OPTForCausalLM (positions offset by 2), imported, compared, decoded,
exported and refused."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_convert import _bpe

transformers = pytest.importorskip('transformers', reason='test extra: pip install -r requirements-test.txt')
torch = pytest.importorskip('torch')

PROMPTS = ['def parse(', 'obj, end = self.raw_decode(s, idx=_w(s, 0).end())', 'return']
CLASSES = {'bloom4': 'BloomForCausalLM', 'bloom6': 'BloomForCausalLM', 'opt': 'OPTForCausalLM'}


def _model(name: str, directory) -> str:
  """A tiny random HF model of `name` saved with a byte-level BPE tokenizer of its special-token layout."""
  fast = transformers.PreTrainedTokenizerFast
  torch.manual_seed(0)
  if name.startswith('bloom'):
    tok = fast(tokenizer_object=_bpe(['<unk>', '<s>', '</s>', '<pad>']), unk_token='<unk>', bos_token='<s>',
               eos_token='</s>', pad_token='<pad>')
    model = transformers.BloomForCausalLM(transformers.BloomConfig(
        vocab_size=300, hidden_size=48, n_layer=2, n_head=int(name[-1]), bos_token_id=1, eos_token_id=2,
        pad_token_id=3))
  else:  # OPT's tokenizer starts every text with </s> (id 2), its bos
    tok = fast(tokenizer_object=_bpe(['<s>', '<pad>', '</s>', '<unk>'], bos='</s>'), bos_token='</s>',
               eos_token='</s>', pad_token='<pad>', unk_token='<unk>')
    model = transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=128, word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2))
  model.eval().save_pretrained(directory)
  tok.save_pretrained(directory)
  return str(directory)


def test_alibi_slopes_equal_blooms_for_every_head_count():
  from transformers.models.bloom import modeling_bloom

  from lm.models import layers
  for heads in range(1, 33):
    np.testing.assert_allclose(layers.alibi_slopes(heads),
                               modeling_bloom._get_alibi_slopes(heads, torch.device('cpu')).numpy(), rtol=1e-6)


@pytest.mark.parametrize('field,value,needle', [
    ('do_layer_norm_before', False, 'OPT do_layer_norm_before=false'),
    ('word_embed_proj_dim', 16, 'OPT word_embed_proj_dim=16 != hidden_size=32'),
    ('layer_norm_elementwise_affine', False, 'OPT layer_norm_elementwise_affine=false'),
    ('apply_residual_connection_post_layernorm', True, 'BLOOM apply_residual_connection_post_layernorm=true')])
def test_unsupported_layouts_are_refused_in_one_line(field, value, needle, tmp_path):
  from lm.errors import ConfigError
  from lm.hf import convert
  arch = 'BloomForCausalLM' if field.startswith('apply') else 'OPTForCausalLM'
  hf = {'architectures': [arch], 'hidden_size': 32, 'num_hidden_layers': 2, 'num_attention_heads': 4, 'n_layer': 2,
        'n_head': 4, 'ffn_dim': 64, 'vocab_size': 300, 'max_position_embeddings': 128, field: value}
  (tmp_path / 'hf').mkdir()
  (tmp_path / 'hf' / 'config.json').write_text(json.dumps(hf))
  with pytest.raises(ConfigError) as error:
    convert.from_hf(str(tmp_path / 'hf'), str(tmp_path / 'wd'))
  assert needle in str(error.value) and '\n' not in str(error.value)
  assert not os.path.exists(tmp_path / 'wd')


def _lm_greedy(run, prompts: list[list[int]], new: int) -> list[list[int]]:
  from lm.inference import sampling
  with jax.set_mesh(run.mesh):
    return sampling.generate(run.model, run.params, prompts, max_new_tokens=new, eos_id=-1,
                             pad_id=run.tokenizer.pad_id)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(CLASSES))
def test_converted_logits_generation_and_export_equal_transformers(name, tmp_path):
  """from_hf: logits within 1e-4 of transformers' (and the same for a document packed after another); greedy
  decoding token-equal to `generate`, and a left-padded
  batch of three prompts decodes each as it would alone; to_hf gives back every tensor, which transformers loads."""
  from safetensors.numpy import load_file

  from lm.hf import convert
  from lm.store import workdir
  directory = _model(name, tmp_path / 'hf')
  assert convert.from_hf(directory, str(tmp_path / 'wd'))['architecture'] == CLASSES[name]
  run = workdir.load(str(tmp_path / 'wd'))
  hf_tok = transformers.AutoTokenizer.from_pretrained(directory)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
  ids = [hf_tok(p)['input_ids'] for p in PROMPTS]
  assert [run.tokenizer.encode_default(p) for p in PROMPTS] == ids
  batch = {'inputs': jnp.asarray([ids[1]]), 'segment_ids': jnp.ones((1, len(ids[1])), jnp.int32)}
  ours = np.asarray(run.model.apply({'params': run.params}, batch)['logits'][0])
  with torch.no_grad():
    theirs = model(torch.tensor([ids[1]])).logits[0].numpy()
  difference = float(np.abs(ours - theirs).max())
  print(f'{name}: max |logit difference| {difference:.2e}')
  assert difference < 1e-4
  packed = {'inputs': jnp.asarray([ids[0] + ids[1]]), 'positions': jnp.asarray([list(range(len(ids[0])))
                                                                              + list(range(len(ids[1])))]),
            'segment_ids': jnp.asarray([[1] * len(ids[0]) + [2] * len(ids[1])])}
  second = np.asarray(run.model.apply({'params': run.params}, packed)['logits'][0, len(ids[0]):])
  np.testing.assert_allclose(second, ours, atol=1e-5)  # a packed document computes as it does alone
  together = _lm_greedy(run, ids, 12)
  for prompt, new in zip(ids, together):
    with torch.no_grad():
      expected = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                pad_token_id=run.tokenizer.pad_id)[0].tolist()
    assert prompt + new == expected and _lm_greedy(run, [prompt], 12) == [new]
  assert convert.to_hf(str(tmp_path / 'wd'), str(tmp_path / 'out'))['architecture'] == CLASSES[name]
  original, exported = (load_file(os.path.join(d, 'model.safetensors')) for d in (directory, tmp_path / 'out'))
  assert set(exported) == set(original) - {'lm_head.weight'}  # the tied head is not written (transformers ties it)
  for key, value in exported.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out')).eval()
  with torch.no_grad():
    np.testing.assert_array_equal(back(torch.tensor([ids[1]])).logits[0].numpy(), theirs)
