"""Reading and writing Hugging Face weight files: safetensors only, never pickle.

`read_tensors(hf_dir)` takes `model.safetensors`, or the shards an index (`model.safetensors.index.json`) names; a
shard name must be a plain file name inside the directory. A directory with only `pytorch_model.bin` (pickle) is
refused with the command that converts it.
"""
import json
import os

import numpy as np

from lm.errors import ConfigError

SINGLE = 'model.safetensors'
INDEX = 'model.safetensors.index.json'
_PICKLES = ('pytorch_model.bin', 'pytorch_model.bin.index.json', 'model.bin')


def _shard_path(hf_dir: str, name: str) -> str:
  """The path of an index's shard; ConfigError unless it is a safetensors file right inside hf_dir."""
  if os.path.basename(name) != name or name in ('.', '..') or not name.endswith('.safetensors'):
    raise ConfigError(f'{os.path.join(hf_dir, INDEX)}: shard name {name!r} is not a .safetensors file name in '
                      'that directory; refusing to read outside it')
  path = os.path.join(hf_dir, name)
  if not os.path.isfile(path):
    raise ConfigError(f'{os.path.join(hf_dir, INDEX)} names {name}, which is not there; copy every shard')
  return path


def weight_files(hf_dir: str) -> list[str]:
  """The safetensors files holding the model's tensors."""
  if os.path.isfile(os.path.join(hf_dir, SINGLE)):
    return [os.path.join(hf_dir, SINGLE)]
  if os.path.isfile(os.path.join(hf_dir, INDEX)):
    with open(os.path.join(hf_dir, INDEX)) as f:
      weight_map = json.load(f).get('weight_map', {})
    if not isinstance(weight_map, dict) or not weight_map:
      raise ConfigError(f'{os.path.join(hf_dir, INDEX)}: no weight_map; not a safetensors index')
    return [_shard_path(hf_dir, name) for name in sorted(set(weight_map.values()))]
  pickles = [name for name in _PICKLES if os.path.isfile(os.path.join(hf_dir, name))]
  if pickles:
    raise ConfigError(f'--hf_dir={hf_dir}: only {pickles[0]} (a pickle, which lm never loads); convert it to '
                      'safetensors first, e.g. AutoModel.from_pretrained(DIR).save_pretrained(DIR, '
                      'safe_serialization=True) on a machine you trust')
  raise ConfigError(f'--hf_dir={hf_dir}: no {SINGLE} or {INDEX} there')


def read_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """{name: numpy array} of every tensor in the directory's safetensors files (bfloat16 comes back as float32)."""
  from safetensors import safe_open
  out = {}
  for path in weight_files(hf_dir):
    with safe_open(path, framework='flax' if _has_bf16(path) else 'np') as f:  # numpy has no bfloat16; jax has
      for name in f.keys():
        tensor = f.get_tensor(name)
        out[name] = np.asarray(tensor.astype(np.float32) if str(tensor.dtype) == 'bfloat16' else tensor)
  return out


def _has_bf16(path: str) -> bool:
  """True when a file stores bfloat16 tensors (read through safetensors' flax loader, then made float32)."""
  with open(path, 'rb') as f:
    header = json.loads(f.read(int.from_bytes(f.read(8), 'little')))
  return any(isinstance(v, dict) and v.get('dtype') == 'BF16' for v in header.values())


def write_tensors(tensors: dict[str, np.ndarray], hf_dir: str, name: str = SINGLE) -> str:
  """hf_dir/<name> (model.safetensors) with the tensors (contiguous numpy arrays)."""
  from safetensors.numpy import save_file
  path = os.path.join(hf_dir, name)
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata={'format': 'pt'})
  return path
