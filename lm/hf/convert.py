"""Hugging Face checkpoints in and out: an HF directory (config.json, safetensors, tokenizer files) -> an lm workdir,
and an lm workdir -> an HF directory that transformers' Auto classes load. lm.convert is the command."""
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lm.config import base, validation
from lm.data import hf_tokenizer
from lm.errors import ConfigError, UsageError
from lm.hf import architectures, heads, peft_export, safetensors_io
from lm.models import lora, registry
from lm.parallel import sharding
from lm.store import checkpoint, workdir as workdir_lib


def _hf_config(hf_dir: str) -> tuple[dict, str]:
  """(HF config.json, architecture name); ConfigError for a missing file or an architecture lm does not map."""
  path = os.path.join(hf_dir, 'config.json')
  if not os.path.isfile(path):
    raise UsageError(f'--hf_dir={hf_dir}: no config.json there; give a Hugging Face model directory')
  with open(path) as f:
    hf = json.load(f)
  arch = (hf.get('architectures') or [''])[0]
  if arch not in architectures.ARCHITECTURES:
    raise ConfigError(f'{path}: architecture {arch!r} is not supported; lm converts '
                      f'{", ".join(architectures.ARCHITECTURES)}')
  return hf, arch


def lm_config(hf: dict, arch: str, dtype: str):
  """The full lm config of an HF model (base config, the layout's family preset, the model keys from the HF
  config)."""
  layout = architectures.ARCHITECTURES[arch].layout
  config = layout.preset(base.get_config())
  config.model.update(layout.model_keys(hf))
  config.model.update(dropout=0.0, dtype=dtype, param_dtype=dtype, scan_layers=False)
  config.seq_len = min(config.seq_len, config.model.max_len)
  config.data.max_predictions_per_seq = min(config.data.max_predictions_per_seq, config.seq_len)
  _set_task(config, hf)
  return config


def _set_task(config, hf: dict) -> None:
  """The data.task and objective of a converted task class, so its workdir serves lm.answer / lm.tag and fine-tunes
  as that task (the tag names of a token classifier from its id2label)."""
  head = config.model.task_head
  if head == 'span':
    base.qa(config)
    d = config.data  # windows that fit a short max_len: the question in half, half the rest as overlap
    d.max_query_len = min(d.max_query_len, config.seq_len // 2)
    d.doc_stride = min(d.doc_stride, (config.seq_len - d.max_query_len - 3) // 2)
  elif head == 'token' and config.model.num_labels:
    base.tag(config)
    config.data.tag_names = heads.tag_names(hf)
  elif config.model.num_labels:
    base.classify(config)


def map_tensors(tensors: dict, rules: list, ignored: tuple, shapes: dict, where: str) -> tuple[dict, list]:
  """({lm path: array}, lm paths left at their fresh init): every tensor checked against the rules and shapes."""
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
  hf, arch = _hf_config(hf_dir)
  config = lm_config(hf, arch, dtype)
  validation.validate(config)
  tokenizer = hf_tokenizer.HFTokenizer.from_hf_dir(hf_dir)
  tensors = safetensors_io.read_tensors(hf_dir)
  model = registry.build(config.model)
  params = nn.unbox(jax.jit(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config)))()['params'])
  flat = checkpoint.flatten(params)
  architecture = architectures.ARCHITECTURES[arch]
  mapped, fresh = map_tensors(tensors, architecture.layout.tensor_rules(config.model, list(tensors)),
                              architecture.ignored, {k: v.shape for k, v in flat.items()}, hf_dir)
  if heads.task_head(arch):  # the base model's pretraining heads are not in a task class: kept at their init
    fresh += sorted(k for k in flat if k not in mapped and k.startswith(heads.pretraining_heads(config.model)))
  missing = sorted(set(flat) - set(mapped) - set(fresh))
  if missing:
    raise ConfigError(f'{hf_dir}: no tensor maps to {missing[0]}; lm cannot convert this {arch}')
  params = checkpoint.merge_params(params, {k: jnp.asarray(v, dtype) for k, v in mapped.items()})
  _write_workdir(workdir, config, tokenizer, hf_dir, params)
  return {'architecture': arch, 'tensors': len(tensors), 'parameters': int(sum(v.size for v in flat.values())),
          'fresh': fresh, 'workdir': workdir}


def _write_workdir(workdir: str, config, tokenizer, hf_dir: str, params) -> None:
  """config.json, the tokenizer and checkpoints/0/state (the parameters alone) in `workdir`."""
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise UsageError(f'--workdir={workdir}: already has checkpoints; give a new directory')
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  tokenizer.save_in(workdir)
  tokenizer.copy_special_files(hf_dir, workdir)
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({'params': params})))
  manager.wait_until_finished()
  manager.close()


def _lora_params(run, workdir: str, merge_lora: bool):
  """The parameters to export: a LoRA run's adapters folded into its kernels (`merge_lora`), else as they are;
  ConfigError for a LoRA run without merge_lora (its adapters have no place in the plain HF classes)."""
  if not run.config.model.lora_rank:
    return run.params
  if not merge_lora:
    raise ConfigError(f'--workdir={workdir} is a LoRA run (model.lora_rank={run.config.model.lora_rank}): export '
                      'its adapters with `lm.convert to_peft`, or merge them into the weights with --merge_lora')
  return lora.merged(run.params, run.config.model)


def to_hf(workdir: str, hf_dir: str, step: int | None = None, merge_lora: bool = False) -> dict:
  """Writes an lm workdir as an HF directory (config.json, model.safetensors, tokenizer); returns a summary. A LoRA
  run needs `merge_lora` (W + alpha/r·A·B, the base model's classes) or `to_peft`."""
  run = workdir_lib.load(workdir, step)
  params = _lora_params(run, workdir, merge_lora)
  arch = architectures.export_architecture(run.config.model)
  layout = architectures.ARCHITECTURES[arch].layout
  hf_cfg = {**layout.hf_config(run.config.model), 'torch_dtype': 'float32',
            **heads.label_config(run.config.model, run.config.data.tag_names)}
  hf_cfg.update(layout.token_ids(run.tokenizer) if hasattr(layout, 'token_ids') else _special_ids(run.tokenizer))
  flat = _host_arrays(params)
  if heads.task_head(arch):  # a task class has no place for the base model's pretraining heads
    flat = {k: v for k, v in flat.items() if not k.startswith(heads.pretraining_heads(run.config.model))}
  tensors = _export_tensors(flat, layout.tensor_rules(run.config.model), workdir)
  os.makedirs(hf_dir, exist_ok=True)
  with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
    json.dump(hf_cfg, f, indent=2, sort_keys=True)
  safetensors_io.write_tensors(tensors, hf_dir)
  _export_tokenizer(run.tokenizer, workdir, hf_dir)
  return {'architecture': arch, 'tensors': len(tensors), 'hf_dir': hf_dir, 'step': run.step}


def to_peft(workdir: str, out_dir: str, step: int | None = None) -> dict:
  """Writes a LoRA run's adapters as a PEFT adapter directory (adapter_model.safetensors, adapter_config.json) for
  the HF export of its init_from base (hf/peft_export.py); returns a summary with the adapter / model size ratio."""
  run = workdir_lib.load(workdir, step)
  m = run.config.model
  if not m.lora_rank:
    raise ConfigError(f'--workdir={workdir} has no LoRA adapters (model.lora_rank=0); export it with to_hf')
  arch = architectures.export_architecture(m)
  if heads.task_head(arch):
    raise ConfigError(f'to_peft exports the adapters of a language model; {workdir} has a task head ({arch}): '
                      'use to_hf --merge_lora')
  layout = architectures.ARCHITECTURES[arch].layout
  flat = _host_arrays(run.params)
  tensors, adapter_config = peft_export.export(flat, layout.tensor_rules(m), m, getattr(layout, 'CONV1D', False),
                                               run.config.init_from)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, peft_export.CONFIG_FILE), 'w') as f:
    json.dump(adapter_config, f, indent=2)
  safetensors_io.write_tensors(tensors, out_dir, peft_export.TENSORS_FILE)
  size = int(sum(v.size for k, v in flat.items() if lora.is_adapter(k)))
  return {'architecture': arch, 'modules': len(adapter_config['target_modules']), 'adapter_parameters': size,
          'adapter_fraction': size / sum(v.size for v in flat.values()), 'out_dir': out_dir, 'step': run.step}


def _host_arrays(params) -> dict:
  """{'block_0/attn/query/kernel': float32 numpy array} of a run's parameters, scanned blocks unstacked."""
  return _unstacked({k: np.asarray(sharding.to_host(v), np.float32) for k, v in checkpoint.flatten(params).items()})


def _special_ids(tokenizer) -> dict:
  """The config.json ids generation reads (bos / eos / pad), those the tokenizer has."""
  ids = {'bos_token_id': tokenizer.bos_id, 'eos_token_id': tokenizer.eos_id, 'pad_token_id': tokenizer.pad_id}
  return {k: int(v) for k, v in ids.items() if v is not None and v >= 0}


def _unstacked(flat: dict) -> dict:
  """Scanned blocks ('blocks/attn/...' or 'encoder/blocks/...', a leading layer axis) as 'block_<i>/attn/...',
  the layout the rules name."""
  out = {}
  for name, array in flat.items():
    prefix, found, rest = name.partition('blocks/')
    if found and (not prefix or prefix.endswith('/')):
      for i, layer in enumerate(array):
        out[f'{prefix}block_{i}/{rest}'] = layer
    else:
      out[name] = array
  return out


def _export_tensors(flat: dict, rules: list, workdir: str) -> dict:
  """{HF name: array}; ConfigError if a rule's parameter is missing or a parameter has no HF tensor."""
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
  if isinstance(tokenizer, hf_tokenizer.HFTokenizer):
    tokenizer.save_in(hf_dir)
    tokenizer.copy_special_files(workdir, hf_dir)
    return
  shutil.copy(os.path.join(workdir, 'tokenizer.model'), os.path.join(hf_dir, 'tokenizer.model'))
  with open(os.path.join(hf_dir, hf_tokenizer.CONFIG_FILE), 'w') as f:
    json.dump({'tokenizer_class': 'LlamaTokenizer', 'add_bos_token': False, 'add_eos_token': False,
               'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>'}, f, indent=2)
