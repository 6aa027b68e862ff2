"""Tokenize a config's corpus into its token store ahead of training, in parallel: `python -m lm.prepare --config`.

  python -m lm.prepare --config=configs/gpt_small.py --config.data.store=/data/stores/owt --workers=16
  python -m lm.prepare --config=... --num_hosts=64 --host_index=$H      # on each of 64 hosts (or SLURM array)

Trains the tokenizer on a bounded sample of the train split (data.tokenizer_sample_bytes) unless the config or
the store has one, then writes the shards this host owns (k % num_hosts == host_index) with --workers local
processes, skipping shards already committed, so a killed run is resumed by running it again. Whoever finds every
shard committed writes store.json; `lm.main` with the same config (and data.store) then trains from the store.
The store is the same bytes for any --workers / --num_hosts. A data.mixture gets one store per source. Prints,
per store, one progress line, then one JSON line: {"source", "store", "complete", "shards", "tokens", "seconds",
"tokens_per_sec"} of the work done here.
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags

from lm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_small.py[:arg].',
                                          lock_config=True)
_WORKERS = flags.DEFINE_integer('workers', 1, 'Local processes that tokenize shards (e.g. the number of cores).')
_NUM_HOSTS = flags.DEFINE_integer('num_hosts', 1, 'Hosts sharing the work; each runs this command with its '
                                  '--host_index.')
_HOST_INDEX = flags.DEFINE_integer('host_index', 0, 'This host, 0..num_hosts-1.')


def _check_flags() -> None:
  from lm.errors import UsageError
  if _WORKERS.value < 1:
    raise UsageError(f'--workers={_WORKERS.value}: must be >= 1')
  if _NUM_HOSTS.value < 1 or not 0 <= _HOST_INDEX.value < _NUM_HOSTS.value:
    raise UsageError(f'--host_index={_HOST_INDEX.value} --num_hosts={_NUM_HOSTS.value}: need num_hosts >= 1 and '
                     '0 <= host_index < num_hosts')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  config, _ = cli.loaded_config(_CONFIG)
  from lm.config import validation
  from lm.data import store_builder
  from lm.errors import DataError, LmError
  from lm.store import paths
  try:
    _check_flags()
    validation.validate(config)
    paths.check_usable(config.data.store, 'data.store', write=True)
    if config.data.task != 'pretrain':
      raise DataError(f"data.task={config.data.task!r}: the token store holds pretraining documents; 'classify' "
                      "and 'sft' tokenize their records on the fly")
    stores = store_builder.build_all(config, workers=_WORKERS.value, num_hosts=_NUM_HOSTS.value,
                                     host_index=_HOST_INDEX.value, remove_temporaries=_NUM_HOSTS.value == 1)
  except LmError as e:
    cli.fail(e)
  for name, built in stores:
    _report(name, built)


def _report(name: str, built) -> None:
  """One progress line and one JSON line for the store of one source."""
  stats = built.stats
  result = {'source': name, 'store': os.fspath(built.root), 'complete': built.content is not None, **stats,
            'tokens_per_sec': stats['tokens'] / stats['seconds'] if stats['seconds'] else 0.0}
  what = f'Token store {built.root}' + (f' (source {name})' if name else '')
  if built.content is not None:
    sizes = {split: s['tokens'] for split, s in built.content['splits'].items()}
    print(f'{what}: complete, {sizes} tokens; this run wrote {stats["shards"]} shards ({stats["tokens"]} tokens) '
          f'in {stats["seconds"]:.1f} s', flush=True)
  else:
    print(f'{what}: wrote {stats["shards"]} shards here; others are still missing (the other hosts write them; '
          'rerun this command to finish after a failure)', flush=True)
  print(json.dumps(result), flush=True)


def run():
  """Console entry point."""
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
