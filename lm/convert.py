"""Import and export Hugging Face checkpoints (GPT-2, BERT, Llama family) as lm workdirs, from local directories.

  python -m lm.convert from_hf --hf_dir=DIR --workdir=OUT [--dtype=bfloat16]
  python -m lm.convert to_hf --workdir=DIR --hf_dir=OUT

from_hf reads DIR's config.json, model.safetensors (or the shards of model.safetensors.index.json; never a pickle)
and tokenizer files, and writes a normal workdir: config.json, tokenizer.json + tokenizer_config.json,
checkpoints/0 (the parameters). lm.generate, lm.evaluate and `lm.main --config.init_from=OUT` work on it. Every HF
tensor must map to an lm parameter of the same shape (else one error naming it); heads a checkpoint may lack (BERT's
pooler, MLM and NSP heads) keep a fresh init and are listed. to_hf writes config.json, model.safetensors and the
tokenizer so that transformers' Auto classes load it. Mappings: lm/hf/architectures.py.
"""
import json
import os

from absl import app, flags

from lm import cli

_HF_DIR = flags.DEFINE_string('hf_dir', None, 'Hugging Face model directory (read by from_hf, written by to_hf).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'lm workdir (written by from_hf, read by to_hf).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'from_hf: parameter and compute dtype.')
_STEP = flags.DEFINE_integer('step', None, 'to_hf: checkpoint step (default: the latest).')


def _hf_config(hf_dir: str) -> tuple[dict, str]:
  """(HF config.json, architecture name); ConfigError for a missing file or an architecture lm does not map."""
  from lm.config import ConfigError
  from lm.hf import architectures
  path = os.path.join(hf_dir, 'config.json')
  if not os.path.isfile(path):
    raise ConfigError(f'--hf_dir={hf_dir}: no config.json there; give a Hugging Face model directory')
  with open(path) as f:
    hf = json.load(f)
  arch = (hf.get('architectures') or [''])[0]
  if arch not in architectures.ARCHITECTURES:
    raise ConfigError(f'{path}: architecture {arch!r} is not supported; lm converts '
                      f'{", ".join(architectures.ARCHITECTURES)}')
  return hf, arch


def lm_config(hf: dict, arch: str, dtype: str):
  """The full lm config of an HF model (base config, family preset, the model keys from the HF config)."""
  from configs import base
  from lm.hf import architectures
  family, model_fn = architectures.ARCHITECTURES[arch][:2]
  config = base.get_config()
  if family == 'bert':
    base.bert(config)
  elif family == 'llama':
    base.llama(config)
  config.model.update(model_fn(hf))
  config.model.update(dropout=0.0, dtype=dtype, param_dtype=dtype, scan_layers=False)
  config.seq_len = min(config.seq_len, config.model.max_len)
  config.data.max_predictions_per_seq = min(config.data.max_predictions_per_seq, config.seq_len)
  return config


def _rules(config, arch: str, names) -> list:
  from lm.hf import architectures
  rules_fn = architectures.ARCHITECTURES[arch][3]
  family = architectures.ARCHITECTURES[arch][0]
  if family == 'bert':
    return rules_fn(config.model, 'bert.' if any(n.startswith('bert.') for n in names) else '')
  if family == 'gpt2':
    return rules_fn(config.model, 'transformer.' if any(n.startswith('transformer.') for n in names) else '')
  return rules_fn(config.model)


def map_tensors(tensors: dict, rules: list, ignored: tuple, shapes: dict, where: str) -> tuple[dict, list]:
  """({lm path: array}, lm paths left at their fresh init): every tensor checked against the rules and shapes."""
  from lm.config import ConfigError
  out, fresh, used = {}, [], set()
  for rule in rules:
    if rule.hf not in tensors:
      if rule.required:
        raise ConfigError(f'{where}: tensor {rule.hf} is missing (needed for {rule.ours[0]}); an incomplete '
                          'checkpoint or another architecture')
      fresh += list(rule.ours)
      continue
    used.add(rule.hf)
    for path, array in zip(rule.ours, rule.to_ours(tensors[rule.hf])):
      if tuple(array.shape) != tuple(shapes[path]):
        raise ConfigError(f'{where}: tensor {rule.hf} has shape {tuple(tensors[rule.hf].shape)}, which gives '
                          f'{tuple(array.shape)} for {path} but the model from config.json needs {tuple(shapes[path])}')
      out[path] = array
  extra = sorted(n for n in tensors if n not in used and not any(part in n for part in ignored))
  if extra:
    raise ConfigError(f'{where}: unexpected tensor {extra[0]} ({len(extra)} in all) that lm does not map; another '
                      'architecture or a modified checkpoint')
  return out, fresh


def from_hf(hf_dir: str, workdir: str, dtype: str = 'float32') -> dict:
  """Converts an HF directory into an lm workdir; returns a summary."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from lm import checkpoint, config as config_lib, models
  from lm.data import hf_tokenizer
  from lm.hf import architectures, safetensors_io
  hf, arch = _hf_config(hf_dir)
  config = lm_config(hf, arch, dtype)
  config_lib.validate(config)
  tokenizer = hf_tokenizer.HFTokenizer.from_hf_dir(hf_dir)
  tensors = safetensors_io.read_tensors(hf_dir)
  model = models.build(config.model)
  params = nn.unbox(jax.jit(lambda: model.init(jax.random.PRNGKey(0), models.example_batch(config)))()['params'])
  flat = checkpoint.flatten(params)
  mapped, fresh = map_tensors(tensors, _rules(config, arch, tensors), architectures.ARCHITECTURES[arch][4],
                              {k: v.shape for k, v in flat.items()}, hf_dir)
  missing = sorted(set(flat) - set(mapped) - set(fresh))
  if missing:
    raise config_lib.ConfigError(f'{hf_dir}: no tensor maps to {missing[0]}; lm cannot convert this {arch}')
  params = checkpoint.merge_params(params, {k: jnp.asarray(v, dtype) for k, v in mapped.items()})
  _write_workdir(workdir, config, tokenizer, hf_dir, params)
  return {'architecture': arch, 'tensors': len(tensors), 'parameters': int(sum(v.size for v in flat.values())),
          'fresh': fresh, 'workdir': workdir}


def _write_workdir(workdir: str, config, tokenizer, hf_dir: str, params) -> None:
  """config.json, the tokenizer and checkpoints/0/state (the parameters alone) in `workdir`."""
  import orbax.checkpoint as ocp
  from lm.config import ConfigError
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ConfigError(f'--workdir={workdir}: already has checkpoints; give a new directory')
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  tokenizer.save_in(workdir)
  tokenizer.copy_special_files(hf_dir, workdir)
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({'params': params})))
  manager.wait_until_finished()
  manager.close()


def to_hf(workdir: str, hf_dir: str, step: int | None = None) -> dict:
  """Writes an lm workdir as an HF directory (config.json, model.safetensors, tokenizer); returns a summary."""
  import numpy as np
  from lm import checkpoint, sharding, workdir as workdir_lib
  from lm.hf import architectures, safetensors_io
  run = workdir_lib.load(workdir, step)
  family = architectures.family_of(run.config.model)
  arch = {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM'}.get(family) or (
      'BertForSequenceClassification' if run.config.model.num_labels else 'BertForPreTraining')
  hf_cfg = {**architectures.ARCHITECTURES[arch][2](run.config.model), 'torch_dtype': 'float32'}
  flat = _unstacked({k: np.asarray(sharding.to_host(v), np.float32)
                     for k, v in checkpoint.flatten(run.params).items()})
  rules = _rules(run.config, arch, {'bert': ['bert.'], 'gpt2': ['transformer.']}.get(family, []))
  if arch == 'BertForSequenceClassification':  # that class has no MLM / NSP heads
    rules = [r for r in rules if not r.hf.startswith('cls.')]
  tensors = _export_tensors(flat, rules, workdir)
  os.makedirs(hf_dir, exist_ok=True)
  with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
    json.dump(hf_cfg, f, indent=2, sort_keys=True)
  safetensors_io.write_tensors(tensors, hf_dir)
  _export_tokenizer(run.tokenizer, workdir, hf_dir)
  return {'architecture': arch, 'tensors': len(tensors), 'hf_dir': hf_dir, 'step': run.step}


def _unstacked(flat: dict) -> dict:
  """Scanned blocks ('blocks/attn/...', a leading layer axis) as 'block_<i>/attn/...', the layout the rules name."""
  out = {}
  for name, array in flat.items():
    if name.startswith('blocks/'):
      for i, layer in enumerate(array):
        out[f'block_{i}/{name[len("blocks/"):]}'] = layer
    else:
      out[name] = array
  return out


def _export_tensors(flat: dict, rules: list, workdir: str) -> dict:
  """{HF name: array}; ConfigError if a rule's parameter is missing or a parameter has no HF tensor."""
  from lm.config import ConfigError
  tensors, used = {}, set()
  for rule in rules:
    missing = [p for p in rule.ours if p not in flat]
    if missing and rule.required:
      raise ConfigError(f'--workdir={workdir}: parameter {missing[0]} (for {rule.hf}) is not in the checkpoint')
    if not missing:
      tensors[rule.hf] = rule.to_hf(tuple(flat[p] for p in rule.ours))
      used.update(rule.ours)
  unused = sorted(set(flat) - used)
  if unused:
    raise ConfigError(f'--workdir={workdir}: parameter {unused[0]} ({len(unused)} in all) has no place in the '
                      'exported architecture; it would be lost')
  return tensors


def _export_tokenizer(tokenizer, workdir: str, hf_dir: str) -> None:
  """The workdir's tokenizer for transformers: tokenizer.json (+ config) when it came from HF; else lm's
  SentencePiece tokenizer.model with a tokenizer_config.json naming its special tokens."""
  import shutil
  from lm.data import hf_tokenizer
  if isinstance(tokenizer, hf_tokenizer.HFTokenizer):
    tokenizer.save_in(hf_dir)
    tokenizer.copy_special_files(workdir, hf_dir)
    return
  shutil.copy(os.path.join(workdir, 'tokenizer.model'), os.path.join(hf_dir, 'tokenizer.model'))
  with open(os.path.join(hf_dir, hf_tokenizer.CONFIG_FILE), 'w') as f:
    json.dump({'tokenizer_class': 'LlamaTokenizer', 'add_bos_token': False, 'add_eos_token': False,
               'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>'}, f, indent=2)


def main(argv):
  if len(argv) != 2 or argv[1] not in ('from_hf', 'to_hf'):
    raise app.UsageError('usage: lm.convert from_hf --hf_dir=DIR --workdir=OUT | to_hf --workdir=DIR --hf_dir=OUT')
  if not _HF_DIR.value or not _WORKDIR.value:
    raise app.UsageError('give --hf_dir and --workdir')
  cli.quiet_logs()
  from lm.config import ConfigError
  from lm.data.errors import DataError
  try:
    if argv[1] == 'from_hf':
      summary = from_hf(_HF_DIR.value, _WORKDIR.value, _DTYPE.value)
    else:
      summary = to_hf(_WORKDIR.value, _HF_DIR.value, _STEP.value)
  except (ConfigError, DataError) as e:
    cli.fail(e)
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
