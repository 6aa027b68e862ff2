"""Top-k predictions for each [MASK] in a text, from an encoder (BERT) workdir.

  python -m lm.fill_mask --workdir=workdirs/bert_tiny --text="import [MASK] as np" [--top_k=5] [--step=N]
"""
from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of an encoder (model.type=bert) run.', required=True)
_TEXT = flags.DEFINE_string('text', None, 'Text with one or more [MASK] tokens.', required=True)
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Predictions shown per [MASK].')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')


def main(argv):
  del argv
  cli.quiet_logs()
  from lm.errors import LmError
  from lm.inference import fill_mask
  from lm.store import workdir
  try:
    run = workdir.load(_WORKDIR.value, _STEP.value)
    fill_mask.check_fillable(run, _TEXT.value, _WORKDIR.value)
  except LmError as e:
    cli.fail(e)
  for index, predictions in enumerate(fill_mask.fill_mask(run, _TEXT.value, _TOP_K.value)):
    print(f'[MASK] {index}: ' + '  '.join(f'{piece!r} {p:.3f}' for piece, p in predictions))


def run():
  """Console entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
