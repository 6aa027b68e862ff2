"""What every command-line entry point shares: flag parsing that fails in one line, quiet library logs, and the
exit on a user error (one line on stderr, the error's exit code; lm/errors.py)."""
import sys

from absl import flags, logging
from ml_collections import config_flags


def quiet_logs() -> None:
  """Library INFO logs off unless --verbosity was given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def fail(error, status: int | None = None):
  """Prints `error: <message>` on stderr and exits with `status` (default: the error's exit_code, see
  lm/errors.py, else 2)."""
  print(f'error: {error}', file=sys.stderr, flush=True)
  sys.exit(status if status is not None else getattr(error, 'exit_code', 2))


def loaded_config(config_flag):
  """(config, config file path) of a DEFINE_config_file flag, with init_from's architecture adopted
  (config/inherit.py: model keys not given on the command line come from that run); exits 2 with one line if the
  file failed to load or an override contradicts init_from."""
  path = config_flags.get_config_filename(flags.FLAGS[config_flag.name])
  config = config_flag.value
  try:
    config.get('seed')  # config_flags defers a failed load to the first access
  except OSError:
    print(f'error: --config={path}: no such file or it failed to import; give a config file such as '
          'configs/gpt_tiny.py that defines get_config()', file=sys.stderr)
    sys.exit(2)
  from lm.config import inherit
  from lm.errors import LmError
  try:
    changed = inherit.adopt_pretrained(config, config_flags.get_override_values(flags.FLAGS[config_flag.name]))
  except LmError as e:
    fail(e)
  if changed:
    print(inherit.describe(changed, config.init_from), flush=True)
  return config, path


def _one_line(error: Exception) -> str:
  text = str(error).replace('\\n', ' ').replace("\\'", "'")
  return ' '.join(text.split()).strip('"')


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, but a bad flag, config file or config override exits 2 with one line naming it."""
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: --config.<key> that the config does not have
    overrides = ' '.join(a for a in argv[1:] if a.startswith('--config.'))
    print(f'error: unknown config key in `{overrides}`: {_one_line(e)}; see lm/config/base.py for the keys that exist',
          file=sys.stderr)
  except (flags.Error, TypeError, ValueError, OSError) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
  sys.exit(2)


