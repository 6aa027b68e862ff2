"""Train (pretrain or fine-tune) a model: `python -m lm.main --config=configs/gpt_tiny.py [--workdir=DIR]`.

Without --workdir the run goes to workdirs/<config file name>. The same workdir again resumes the run.
Any `--config.key=value` overrides the config file; bad values fail before any compile with one line naming the key.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_tiny.py[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (default: workdirs/<config name>).')


def default_workdir(config_path: str) -> str:
  """workdirs/<config file stem>, e.g. workdirs/gpt_tiny for configs/gpt_tiny.py:arg."""
  return os.path.join('workdirs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter off; --verbosity=0 shows clu's metric log too
  import jax  # after flag parsing, so --help and flag errors are instant
  from lm import config as config_lib, train
  from lm.data.errors import DataError

  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  config = _CONFIG.value
  try:
    config.get('seed')  # config_flags defers a failed load to the first access
  except OSError:
    print(f'error: --config={config_path}: no such file or it failed to import; give a config file such as '
          'configs/gpt_tiny.py that defines get_config()', file=sys.stderr)
    sys.exit(2)
  workdir = _WORKDIR.value or default_workdir(config_path)
  if not _WORKDIR.value:
    print(f'Workdir: {workdir}', flush=True)
  try:
    config_lib.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    train.run(config, workdir)
  except (config_lib.ConfigError, DataError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(3)


def _one_line(error: Exception) -> str:
  text = str(error).replace('\\n', ' ').replace("\\'", "'")
  return ' '.join(text.split()).strip('"')


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, but a bad flag, config file or config override exits 2 with one line naming it."""
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: --config.<key> that the config does not have
    overrides = ' '.join(a for a in argv[1:] if a.startswith('--config.'))
    print(f'error: unknown config key in `{overrides}`: {_one_line(e)}; see configs/base.py for the keys that exist',
          file=sys.stderr)
  except (flags.Error, TypeError, ValueError, OSError) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
  sys.exit(2)


def run():
  """Console entry point."""
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
