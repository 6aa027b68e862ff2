"""The answer span to a question about a context, from an extractive question-answering (data.task='qa') workdir.

  python -m lm.answer --workdir=workdirs/bert_tiny_qa --best --question="What does json.dumps return?" \
      --context="json.dumps: Serialize obj to a JSON formatted str."

Prints the answer (or that there is none, SQuAD v2 runs with data.allow_null), its score (start + end logit) and
its character offset; the last line is one JSON object with `answer`, `score` and `start`.
"""
import json

from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, "Workdir of a data.task='qa' run.", required=True)
_QUESTION = flags.DEFINE_string('question', None, 'The question.', required=True)
_CONTEXT = flags.DEFINE_string('context', None, 'The text holding the answer (any length: read in windows).',
                               required=True)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_BEST = flags.DEFINE_boolean('best', False, 'Use the best checkpoint (<workdir>/best) instead.')


def main(argv):
  del argv
  cli.quiet_logs()
  from lm.errors import LmError
  from lm.inference import task_eval
  try:
    run = task_eval.load_run(_WORKDIR.value, 'qa', _STEP.value, _BEST.value)
    found = task_eval.answer(run, _QUESTION.value, _CONTEXT.value)
  except LmError as e:
    cli.fail(e)
  shown = repr(found.text) if found.text else '(no answer)'
  print(f'answer: {shown}  score {found.score:.3f}' + (f'  at character {found.start}' if found.text else ''))
  print(json.dumps({'answer': found.text, 'score': found.score, 'start': found.start}))


def run():
  """Console entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
