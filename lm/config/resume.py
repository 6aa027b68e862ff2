"""Saved configs and resumes: a run's config.json read back as a full config, the config of an init_from run, and
the keys a resumed run may not change."""
import json

import ml_collections

from lm.config import base
from lm.errors import ConfigError
from lm.store import paths

FREE_FORM = ('objectives', 'data.mixture')  # sub-dicts whose keys are names, checked on their own, not by the base
# Keys a run cannot change on resume: they fix parameter / optimizer-state shapes, the tokenizer or the data order.
RESUME_FIXED = ('model', 'data.task', 'data.text_b_key', 'data.label_key', 'data.source', 'data.path',
                'data.text_key', 'data.source_key', 'data.target_key', 'data.code_packages', 'data.code_target',
                'data.tfds_name', 'data.train_split',
                'data.eval_split', 'data.eval_fraction', 'data.max_documents', 'data.packing', 'data.tokenizer',
                'data.tokenizer_type', 'data.tokenizer_sentences', 'data.tokenizer_sample_bytes', 'seq_len',
                'batch_size', 'seed', 'optimizer.name')
# Model keys that choose how the step computes, not what: a resume may switch them (e.g. a workdir saved with
# projection_impl='matmul' resumes under the 'auto' default; remat on to fit a bigger accelerator).
IMPLEMENTATION_KEYS = ('attention_impl', 'attention_block', 'projection_impl', 'remat')


def _merge(target: ml_collections.ConfigDict, saved: dict, prefix: str = '') -> None:
  for key, value in saved.items():
    if key not in target:
      continue  # a key an older version wrote
    if isinstance(target[key], ml_collections.ConfigDict) and prefix + key not in FREE_FORM:
      _merge(target[key], value, f'{prefix}{key}.')
    else:
      target[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A run's config.json as a full config: the base config with the saved values (keys added since get defaults)."""
  config = base.get_config()
  _merge(config, saved)
  return config


def init_from_config(init_from: str) -> ml_collections.ConfigDict:
  """The config of the run `init_from` names; ConfigError if it is not a workdir with checkpoints."""
  paths.check_usable(init_from, 'init_from', write=False)
  path = paths.path(init_from) / 'config.json'
  if not path.is_file():
    raise ConfigError(f'init_from={init_from!r}: no config.json there; give the workdir of a pretraining run')
  if not (paths.path(init_from) / 'checkpoints').is_dir():
    raise ConfigError(f'init_from={init_from!r}: no checkpoints/ folder there; train that run first')
  return from_saved(json.loads(path.read_text()))


def _flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def check_resume_compatible(config, saved: dict) -> None:
  """Raises ConfigError naming the first key under RESUME_FIXED whose value differs from the saved config.json (keys
  the saved run predates are not compared)."""
  old, new = _flatten(saved), _flatten(json.loads(json.dumps(config.to_dict())))  # as config.json stores it
  free = {f'model.{k}' for k in IMPLEMENTATION_KEYS}
  for key in sorted(new):
    fixed = key not in free and any(key == k or key.startswith(k + '.') for k in RESUME_FIXED)
    if fixed and key in old and old[key] != new[key]:  # a key newer than the saved run: its default held
      raise ConfigError(f'{key}={new[key]!r} differs from {old.get(key)!r} in the run being resumed; set it back '
                        'or use a new --workdir')
  if (old.get('optimizer.grad_clip_norm', 0) > 0) != (config.optimizer.grad_clip_norm > 0):
    raise ConfigError('optimizer.grad_clip_norm: switching clipping on/off changes the optimizer state of the run '
                      'being resumed; keep it as it was or use a new --workdir')
