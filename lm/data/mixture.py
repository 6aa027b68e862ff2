"""Pretraining on several sources at once, sampled by weight: `data.mixture`.

  c.data.mixture.web = ml_collections.ConfigDict({'weight': 0.7, 'source': 'parquet', 'path': 'gs://b/web/*.parquet'})
  c.data.mixture.code = ml_collections.ConfigDict({'weight': 0.3, 'source': 'jsonl', 'path': '/data/code/*.jsonl',
                                                   'store': '/data/stores/code'})  # prepared ahead by lm.prepare

Each entry is a weight plus the data keys (SOURCE_KEYS) in which that source differs from config.data. Every source
gets its own token store (its data.store, checked against its data keys, else a cache entry), all made with one
tokenizer: data.tokenizer, else the one trained on the heaviest source
(ties: the first name in sorted order). Training rows are drawn from the sources in proportion to their weights by
grain's deterministic mix (each source shuffled and repeated on its own), so a step's global batch is still a
function of (seed, step); evaluation reports every source (eval/<name>/...) and their pool (eval/...).
"""
import dataclasses
from collections.abc import Sequence

import ml_collections

from lm.errors import ConfigError

# The data keys a mixture entry may set (what says where a source's documents are and how they are split).
SOURCE_KEYS = ('source', 'path', 'text_key', 'tfds_name', 'tfds_data_dir', 'train_split', 'eval_split',
               'eval_fraction', 'max_documents', 'store', 'store_shard_documents')


@dataclasses.dataclass(frozen=True)
class Component:
  """One source of a mixture: its name, its weight, and the full config that reads it."""
  name: str
  weight: float
  config: ml_collections.ConfigDict


def components(config: ml_collections.ConfigDict) -> list[Component]:
  """The sources of data.mixture in sorted name order (empty without a mixture); ConfigError on a bad entry."""
  out = []
  for name in sorted(config.data.mixture):
    entry = config.data.mixture[name]
    if not name.isidentifier() or not isinstance(entry, ml_collections.ConfigDict):
      raise ConfigError(f'data.mixture.{name}: each entry is a name (letters, digits, _) mapping to a sub-config '
                        "with a weight and data keys, e.g. {'weight': 0.3, 'source': 'jsonl', 'path': 'x.jsonl'}")
    weight = entry.get('weight', None)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
      raise ConfigError(f'data.mixture.{name}.weight={weight!r}: give each source a weight > 0')
    unknown = sorted(set(entry) - set(SOURCE_KEYS) - {'weight'})
    if unknown:
      raise ConfigError(f'data.mixture.{name}: {unknown} cannot differ per source; a mixture entry sets only '
                        f'weight and {list(SOURCE_KEYS)}')
    component = config.copy_and_resolve_references()
    with component.unlocked():
      component.data.mixture = ml_collections.ConfigDict()
      for key in SOURCE_KEYS:
        if key in entry:
          component.data[key] = entry[key]
    out.append(Component(name, float(weight), component))
  return out


def tokenizer_source(parts: list[Component]) -> Component:
  """The source the mixture's tokenizer is trained on when data.tokenizer is empty: the heaviest."""
  return max(parts, key=lambda c: (c.weight, [-ord(ch) for ch in c.name]))


class MixedRows(Sequence):
  """The rows of every source of a mixture, with their names and weights (what train_iterator mixes)."""

  def __init__(self, names: list[str], weights: list[float], parts: list):
    self.names, self.weights, self.parts = names, weights, parts

  def __len__(self) -> int:
    return sum(len(part) for part in self.parts)

  def __getitem__(self, i):
    for part in self.parts:
      if i < len(part):
        return part[i]
      i -= len(part)
    raise IndexError(i)
