"""LoRA: step 0 is the base model bitwise, merged == unmerged, only adapters train (no gradient for the base), the
checkpoints hold adapters only and resume exactly, bad keys fail before compile, and PEFT loads the export."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.config import base
from lm.models import lora, registry
from lm.store import checkpoint


def _model_cfg(**overrides):
  m = base.get_config().model
  m.num_layers, m.num_heads, m.d_model, m.d_ff, m.vocab_size, m.max_len = 2, 4, 32, 64, 97, 32
  m.update(overrides)
  return m


@pytest.mark.parametrize('scan', [False, pytest.param(True, marks=pytest.mark.slow)])
def test_step_0_is_the_base_model_and_merged_equals_unmerged(scan):
  m = _model_cfg(scan_layers=scan, lora_targets=r'(attn/(query|value)|mlp/fc_in)/kernel$')
  x = jnp.asarray(np.random.RandomState(0).randint(0, 97, (2, 16)))
  plain = registry.build(m)
  base_params = nn.unbox(plain.init(jax.random.PRNGKey(0), {'inputs': x}))['params']
  m.lora_rank = 4
  adapted = registry.build(m)
  boxed = adapted.init(jax.random.PRNGKey(1), {'inputs': x})['params']
  from lm.models import layers
  leaves = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda b: isinstance(b, nn.Partitioned))[0]
  names = {layers.path_name(p): leaf for p, leaf in leaves}
  adapters = {k: v for k, v in names.items() if lora.is_adapter(k)}
  assert {k.rsplit('/', 2)[-2] for k in adapters} == {'query', 'value', 'fc_in'}
  assert all(isinstance(v, nn.Partitioned) for v in adapters.values())  # logical axes, like their kernels
  params = checkpoint.merge_params(nn.unbox(boxed), checkpoint.flatten(base_params))  # the base + fresh adapters
  before = plain.apply({'params': base_params}, {'inputs': x})['logits']
  assert bool(jnp.all(adapted.apply({'params': params}, {'inputs': x})['logits'] == before))  # B = 0: bitwise
  moved = checkpoint.merge_params(params, {k: 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape)
                                           for k, v in checkpoint.flatten(params).items() if k.endswith('lora_b')})
  unmerged = adapted.apply({'params': moved}, {'inputs': x})['logits']
  merged = plain.apply({'params': lora.merged(moved, m)}, {'inputs': x})['logits']
  assert float(jnp.abs(unmerged - before).max()) > 0.1
  np.testing.assert_allclose(merged, unmerged, atol=1e-5)


def _fake_run(tmp_path, config) -> str:
  """A directory init_from accepts at validation (config.json + checkpoints/), for the checks before compile."""
  run = tmp_path / 'base'
  (run / 'checkpoints').mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps(config.to_dict()))
  return str(run)


@pytest.mark.parametrize('overrides,needle', [
    ({'model.lora_targets': 'nothing_here'}, "model.lora_targets='nothing_here' matches no kernel"),
    ({'model.lora_rank': 65}, 'model.lora_rank=65 exceeds the dimensions of block_0/attn/key/kernel (64 in, 64 out)'),
    ({'optimizer.freeze_patterns': 'lora_'}, 'freezes every adapter and head: nothing would train'),
    ({'init_from': ''}, 'model.lora_rank=4 needs init_from')])
def test_bad_lora_settings_fail_in_one_line_before_compile(overrides, needle, tmp_path):
  from configs import gpt_tiny
  from lm.config import validation
  from lm.errors import ConfigError
  config = gpt_tiny.get_config('test')
  config.init_from = _fake_run(tmp_path, config)
  config.model.lora_rank = 4
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  with pytest.raises(ConfigError) as error:
    validation.validate(config)
  assert needle in str(error.value) and '\n' not in str(error.value), str(error.value)


def _step_flops(config, batch: dict) -> float:
  from lm.parallel import sharding
  from lm.training import optim, state as state_lib, step as step_lib
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  model = registry.build(config.model)
  abstract, shardings, _ = state_lib.abstract_state(config, model, optim.build(config), mesh)
  p_train, _ = step_lib.jit_steps(config, model, shardings, mesh)
  batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    compiled = p_train.lower(checkpoint.abstract_with_shardings(abstract, shardings), batch).compile()
  return compiled.cost_analysis()['flops']


@pytest.mark.slow  # two compiles of the train step (~20 s)
def test_no_gradient_is_computed_for_the_frozen_base(tiny_config, tiny_data, tmp_path):
  """The base parameters are closed over, not differentiated (training/step.py): XLA's count of the LoRA step's
  FLOPs drops by about the weight gradients' third (2 of the 6 FLOPs per parameter and token)."""
  from lm.data import pipeline
  config = tiny_config.copy_and_resolve_references()
  batch = next(pipeline.train_iterator(config, tiny_data[1], 0, 1))
  full = _step_flops(config, batch)
  config.init_from, config.model.lora_rank = _fake_run(tmp_path, config), 4
  config.model.lora_targets = r'(attn/(query|key|value|out)|mlp/fc_(in|out))/kernel$'  # every block matmul
  adapted = _step_flops(config, batch)
  print(f'train-step FLOPs: full fine-tuning {full:.3e}, LoRA {adapted:.3e} ({adapted / full:.2f}x)')
  assert adapted < 0.85 * full


def _lora_config(init_from: str, steps: int):
  from configs import gpt_tiny
  from lm.config import inherit
  config = gpt_tiny.get_config('test')
  config.init_from, config.model.lora_rank, config.num_train_steps = init_from, 4, steps
  config.checkpoint_every_steps, config.eval_every_steps, config.log_every_steps, config.num_samples = 3, 6, 1, 0
  config.optimizer.learning_rate = 1e-2
  inherit.adopt_pretrained(config)
  return config


@pytest.mark.slow
def test_only_adapters_train_are_checkpointed_and_resume_exactly(gpt_run, tmp_path):
  """gpt_tiny:test + rank-4 adapters from the 20-step gpt_run: the base stays bitwise what init_from holds, the
  checkpoints hold the adapters alone (the base is read from init_from again), and 3 + 3 steps with a restart give
  the 6 losses of an uninterrupted run, bitwise."""
  from lm.store import workdir as workdir_lib, writers
  from lm.training import loop
  straight = str(tmp_path / 'straight')
  loop.run(_lora_config(gpt_run[0], 6), straight)
  resumed = str(tmp_path / 'resumed')
  loop.run(_lora_config(gpt_run[0], 3), resumed)
  loop.run(_lora_config(gpt_run[0], 6), resumed)
  losses = [[r['train/loss'] for r in writers.read_rows(w) if 'train/loss' in r] for w in (straight, resumed)]
  assert len(losses[0]) == 6 and losses[0] == losses[1]
  pretrained = checkpoint.flatten(workdir_lib.load(gpt_run[0]).params)
  trained = checkpoint.flatten(workdir_lib.load(straight).params)
  for name, value in pretrained.items():
    np.testing.assert_array_equal(np.asarray(trained[name]), np.asarray(value), err_msg=name)
  adapters = {k for k in trained if lora.is_adapter(k)}
  assert adapters == set(trained) - set(pretrained) and len(adapters) == 16
  assert float(np.abs(np.asarray(trained['block_1/attn/value/lora_b'])).max()) > 0  # B left zero: it trained
  from orbax import checkpoint as ocp
  metadata = ocp.PyTreeCheckpointer().metadata(os.path.join(straight, 'checkpoints', '6', 'state'))
  assert set(checkpoint.flatten(metadata.item_metadata.tree['params'])) == adapters
  ratio = sum(trained[k].size for k in adapters) / sum(v.size for v in trained.values())
  print(f'adapters: {len(adapters)} tensors, {ratio:.2%} of the parameters')


@pytest.mark.slow
@pytest.mark.parametrize('name', ['llama', 'gpt2'])
def test_peft_loads_the_adapters_and_merged_export_equals_them(name, tmp_path):
  """A tiny random HF Llama / GPT-2, converted, LoRA-tuned for 3 steps (no model key given); `to_peft` loaded with
  peft onto the HF model gives lm's logits within 1e-4 (GPT-2's fused c_attn as one rank-3r adapter), and `to_hf
  --merge_lora` loads in transformers with the same logits."""
  transformers = pytest.importorskip('transformers')
  peft = pytest.importorskip('peft', reason='test extra: pip install -r requirements-test.txt')
  torch = pytest.importorskip('torch')
  from test_convert import _bpe, _save

  from lm.hf import convert
  from lm.store import workdir as workdir_lib
  from lm.training import loop
  torch.manual_seed(0)
  fast = transformers.PreTrainedTokenizerFast
  if name == 'llama':
    tok = fast(tokenizer_object=_bpe(['<unk>', '<s>', '</s>'], bos='<s>'), bos_token='<s>', eos_token='</s>',
               unk_token='<unk>')
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2))
  else:
    tok = fast(tokenizer_object=_bpe(['<|endoftext|>']), eos_token='<|endoftext|>', bos_token='<|endoftext|>')
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_positions=128, n_embd=32,
                                                                 n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0))
  hf_dir = _save(model.eval(), tok, tmp_path / 'hf')
  convert.from_hf(hf_dir, str(tmp_path / 'base'))
  config = _lora_config(str(tmp_path / 'base'), 3)
  config.model.lora_targets = r'attn/(query|value|out)/kernel$'  # key left out: a fused c_attn with a zero part
  loop.run(config, str(tmp_path / 'lora'))
  run = workdir_lib.load(str(tmp_path / 'lora'))
  ids = list(range(5, 40))
  ours = np.asarray(run.model.apply({'params': run.params}, {'inputs': jnp.asarray([ids])})['logits'][0])
  summary = convert.to_peft(str(tmp_path / 'lora'), str(tmp_path / 'peft'))
  print(f'{name}: {summary["modules"]} adapted modules, {summary["adapter_parameters"]} adapter parameters '
        f'({summary["adapter_fraction"]:.2%} of the model)')
  with torch.no_grad():
    plain = model(torch.tensor([ids])).logits[0].numpy()
  assert float(np.abs(ours - plain).max()) > 1e-3  # the adapters moved the model
  adapted = peft.PeftModel.from_pretrained(model, str(tmp_path / 'peft')).eval()
  with torch.no_grad():
    theirs = adapted(torch.tensor([ids])).logits[0].numpy()
  difference = float(np.abs(ours - theirs).max())
  print(f'{name}: lm with adapters vs peft: max |logit difference| {difference:.2e}')
  assert difference < 1e-4
  convert.to_hf(str(tmp_path / 'lora'), str(tmp_path / 'merged'), merge_lora=True)
  merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'merged')).eval()
  with torch.no_grad():
    np.testing.assert_allclose(merged(torch.tensor([ids])).logits[0].numpy(), ours, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['bert_tiny', 't5_tiny'])
def test_every_family_takes_adapters_and_starts_from_its_base(family):
  """The encoder (BERT) and the encoder-decoder (T5: self- and cross-attention) carry adapters on their attention
  projections, and with B = 0 compute exactly what their base does."""
  import importlib
  config = importlib.import_module(f'configs.{family}').get_config('test')
  batch = registry.example_batch(config)
  plain = registry.build(config.model)
  base_params = nn.unbox(plain.init(jax.random.PRNGKey(0), batch))['params']
  config.model.lora_rank = 2
  adapted = registry.build(config.model)
  params = nn.unbox(adapted.init(jax.random.PRNGKey(1), batch))['params']
  adapters = [k for k in checkpoint.flatten(params) if lora.is_adapter(k)]
  assert adapters and (family != 't5_tiny' or any('/cross/' in k for k in adapters))
  params = checkpoint.merge_params(params, checkpoint.flatten(base_params))
  ours, theirs = adapted.apply({'params': params}, batch), plain.apply({'params': base_params}, batch)
  assert set(ours) == set(theirs)
  for key in ours:
    assert bool(jnp.all(ours[key] == theirs[key])), key
