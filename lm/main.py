"""Train (pretrain or fine-tune) a model: `python -m lm.main --config=configs/gpt_tiny.py [--workdir=DIR]`.

Without --workdir the run goes to workdirs/<config file name>. The same workdir again resumes the run.
Any `--config.key=value` overrides the config file; bad values fail before any compile with one line naming the key.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from lm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_tiny.py[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory (default: workdirs/<config name>).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'Multi-process: host:port of process 0 (else '
                                   '$LM_COORDINATOR_ADDRESS; SLURM and TPU pods are detected without it).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Multi-process: number of processes ($LM_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Multi-process: this process, 0..num_processes-1 '
                                   '($LM_PROCESS_ID).')


def default_workdir(config_path: str) -> str:
  """workdirs/<config file stem>, e.g. workdirs/gpt_tiny for configs/gpt_tiny.py:arg."""
  return os.path.join('workdirs', os.path.splitext(os.path.basename(config_path.split(':')[0]))[0])


def _warn_held_out_seen(config) -> None:
  """One warning line when init_from pretrained on files this fine-tune evaluates on (data/sources.py)."""
  if not config.init_from:
    return
  from lm.config import resume
  from lm.data import sources
  pretrained = resume.init_from_config(config.init_from).data
  seen = sources.eval_files_seen_in_pretraining(pretrained, config.data)
  if seen:
    print(f'warning: init_from={config.init_from} pretrained on {len(seen)} standard-library files this run holds '
          f'out for eval (its data.eval_fraction={pretrained.eval_fraction} < {config.data.eval_fraction}), e.g. '
          f'{seen[0]}: eval metrics are optimistic; pretrain with --config.data.eval_fraction='
          f'{config.data.eval_fraction} for a clean held-out set', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()  # library INFO chatter off; --verbosity=0 shows clu's metric log too
  config, config_path = cli.loaded_config(_CONFIG)
  from lm.store import paths
  workdir = os.fspath(paths.path(_WORKDIR.value or default_workdir(config_path)))  # ~ expanded; gs:// kept
  import jax  # after flag parsing and the config file, so --help and their errors are instant

  from lm.errors import LmError
  from lm.parallel import distributed
  try:
    where = distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except LmError as e:
    cli.fail(e)
  if jax.process_count() > 1:
    print(f'Distributed: {where}; {jax.local_device_count()} local of {jax.device_count()} devices', flush=True)
  if not _WORKDIR.value:
    print(f'Workdir: {workdir}', flush=True)
  from lm.config import validation
  try:
    validation.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
    paths.check_usable(workdir, '--workdir', write=True)  # before anything is written: never a local 'gs:' folder
    _warn_held_out_seen(config)
    from lm.training import loop  # after validation: a config error does not wait for TensorFlow (clu's writer)
    loop.run(config, workdir)
  except LmError as e:  # one line and the error's exit code: 2 input, 3 non-finite loss, 4 checkpoint write
    cli.fail(e)


def run():
  """Console entry point."""
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
