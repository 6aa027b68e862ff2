"""Building a token store (lm/data/store.py) from a config: tokenizer, shards in parallel, manifest.

  built = store_builder.build(config, workers=4)                   # one machine, 4 processes
  store_builder.build(config, num_hosts=64, host_index=h)                  # host h of 64 does its share

Each process (a local worker, or a host) writes the shards k with k % num_hosts == host_index that are not yet
committed; whoever finds every shard committed writes the manifest. No coordinator: a rerun skips what is done,
and the result is the same bytes for any worker or host count (see store.py).
"""
import dataclasses
import hashlib
import multiprocessing
import time

import ml_collections
from absl import logging
from etils import epath

from lm.data import cache, mixture, sources, store, tokenizer as tokenizer_lib
from lm.store import paths

_SPLITS = ('train', 'eval')


def plans(config: ml_collections.ConfigDict, splits: tuple[str, ...] = _SPLITS) -> list[store.SplitPlan]:
  """The documents of each split and their shard size."""
  return [store.SplitPlan(split, sources.get_documents(config.data, split), config.data.store_shard_documents)
          for split in splits]


def store_root(config: ml_collections.ConfigDict, split_plans: list[store.SplitPlan],
               tokenizer: tokenizer_lib.Tokenizer) -> epath.Path:
  """data.store, else a cache entry keyed by both splits' documents, the tokenizer and the shard size."""
  if config.data.store:
    return paths.path(config.data.store)
  parts = [store.FORMAT, tokenizer.fingerprint] + [f'{p.split}:{p.documents.fingerprint}:{p.shard_documents}'
                                                   for p in split_plans]
  key = hashlib.sha256('/'.join(parts).encode()).hexdigest()
  return paths.path(cache.cache_dir(config.data) / 'stores' / key)


def store_tokenizer(config: ml_collections.ConfigDict,
                    train: sources.Documents | None = None) -> tokenizer_lib.Tokenizer:
  """The tokenizer of data.store when it has one and the config names none; else the config's (trained on a
  bounded sample of the train split, `train` if given: tokenizer.get_tokenizer)."""
  saved = paths.path(config.data.store) / store.TOKENIZER if config.data.store else None
  if saved is not None and saved.is_file() and not tokenizer_lib.given_path(config):
    tokenizer = tokenizer_lib.Tokenizer.load(saved)
    tokenizer_lib.check_vocab_size(config, tokenizer, str(saved))
    return tokenizer
  return tokenizer_lib.get_tokenizer(config, train)


def _pending(root: epath.Path, split_plans: list[store.SplitPlan], num_hosts: int, host_index: int):
  """(split index, shard index) of this host's shards that are not committed yet."""
  return [(p, k) for p, plan in enumerate(split_plans) for k in range(plan.num_shards)
          if k % num_hosts == host_index and not store.is_complete(root, plan.split, k)]


_WORKER: dict = {}  # per worker process: the config's plans and tokenizer, built once by _init_worker


def _init_worker(config_dict: dict, splits: tuple[str, ...], model_proto: bytes) -> None:
  config = ml_collections.ConfigDict(config_dict)
  _WORKER['plans'] = plans(config, splits)
  _WORKER['tokenizer'] = tokenizer_lib.Tokenizer(model_proto)


def _run_task(args: tuple[str, int, int]) -> int:
  root, p, k = args
  plan = _WORKER['plans'][p]
  return store.write_shard(paths.path(root), plan.split, k, plan.documents, _WORKER['tokenizer'],
                           plan.shard_documents, threads=1)  # a worker per core


def _write_shards(config, root, split_plans, tokenizer, tasks, workers: int) -> int:
  """Writes the shards of `tasks`; returns their tokens. One worker: here, SentencePiece on every core. Several: a
  spawned process pool (no fork of a process that may hold jax or threads), one SentencePiece thread each; a
  Hugging Face tokenizer is used in this process only."""
  if workers <= 1 or len(tasks) <= 1 or not isinstance(tokenizer, tokenizer_lib.Tokenizer):
    return sum(store.write_shard(root, split_plans[p].split, k, split_plans[p].documents, tokenizer,
                                 split_plans[p].shard_documents) for p, k in tasks)
  context = multiprocessing.get_context('spawn')
  splits = tuple(plan.split for plan in split_plans)
  init_args = (config.to_dict(), splits, tokenizer.model_proto)
  with context.Pool(min(workers, len(tasks)), _init_worker, init_args) as pool:
    return sum(pool.imap_unordered(_run_task, [(str(root), p, k) for p, k in tasks]))


@dataclasses.dataclass(frozen=True)
class Built:
  """What `build` leaves: the store's root, its manifest (None while other hosts' shards are missing), the
  tokenizer, and {'tokens', 'shards', 'seconds'} of the shards this call wrote."""
  root: epath.Path
  content: dict | None
  tokenizer: tokenizer_lib.Tokenizer
  stats: dict


def build(config: ml_collections.ConfigDict, workers: int = 1, num_hosts: int = 1, host_index: int = 0,
          tokenizer: tokenizer_lib.Tokenizer | None = None, splits: tuple[str, ...] = _SPLITS,
          remove_temporaries: bool = False) -> Built:
  """Builds this host's share of the store of `splits` (with `tokenizer`, else the config's: store_tokenizer).

  remove_temporaries: first delete the temporary files a killed build left in the store (only when nothing else
  writes there now: `lm.prepare` on one host does; the processes of a training job, building together, do not).

  A complete data.store is used as it is: the source is not listed or read again, only its tokenizer and data keys
  are checked against the config's.
  """
  done = {'tokens': 0, 'shards': 0, 'seconds': 0.0}
  if config.data.store:
    root = paths.path(config.data.store)
    content = store.read_manifest(root)
    if content is not None:
      tokenizer = tokenizer or store_tokenizer(config)
      store.check_matches(root, content, tokenizer, config.data, splits)
      return Built(root, content, tokenizer, done)
  split_plans = plans(config, splits)
  if tokenizer is None:
    tokenizer = store_tokenizer(config, split_plans[0].documents)
  root = store_root(config, split_plans, tokenizer)
  content = store.read_manifest(root)
  if content is not None:
    store.check_matches(root, content, tokenizer, config.data, splits)
    return Built(root, content, tokenizer, done)
  if remove_temporaries and root.is_dir():
    store.remove_stale_temporaries(root)
  if isinstance(tokenizer, tokenizer_lib.Tokenizer) and not (root / store.TOKENIZER).is_file():
    tokenizer.save(root / store.TOKENIZER)
  tasks = _pending(root, split_plans, num_hosts, host_index)
  logging.info('Token store %s: %d shards to write here', root, len(tasks))
  start = time.perf_counter()
  tokens = _write_shards(config, root, split_plans, tokenizer, tasks, workers)
  stats = {'tokens': tokens, 'shards': len(tasks), 'seconds': time.perf_counter() - start}
  if _pending(root, split_plans, 1, 0):
    return Built(root, None, tokenizer, stats)
  content = store.manifest(root, split_plans, tokenizer, config.data)
  store.write_manifest(root, content)
  return Built(root, content, tokenizer, stats)


def build_all(config: ml_collections.ConfigDict, **kwargs) -> list[tuple[str, Built]]:
  """[('', build(config))], or for a data.mixture [(name, build(that source))] for every source, all with one
  tokenizer: data.tokenizer, else the heaviest source's (mixture.tokenizer_source). `kwargs` go to `build`."""
  if not config.data.mixture:
    return [('', build(config, **kwargs))]
  parts = mixture.components(config)
  tokenizer = None if tokenizer_lib.given_path(config) else store_tokenizer(mixture.tokenizer_source(parts).config)
  out = []
  for part in parts:
    built = build(part.config, tokenizer=tokenizer, **kwargs)
    tokenizer = built.tokenizer
    out.append((part.name, built))
  return out
