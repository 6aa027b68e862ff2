"""init_from: a fine-tune inherits the architecture of the run it starts from, as `from_pretrained` does.

  changed = inherit.adopt_pretrained(config, explicit={'optimizer.learning_rate', ...})

Every model key that describes the pretrained network (its shapes, its layout and the computation its weights were
trained for: type, sizes, norm, activation, position, vocabulary, scan_layers, ...) is taken from the init_from run's
config.json, and so is the tokenizer's sentinel layout; the fine-tuning config supplies only what a fine-tune
chooses (FINETUNE_MODEL_KEYS: the task head, dropout, dtypes, attention kernel, rematerialisation) plus its task,
data and optimizer keys. The tokenizer itself is init_from's (lm/data/tokenizer.given_path). A key given on the
command line (`--config.model.d_ff=...`, a sweep's override) that contradicts the pretrained run is an error naming
it; a value the config file set is replaced and reported.
"""
from collections.abc import Iterable

import ml_collections

from lm.config import resume
from lm.errors import ConfigError

# Model keys a fine-tune chooses itself: they change neither a parameter of the pretrained network nor what it
# computes at inference (lora_* are the adapters a fine-tune adds).
FINETUNE_MODEL_KEYS = ('num_labels', 'task_head', 'dropout', 'dtype', 'param_dtype') + resume.IMPLEMENTATION_KEYS
# Data keys that describe the pretrained run's tokenizer.
TOKENIZER_DATA_KEYS = ('num_sentinels',)


def architecture_keys(config: ml_collections.ConfigDict) -> list[str]:
  """The dotted keys init_from takes from the pretrained run: 'model.<key>' for every model key that is not a
  fine-tuning choice, and the tokenizer's data keys."""
  model = [f'model.{k}' for k in sorted(config.model.keys())
           if k not in FINETUNE_MODEL_KEYS and not k.startswith('lora_')]
  return model + [f'data.{k}' for k in TOKENIZER_DATA_KEYS]


def value(config: ml_collections.ConfigDict, dotted: str):
  """config['model']['d_ff'] for 'model.d_ff'."""
  section, key = dotted.split('.')
  return config[section][key]


def adopt_pretrained(config: ml_collections.ConfigDict, explicit: Iterable[str] = ()) -> dict[str, tuple]:
  """Sets every architecture key of `config` to init_from's value (nothing when init_from is ''); returns
  {dotted key: (value the config had, the pretrained value)} of what changed.

  Raises ConfigError when a key in `explicit` (the command line's overrides) contradicts the pretrained run, or
  when init_from is not a run with a config.json and checkpoints.
  """
  if not config.init_from:
    return {}
  pretrained = resume.init_from_config(config.init_from)
  explicit, changed = set(explicit), {}
  for dotted in architecture_keys(config):
    ours, theirs = value(config, dotted), value(pretrained, dotted)
    if ours == theirs:
      continue
    if dotted in explicit:
      raise ConfigError(f'{dotted}={ours!r} contradicts init_from={config.init_from}, whose {dotted} is '
                        f'{theirs!r}: a fine-tune keeps the pretrained architecture; drop --config.{dotted}')
    section, key = dotted.split('.')
    config[section][key] = theirs
    changed[dotted] = (ours, theirs)
  return changed


def describe(changed: dict[str, tuple], init_from: str) -> str:
  """The one line a run prints about what adopt_pretrained took from init_from."""
  items = ', '.join(f'{k}={new!r} (config: {old!r})' for k, (old, new) in changed.items())
  return f'init_from {init_from}: architecture taken from that run: {items}'
