"""The errors lm raises for things a user can fix. Each message is one line naming the key, flag or path and the fix.

Commands catch `LmError` and print `error: <message>` on stderr, exiting with the error's `exit_code` (lm/cli.py):

  ConfigError       2  a config value that cannot work (key, value, fix)
  DataError         2  a corpus, dataset or record that cannot be read or is too small
  UsageError        2  a command-line value or input file of a command (--prompt_file, --mesh, --workdir, ...)
  CheckpointError   2  a checkpoint that cannot be read or restored into this config
  NonFiniteLossError 3 the loss became NaN/inf; names the last good checkpoint
  SaveError         4  a checkpoint that cannot be written (full or read-only disk)
"""


class LmError(Exception):
  """Base of every error lm reports to a user in one line."""
  exit_code = 2


class ConfigError(LmError, ValueError):
  """A config value that cannot work; the message names the key and the fix."""


class DataError(LmError, ValueError):
  """A data source, file or record that cannot be read or used; the message names it and what to do."""


class UsageError(LmError, ValueError):
  """A command-line value or an input file of a command that cannot be used; the message names the flag."""


class CheckpointError(LmError):
  """A checkpoint (or a workdir's checkpoints) that cannot be read or restored; the message names the path."""


class NonFiniteLossError(LmError, RuntimeError):
  """The training loss became NaN or inf."""
  exit_code = 3


class SaveError(CheckpointError, RuntimeError):
  """A checkpoint could not be written (read-only or full disk, ...): the run stops rather than go on unsaved."""
  exit_code = 4
