"""Tags for the words of a text, from a token-classification (data.task='tag') workdir.

  python -m lm.tag --workdir=workdirs/bert_tiny_tag --best --split=python \
      --text="x = os.path.join(a, 'b') if n > 2 else None"

Prints `word/TAG` pairs on one line (the tags are the run's data.tag_names, IOB2).
"""
from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, "Workdir of a data.task='tag' run.", required=True)
_TEXT = flags.DEFINE_string('text', None, 'The text to tag.', required=True)
_SPLIT = flags.DEFINE_enum('split', 'whitespace', ['whitespace', 'python'],
                           'How the text is cut into words: at whitespace (NER), or into Python tokens (the '
                           'bert_tiny_tag demo).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_BEST = flags.DEFINE_boolean('best', False, 'Use the best checkpoint (<workdir>/best) instead.')


def main(argv):
  del argv
  cli.quiet_logs()
  from lm.errors import LmError
  from lm.inference import task_eval
  try:
    run = task_eval.load_run(_WORKDIR.value, 'tag', _STEP.value, _BEST.value)
    words = task_eval.split_words(_TEXT.value, _SPLIT.value)
    tags = task_eval.tag(run, words)
  except LmError as e:
    cli.fail(e)
  print(' '.join(f'{word}/{tag}' for word, tag in zip(words, tags)))


def run():
  """Console entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
