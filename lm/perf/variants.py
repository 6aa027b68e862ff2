"""The configs `lm.bench --compare key=value[,value...]` measures against each other: one per value (several
--compare flags give every combination), each a copy of the command's config with that key set."""
import ast
import itertools
import json

import ml_collections

from lm.errors import UsageError


def _typed(config: ml_collections.ConfigDict, key: str, text: str):
  """`text` as the type the config's key has (bool from true/false/1/0, int, float, str; other types from a Python
  literal); UsageError naming --compare when it does not convert."""
  current = _get(config, key)
  try:
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(text)
      return text.lower() in ('true', '1')
    if isinstance(current, int | float | str):
      return type(current)(text)
    return ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise UsageError(f'--compare {key}={text}: not a {type(current).__name__} like the config\'s value '
                     f'{current!r}') from e


def _get(config: ml_collections.ConfigDict, key: str):
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UsageError(f'--compare {key}=...: the config has no key {key!r}; see lm/config/base.py for the keys')
    node = node[part]
  return node


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
  *parents, last = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[last] = value


def parse(specs: list[str], config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """{label 'key=value[ key2=value2]': config} for every combination of the --compare specs, in the order given
  (the first is the reference of the ratios). UsageError, one line, for a spec without '=', an unknown key or a
  value of the wrong type."""
  choices = []
  for spec in specs:
    key, sep, values = spec.partition('=')
    if not sep or not key or not values:
      raise UsageError(f'--compare={spec!r}: write key=value[,value...], e.g. model.attention_impl=einsum,xla')
    choices.append([(key, _typed(config, key, value)) for value in values.split(',')])
  out = {}
  for combination in itertools.product(*choices):
    variant = config.copy_and_resolve_references()
    for key, value in combination:
      _set(variant, key, value)
    out[' '.join(f'{key}={value}' for key, value in combination)] = variant
  return out


def batch_key(config: ml_collections.ConfigDict) -> str:
  """What the input batch depends on: variants with the same key share one real batch (model and optimizer keys
  other than the vocabulary and the family change no input)."""
  d = config.to_dict()
  model, _ = d.pop('model'), d.pop('optimizer', None)
  d['model'] = {k: model.get(k) for k in ('type', 'vocab_size', 'max_len')}
  return json.dumps(d, sort_keys=True, default=str)
