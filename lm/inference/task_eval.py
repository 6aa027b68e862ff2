"""What the QA and tagging heads predict, and the task metrics of it: the model's outputs on examples -> answers
(span_answers) or word tags -> SQuAD exact match / F1 (text_metrics) or entity precision / recall / F1
(entity_metrics). The TaskEval hook runs it with every evaluation; lm.answer and lm.tag run it on one text.

  p_predict = task_eval.predict_fn(model, config)
  outputs = task_eval.collect(p_predict, params, batches, len(rows))   # rows' outputs by their 'row' index
  task_eval.scores(config, rows, outputs)                             # {'exact_match', 'f1'} or {'entity_f1', ...}
"""
import io
import tokenize

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.data import qa, tagging
from lm.errors import UsageError
from lm.inference import entity_metrics, span_answers, text_metrics
from lm.parallel import sharding

TASKS = ('qa', 'tag')  # the data.task values scored here


def _task_outputs(task: str, outputs: dict) -> dict:
  """What goes back to the host: the start/end logits (qa), the argmax tag of each token (tag)."""
  if task == 'qa':
    return {'start_logits': outputs['start_logits'], 'end_logits': outputs['end_logits']}
  return {'tag_ids': jnp.argmax(outputs['tag_logits'], axis=-1).astype(jnp.int32)}


def predict_fn(model, config):
  """A jitted fn(params, batch) -> the task's outputs plus the batch's 'row' and 'example_weight'."""
  rules = sharding.logical_rules(config.mesh)

  def predict(params, batch):
    with nn.logical_axis_rules(rules):
      outputs = model.apply({'params': params}, batch, train=False)
    return {'row': batch['row'], 'example_weight': batch['example_weight'],
            **_task_outputs(config.data.task, outputs)}
  return jax.jit(predict)


def collect(p_predict, params, batches, num_rows: int) -> dict[str, np.ndarray]:
  """{output: [num_rows, ...]} over `batches`, each row at its 'row' index; rows no batch holds (or padding) stay
  NaN (logits) or -1 (tag ids)."""
  out = {}
  for batch in batches:
    got = jax.tree.map(sharding.to_host, p_predict(params, batch))
    keep = got.pop('example_weight') > 0
    rows = got.pop('row')[keep]
    for key, value in got.items():
      if key not in out:
        fill = np.nan if np.issubdtype(value.dtype, np.floating) else -1
        out[key] = np.full((num_rows, *value.shape[1:]), fill, value.dtype)
      out[key][rows] = value[keep]
  return out


def word_tags(examples: tagging.TagExamples, i: int, tag_ids: np.ndarray) -> list[str]:
  """The predicted tag of each word of sentence i from its tokens' tag ids (a word's first sub-token; 'O' for a
  word cut off at seq_len)."""
  names = examples.records.tag_names
  return [names[tag_ids[p]] if p >= 0 else 'O' for p in examples.word_positions(i)]


def qa_scores(features: qa.QaFeatures, outputs: dict, data_cfg) -> dict[str, float]:
  """{'exact_match', 'f1'} (x 100) over the questions whose windows have outputs."""
  found = span_answers.answers(features, outputs['start_logits'], outputs['end_logits'], data_cfg)
  questions = sorted(found)
  return text_metrics.squad_scores([found[q].text for q in questions],
                                   [features.records[q].answers for q in questions])


def tag_scores(examples: tagging.TagExamples, outputs: dict) -> dict[str, float]:
  """{'entity_precision', 'entity_recall', 'entity_f1'} over the sentences that have outputs."""
  tag_ids = outputs['tag_ids']
  scored = [i for i in range(len(examples)) if tag_ids[i, 0] != -1]
  return entity_metrics.entity_scores([examples.records.tag_strings(i) for i in scored],
                                      [word_tags(examples, i, tag_ids[i]) for i in scored])


def scores(config, rows, outputs: dict) -> dict[str, float]:
  """The task metrics of data.task ('qa' or 'tag') of `rows` (QaFeatures or TagExamples)."""
  if config.data.task == 'qa':
    return qa_scores(rows, outputs, config.data)
  return tag_scores(rows, outputs)


def load_run(workdir: str, task: str, step: int | None = None, best: bool = False):
  """The run in `workdir` (store/workdir.load), which must have been trained for data.task `task` ('qa' or
  'tag'); UsageError naming the command otherwise."""
  from lm.store import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  run = workdir_lib.load(workdir, step, best=best)
  if run.config.data.task != task:
    command = {'qa': 'lm.answer', 'tag': 'lm.tag'}[task]
    raise UsageError(f'--workdir={workdir}: a data.task={run.config.data.task!r} run; {command} needs a '
                     f'data.task={task!r} run (base.{task}(c) in its config)')
  return run


def _run_outputs(run, rows) -> dict[str, np.ndarray]:
  """The task outputs of every example of `rows` with the run's parameters (one batch)."""
  examples = [rows[i] for i in range(len(rows))]
  batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
  with jax.set_mesh(run.mesh):
    return collect(predict_fn(run.model, run.config), run.params, [batch], len(rows))


def answer(run, question: str, context: str) -> span_answers.Answer:
  """The run's answer to one question about one context (every window of it, SQuAD's post-processing)."""
  if not question.strip() or not context.strip():
    raise UsageError('--question and --context must both have text')
  records = qa.Records((qa.QaRecord('question', question, context),), 'cli')
  features = qa.QaFeatures(records, run.tokenizer, run.config)
  outputs = _run_outputs(run, features)
  return span_answers.answers(features, outputs['start_logits'], outputs['end_logits'], run.config.data)[0]


def split_words(text: str, how: str) -> list[str]:
  """The words of `text`: split at whitespace, or ('python') into the tokens of Python's tokenize as the embedded
  tagging demo reads a source line."""
  if how == 'whitespace':
    return text.split()
  try:
    tokens = list(tokenize.generate_tokens(io.StringIO(text.rstrip('\n') + '\n').readline))
  except (tokenize.TokenError, SyntaxError) as e:
    raise UsageError(f'--text does not tokenize as Python ({e}); use --split=whitespace') from e
  skipped = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
  return [t.string for t in tokens if t.type not in skipped]


def tag(run, words: list[str]) -> list[str]:
  """The run's tag for each word (a word cut off at seq_len gets 'O')."""
  if not words:
    raise UsageError('--text has no words to tag')
  names = tuple(run.config.data.tag_names.split(','))
  records = tagging.Records((tuple(words),), ((0,) * len(words),), names, 'cli')
  examples = tagging.TagExamples(records, run.tokenizer, run.config)
  return word_tags(examples, 0, _run_outputs(run, examples)['tag_ids'][0])
