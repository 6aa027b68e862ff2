"""lm.convert against transformers: tiny randomly initialised GPT-2, BERT and Llama (GQA, untied head) models saved
with save_pretrained (with tokenizers trained here on stdlib text), imported, compared, exported and refused."""
import inspect
import json
import os
import re
import shutil

import numpy as np
import pytest

from runs import run_lm

transformers = pytest.importorskip('transformers', reason='test extra: pip install -r requirements-test.txt')
torch = pytest.importorskip('torch')

TEXT = 'obj, end = self.raw_decode(s, idx=_w(s, 0).end())\nreturn obj\n'
CLASSES = {'gpt2': 'GPT2LMHeadModel', 'bert': 'BertForPreTraining', 'llama': 'LlamaForCausalLM'}


def _corpus() -> list[str]:
  import json as json_module
  return [inspect.getsource(json_module.decoder), inspect.getsource(json_module.encoder)]


def _bpe(specials: list[str], bos: str | None = None):
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
  tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  if bos:
    tok.post_processor = processors.TemplateProcessing(single=f'{bos} $A', special_tokens=[(bos, tok.token_to_id(bos))])
  return tok


def _wordpiece():
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(
      vocab_size=300, special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']))
  tok.post_processor = processors.TemplateProcessing(single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B [SEP]',
                                                     special_tokens=[('[CLS]', 2), ('[SEP]', 3)])
  return tok


def _save(model, tokenizer, directory):
  model.save_pretrained(directory)
  tokenizer.save_pretrained(directory)
  return str(directory)


@pytest.fixture(scope='module')
def hf_dirs(tmp_path_factory):
  """{'gpt2' | 'bert' | 'llama': directory} of tiny random HF models."""
  root = tmp_path_factory.mktemp('hf')
  torch.manual_seed(0)
  fast = transformers.PreTrainedTokenizerFast
  out = {}
  tok = _bpe(['<|endoftext|>'])
  out['gpt2'] = _save(transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
      eos_token_id=0)), fast(tokenizer_object=tok, eos_token='<|endoftext|>', bos_token='<|endoftext|>'),
      root / 'gpt2')
  tok = _wordpiece()
  out['bert'] = _save(transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=128)),
      fast(tokenizer_object=tok, pad_token='[PAD]', unk_token='[UNK]', cls_token='[CLS]', sep_token='[SEP]',
           mask_token='[MASK]'), root / 'bert')
  tok = _bpe(['<unk>', '<s>', '</s>'], bos='<s>')
  out['llama'] = _save(transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
      rope_theta=500000.0, bos_token_id=1, eos_token_id=2)),
      fast(tokenizer_object=tok, bos_token='<s>', eos_token='</s>', unk_token='<unk>'), root / 'llama')
  return out


def _hf_logits(directory: str, text: str = TEXT) -> tuple[list, np.ndarray]:
  """(input ids of the HF tokenizer's default encoding, token-head logits) from transformers."""
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  arch = json.load(open(os.path.join(directory, 'config.json')))['architectures'][0]
  model = getattr(transformers, arch).from_pretrained(directory).eval()
  ids = tok(text)['input_ids']
  with torch.no_grad():
    out = model(torch.tensor([ids]))
  return ids, (out.prediction_logits if arch.startswith('Bert') else out.logits)[0].numpy()


@pytest.fixture(scope='module')
def workdirs(hf_dirs, tmp_path_factory):
  root = tmp_path_factory.mktemp('converted')
  out = {}
  for name, directory in hf_dirs.items():
    result = run_lm('from_hf', f'--hf_dir={directory}', f'--workdir={root / name}', module='lm.convert', timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary['architecture'] == CLASSES[name] and summary['fresh'] == []
    out[name] = str(root / name)
  return out


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gpt2', 'bert', 'llama'])
def test_imported_logits_equal_transformers(name, hf_dirs, workdirs, tmp_path):
  text_file, dump = tmp_path / 'text.txt', tmp_path / 'logits.npy'
  text_file.write_text(TEXT)
  result = run_lm(f'--workdir={workdirs[name]}', f'--text_file={text_file}', f'--dump_logits={dump}',
                  module='lm.evaluate', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  ids, expected = _hf_logits(hf_dirs[name])
  ours = np.load(dump)
  assert ours.shape == expected.shape == (len(ids), 300)  # same tokens, special tokens included
  difference = float(np.abs(ours - expected).max())
  print(f'{name}: max |logit difference| {difference:.2e} over {ours.size} logits')
  assert difference < 1e-4
  if name == 'llama':
    assert ids[0] == 1  # the <s> Llama's tokenizer adds
  if name == 'bert':
    assert (ids[0], ids[-1]) == (2, 3)  # [CLS] ... [SEP]


@pytest.mark.slow
def test_export_round_trip_loads_in_transformers(hf_dirs, workdirs, tmp_path):
  for name in ('gpt2', 'bert', 'llama'):
    out = str(tmp_path / name)
    result = run_lm('to_hf', f'--workdir={workdirs[name]}', f'--hf_dir={out}', module='lm.convert', timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (ids, logits), (ids_back, logits_back) = _hf_logits(hf_dirs[name]), _hf_logits(out)
    assert ids_back == ids
    np.testing.assert_allclose(logits_back, logits, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gpt2', 'llama'])
def test_generation_from_an_imported_decoder_matches_transformers(name, hf_dirs, workdirs):
  result = run_lm(f'--workdir={workdirs[name]}', '--prompt=def parse(', '--max_new_tokens=10', '--temperature=0',
                  module='lm.generate', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  tok = transformers.AutoTokenizer.from_pretrained(hf_dirs[name])
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dirs[name]).eval()
  ids = tok('def parse(', return_tensors='pt')['input_ids']
  expected = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)[0]
  assert result.stdout.rstrip('\n') == tok.decode(expected)


@pytest.mark.slow
def test_finetuning_from_an_imported_bert(workdirs, tmp_path):
  """bert_tiny_finetune from a converted BERT with no model key given: init_from's architecture and tokenizer are
  adopted (vocabulary 300, d_model 32, 128 positions), and reported."""
  result = run_lm('--config=configs/bert_tiny_finetune.py:test', f'--workdir={tmp_path / "ft"}',
                  f'--config.init_from={workdirs["bert"]}', '--config.num_train_steps=10', timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'init_from {workdirs["bert"]}: architecture taken from that run: ' in result.stdout
  assert 'model.vocab_size=300 (config: 1024)' in result.stdout and 'model.d_model=32 (config: 64)' in result.stdout
  assert re.search(r'loaded\s+46\s+[0-9,]+\s+block_0', result.stdout) and 'newly initialised         2' in result.stdout
  assert 'eval/accuracy' in result.stdout and 'Forgetting monitor off' in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gpt2', 'llama'])
def test_finetuning_a_converted_decoder_needs_no_model_key(name, workdirs, capsys, tmp_path):
  """gpt_tiny_classify from the converted GPT-2, gpt_tiny_sft from the converted Llama (GQA, RoPE, SwiGLU, untied):
  the configs' gpt_tiny keys give way to the checkpoint's, and every pretrained tensor loads."""
  import jax

  from configs import gpt_tiny_classify, gpt_tiny_sft
  from lm.config import inherit, validation
  from lm.training import loop
  config = gpt_tiny_classify.get_config('test') if name == 'gpt2' else gpt_tiny_sft.get_config()
  config.init_from, config.seq_len, config.batch_size = workdirs[name], 64, 8
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.forgetting_every_steps, config.num_samples, config.eval_steps = 0, 0, 2  # 2 eval batches, not the split
  changed = inherit.adopt_pretrained(config)
  assert changed['model.vocab_size'] == (8192 if name == 'llama' else 1024, 300)
  if name == 'llama':
    assert config.model.num_kv_heads == 2 and config.model.position == 'rope' and config.model.rope_theta == 5e5
  validation.validate(config, num_devices=jax.device_count(), process_count=1)
  summary = loop.run(config, str(tmp_path / 'wd'))
  table = capsys.readouterr().out
  assert re.search(r'newly initialised\s+' + ('2' if name == 'gpt2' else '0') + r'\s', table), table
  metric = 'eval/accuracy' if name == 'gpt2' else 'eval/clm_loss'
  assert np.isfinite(summary[metric]) and np.isfinite(summary['train/loss'])


@pytest.mark.slow
def test_bfloat16_on_request_and_bfloat16_files(hf_dirs, tmp_path):
  import jax

  from lm.store import workdir as workdir_lib
  result = run_lm('from_hf', f'--hf_dir={hf_dirs["llama"]}', f'--workdir={tmp_path / "bf16"}', '--dtype=bfloat16',
                  module='lm.convert', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  run = workdir_lib.load(str(tmp_path / 'bf16'))
  assert {str(x.dtype) for x in jax.tree.leaves(run.params)} == {'bfloat16'}
  assert run.config.model.dtype == 'bfloat16'
  stored = tmp_path / 'stored_bf16'  # a checkpoint saved in bfloat16 loads as float32 by default
  transformers.LlamaForCausalLM.from_pretrained(hf_dirs['llama']).to(torch.bfloat16).save_pretrained(stored)
  for name in ('tokenizer.json', 'tokenizer_config.json'):
    shutil.copy(os.path.join(hf_dirs['llama'], name), stored / name)
  result = run_lm('from_hf', f'--hf_dir={stored}', f'--workdir={tmp_path / "f32"}', module='lm.convert', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  params = workdir_lib.load(str(tmp_path / 'f32')).params
  assert {str(x.dtype) for x in jax.tree.leaves(params)} == {'float32'}
  np.testing.assert_allclose(np.asarray(params['ln_final']['scale']), np.asarray(run.params['ln_final']['scale'],
                                                                                   np.float32))


def _refused(hf_dir: str, tmp_path, message: str, command: bool = False):
  """from_hf refuses `hf_dir` with `message` and writes no checkpoint: through `lm.convert` (the one-line error,
  exit 2) when `command`, else in-process (the same LmError, without a subprocess's start-up)."""
  out = tmp_path / 'out'
  if command:
    result = run_lm('from_hf', f'--hf_dir={hf_dir}', f'--workdir={out}', module='lm.convert', timeout=300)
    assert result.returncode == 2, result.stdout[-1000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and message in line, line
  else:
    from lm.errors import LmError
    from lm.hf import convert as hf_convert
    with pytest.raises(LmError) as error:
      hf_convert.from_hf(hf_dir, str(out))
    assert message in str(error.value) and '\n' not in str(error.value), str(error.value)
  assert not os.path.exists(out / 'checkpoints')


@pytest.mark.slow
def test_unsafe_or_broken_checkpoints_are_refused(hf_dirs, tmp_path):
  from safetensors.numpy import load_file, save_file
  base = hf_dirs['gpt2']
  pickled = tmp_path / 'pickled'
  shutil.copytree(base, pickled)
  os.remove(pickled / 'model.safetensors')
  (pickled / 'pytorch_model.bin').write_bytes(b'not loaded')
  _refused(str(pickled), tmp_path / 'a', 'only pytorch_model.bin (a pickle, which lm never loads)', command=True)
  tampered = tmp_path / 'tampered'
  shutil.copytree(base, tampered)
  os.rename(tampered / 'model.safetensors', tampered / 'model-00001-of-00001.safetensors')
  (tampered / 'model.safetensors.index.json').write_text(json.dumps(
      {'weight_map': {'transformer.wte.weight': '../../etc/model.safetensors'}}))
  _refused(str(tampered), tmp_path / 'b', "shard name '../../etc/model.safetensors' is not a .safetensors file name")
  tensors = load_file(os.path.join(base, 'model.safetensors'))
  cases = [('missing', {k: v for k, v in tensors.items() if k != 'transformer.h.1.mlp.c_fc.bias'},
            'tensor transformer.h.1.mlp.c_fc.bias is missing'),
           ('extra', {**tensors, 'transformer.h.1.adapter.weight': np.zeros((2, 2), np.float32)},
            'unexpected tensor transformer.h.1.adapter.weight'),
           ('shape', {**tensors, 'transformer.wpe.weight': tensors['transformer.wpe.weight'][:64]},
            'tensor transformer.wpe.weight has shape (64, 32)')]
  for label, changed, message in cases:
    directory = tmp_path / label
    shutil.copytree(base, directory)
    save_file(changed, str(directory / 'model.safetensors'))
    _refused(str(directory), tmp_path / f'{label}_out', message)
  unknown = tmp_path / 'unknown'
  shutil.copytree(base, unknown)
  config = json.load(open(unknown / 'config.json'))
  (unknown / 'config.json').write_text(json.dumps({**config, 'architectures': ['MambaForCausalLM']}))
  _refused(str(unknown), tmp_path / 'c', "architecture 'MambaForCausalLM' is not supported")
  _refused(str(tmp_path / 'not_downloaded'), tmp_path / 'd', 'no config.json there')  # offline: nothing is fetched


@pytest.mark.slow
def test_export_of_a_trained_scanned_llama_run(tmp_path):
  """An lm-trained Llama-layout run with scanned blocks exports to LlamaForCausalLM with the same logits."""
  workdir, out, text_file, dump = (tmp_path / 'run'), str(tmp_path / 'hf'), tmp_path / 't.txt', tmp_path / 'l.npy'
  result = run_lm('--config=configs/llama_tiny.py:test', f'--workdir={workdir}', '--config.model.scan_layers=True',
                  '--config.num_train_steps=10', '--config.num_samples=0', timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert run_lm('to_hf', f'--workdir={workdir}', f'--hf_dir={out}', module='lm.convert').returncode == 0
  text_file.write_text(TEXT)
  assert run_lm(f'--workdir={workdir}', f'--text_file={text_file}', f'--dump_logits={dump}',
                module='lm.evaluate').returncode == 0
  from lm.data import tokenizer as tokenizer_lib
  ids = tokenizer_lib.load_run_tokenizer(str(workdir)).encode_default(TEXT)
  model = transformers.LlamaForCausalLM.from_pretrained(out).eval()
  with torch.no_grad():
    expected = model(torch.tensor([ids])).logits[0].numpy()
  np.testing.assert_allclose(np.load(dump), expected, atol=1e-4)


@pytest.mark.slow
def test_gpt2_files_without_the_transformer_prefix_and_special_ids_from_config(hf_dirs, tmp_path):
  from safetensors.numpy import load_file, save_file
  bare = tmp_path / 'bare'
  shutil.copytree(hf_dirs['gpt2'], bare)
  tensors = load_file(str(bare / 'model.safetensors'))
  save_file({k.removeprefix('transformer.'): v for k, v in tensors.items()}, str(bare / 'model.safetensors'))
  (bare / 'tokenizer_config.json').write_text('{"model_max_length": 128}')  # like the original gpt2 upload
  result = run_lm('from_hf', f'--hf_dir={bare}', f'--workdir={tmp_path / "wd"}', module='lm.convert', timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  from lm.data import hf_tokenizer
  tok = hf_tokenizer.HFTokenizer.load(str(tmp_path / 'wd'))
  assert tok.eos_id == 0 and tok.id_to_piece(tok.eos_id) == '<|endoftext|>'  # from config.json's eos_token_id


@pytest.mark.slow
def test_a_model_without_an_hf_layout_is_not_exported(gpt_run, tiny_config, tmp_path):
  """In-process (the command's one-line error is test_unsafe_or_broken_checkpoints_are_refused's): gpt_tiny:test is
  GPT-2 shaped and exports; with RoPE positions it has no transformers layout and is refused."""
  from lm.errors import ConfigError
  from lm.hf import convert
  from lm.training import loop
  assert convert.to_hf(gpt_run[0], str(tmp_path / 'ok'))['architecture'] == 'GPT2LMHeadModel'
  config = tiny_config.copy_and_resolve_references()
  config.model.position, config.num_train_steps, config.num_samples = 'rope', 2, 0
  loop.run(config, str(tmp_path / 'rope'))
  with pytest.raises(ConfigError, match='has no GPT2LMHeadModel layout in transformers'):
    convert.to_hf(str(tmp_path / 'rope'), str(tmp_path / 'no'))


@pytest.mark.parametrize('name', sorted(CLASSES))
def test_library_round_trip_gives_back_every_tensor(name, hf_dirs, tmp_path):
  """hf/convert.py in-process (no command): from_hf then to_hf returns the same tensors for every layout."""
  from safetensors.numpy import load_file

  from lm.hf import convert
  summary = convert.from_hf(hf_dirs[name], str(tmp_path / 'wd'))
  assert summary['architecture'] == CLASSES[name]
  assert convert.to_hf(str(tmp_path / 'wd'), str(tmp_path / 'out'))['architecture'] == CLASSES[name]
  original = load_file(os.path.join(hf_dirs[name], 'model.safetensors'))
  exported = load_file(str(tmp_path / 'out' / 'model.safetensors'))
  for key, value in exported.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  assert set(exported) <= set(original)


TAGS = ['O', 'B-PER', 'I-PER', 'B-LOC']
# GPT2ForQuestionAnswering is left out: its two parts (qa_outputs, GPT-2's body) are each tested here already
TASK_CLASSES = ('BertForSequenceClassification', 'BertForQuestionAnswering', 'BertForTokenClassification',
                'GPT2ForTokenClassification',
                'LlamaForQuestionAnswering', 'LlamaForTokenClassification')


def _task_model(name: str, directory) -> tuple:
  """A tiny random HF task model (token classifiers labelled with TAGS) saved with its tokenizer."""
  fast = transformers.PreTrainedTokenizerFast
  torch.manual_seed(0)
  if name.startswith('Bert'):
    tok = _wordpiece()
    tokenizer = fast(tokenizer_object=tok, pad_token='[PAD]', unk_token='[UNK]', cls_token='[CLS]', sep_token='[SEP]',
                     mask_token='[MASK]')
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
  elif name.startswith('GPT2'):
    tok = _bpe(['<|endoftext|>'])
    tokenizer = fast(tokenizer_object=tok, eos_token='<|endoftext|>', bos_token='<|endoftext|>')
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)
  else:
    tok = _bpe(['<unk>', '<s>', '</s>'], bos='<s>')
    tokenizer = fast(tokenizer_object=tok, bos_token='<s>', eos_token='</s>', unk_token='<unk>')
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
  if name.endswith('TokenClassification'):
    config.id2label, config.label2id = dict(enumerate(TAGS)), {t: i for i, t in enumerate(TAGS)}
  if name.endswith('SequenceClassification'):
    config.num_labels = 3
  model = getattr(transformers, name)(config).eval()
  return model, _save(model, tokenizer, directory)


@pytest.mark.slow  # ~8 s each: convert, load, export (the fast tier keeps the plain round trips above)
@pytest.mark.parametrize('name', TASK_CLASSES)
def test_task_head_classes_convert_with_their_logits_and_back_exactly(name, tmp_path):
  """QA (qa_outputs), token- and sequence-classification (classifier / score) heads: start/end, per-token or
  per-sequence logits within
  1e-4 of transformers' after from_hf, the workdir set up for lm.answer / lm.tag, and to_hf gives back every
  tensor of the file (the base model's pretraining heads, which these classes lack, are neither read nor written)."""
  import jax.numpy as jnp
  from safetensors.numpy import load_file

  from lm.hf import convert
  from lm.store import workdir
  model, directory = _task_model(name, tmp_path / 'hf')
  assert convert.from_hf(directory, str(tmp_path / 'wd'))['architecture'] == name
  run = workdir.load(str(tmp_path / 'wd'))
  ids = list(range(5, 25))
  batch = {'inputs': jnp.asarray([ids]), 'segment_ids': jnp.ones((1, len(ids)), jnp.int32),
           'token_types': jnp.zeros((1, len(ids)), jnp.int32)}
  ours = run.model.apply({'params': run.params}, batch)
  with torch.no_grad():
    theirs = model(torch.tensor([ids]))
  if name.endswith('QuestionAnswering'):
    assert run.config.data.task == 'qa'
    pairs = [(ours['start_logits'], theirs.start_logits), (ours['end_logits'], theirs.end_logits)]
  elif name.endswith('SequenceClassification'):  # before issue 18 its import failed validation (num_labels)
    assert run.config.data.task == 'classify'
    pairs = [(ours['class_logits'], theirs.logits)]
  else:
    assert run.config.data.task == 'tag' and run.config.data.tag_names == ','.join(TAGS)
    pairs = [(ours['tag_logits'], theirs.logits)]
  for mine, reference in pairs:
    np.testing.assert_allclose(np.asarray(mine[0]), reference[0].numpy(), atol=1e-4)
  from lm.inference import task_eval  # lm.answer's / lm.tag's library on the converted workdir
  if name.endswith('QuestionAnswering'):
    context = 'return obj, end = self.raw_decode(s, idx) ' * 20  # several windows of a 128-token model
    found = task_eval.answer(run, 'what does it return?', context)
    assert found.text == context[found.start:found.start + len(found.text)].strip()
  elif name.endswith('TokenClassification'):
    assert set(task_eval.tag(run, ['obj', 'end', 'return'])) <= set(TAGS)
  assert convert.to_hf(str(tmp_path / 'wd'), str(tmp_path / 'out'))['architecture'] == name
  original, exported = (load_file(os.path.join(d, 'model.safetensors')) for d in (directory, tmp_path / 'out'))
  assert set(exported) == set(original)
  for key, value in exported.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  exported_config = json.load(open(tmp_path / 'out' / 'config.json'))
  if name.endswith('TokenClassification'):
    assert exported_config['id2label'] == {str(i): t for i, t in enumerate(TAGS)}
