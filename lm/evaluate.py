"""Score a text file with a workdir's model: prints one JSON line with `loss` (mean NLL per predicted token),
`perplexity` = exp(loss) and `tokens` (how many were scored), plus `objective`, `windows`, `step`.

  python -m lm.evaluate --workdir=workdirs/gpt_tiny --text_file=notes.txt [--dump_logits=logits.npy]

The text is tokenized as the workdir's tokenizer does by default (an encoder's as [CLS] text [SEP], as in its
pretraining). Decoders: next-token NLL, long texts in windows of model.max_len advancing by --stride. Encoders: MLM
loss with every text token masked once over k = round(1 / data.mask_prob) deterministic passes. --dump_logits saves
the token-head logits of the unmasked text, float32 [tokens of the text, vocab]. Details: lm/inference/scoring.py.

  python -m lm.evaluate --workdir=workdirs/t5_tiny_translate --pairs_file=dev.jsonl [--num_beams=4]

An encoder-decoder (t5) scores (source, target) pairs instead (jsonl or csv with the run's data.source_key and
data.target_key): `loss` / `perplexity` of the target tokens given the source (teacher forcing),
`other_source_loss` (each target given the next pair's source: close to `loss` means the model does not read its
source), and `bleu`, `rouge1`, `rouge2`, `rougeLsum` of the decoded sources against the targets
(lm/inference/seq2seq_scoring.py).
"""
import json
import os

from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a run (lm.main or lm.convert).', required=True)
_TEXT_FILE = flags.DEFINE_string('text_file', None, 'UTF-8 text file to score (decoders, encoders).')
_PAIRS_FILE = flags.DEFINE_string('pairs_file', None, 'jsonl/csv of (source, target) pairs (encoder-decoders).')
_NUM_BEAMS = flags.DEFINE_integer('num_beams', 1, 'Beams for decoding the pairs\' sources (1 = greedy).')
_DUMP = flags.DEFINE_string('dump_logits', None, 'Also save the logits [tokens, vocab] (float32) to this .npy file.')
_STRIDE = flags.DEFINE_integer('stride', None, 'Decoder window advance in tokens (default: model.max_len - 1).')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Windows per forward pass.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_BEST = flags.DEFINE_bool('best', False, 'Use the best checkpoint (<workdir>/best, see config.best_metric).')
_MESH = flags.DEFINE_string('mesh', '', 'data,fsdp,tensor mesh for the parameters, e.g. 1,1,8 (default: replicated).')


def read_text(path: str) -> str:
  """The file's text; UsageError if it is missing or not UTF-8."""
  from lm.errors import UsageError
  if not os.path.isfile(path):
    raise UsageError(f'--text_file={path}: no such file')
  try:
    with open(path, encoding='utf-8') as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise UsageError(f'--text_file={path}: not UTF-8 text ({e.reason} at byte {e.start})') from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax
  import numpy as np

  from lm.errors import LmError, UsageError
  from lm.inference import scoring
  from lm.store import workdir
  try:
    if _BATCH.value < 1:
      raise UsageError(f'--batch_size={_BATCH.value}: must be >= 1')
    if bool(_TEXT_FILE.value) == bool(_PAIRS_FILE.value):
      raise UsageError('give one of --text_file (decoders, encoders) or --pairs_file (encoder-decoders)')
    text = read_text(_TEXT_FILE.value) if _TEXT_FILE.value else None
    if _PAIRS_FILE.value and not os.path.isfile(_PAIRS_FILE.value):
      raise UsageError(f'--pairs_file={_PAIRS_FILE.value}: no such file')
    run = workdir.load(_WORKDIR.value, _STEP.value, best=_BEST.value, mesh=_MESH.value)
    if _PAIRS_FILE.value:
      return _score_pairs(run)
    from lm.models import registry
    if registry.get(run.config.model.type).encoder_decoder:
      raise UsageError(f'--text_file: {_WORKDIR.value} is an encoder-decoder; it scores (source, target) pairs '
                       'given with --pairs_file')
    with jax.set_mesh(run.mesh):
      result, logits = scoring.score(run, scoring.tokenize(run, text), stride=_STRIDE.value,
                                     batch_size=_BATCH.value, with_logits=bool(_DUMP.value))
  except LmError as e:
    cli.fail(e)
  if _DUMP.value:
    os.makedirs(os.path.dirname(os.path.abspath(_DUMP.value)), exist_ok=True)
    np.save(_DUMP.value, logits)
    result['logits'] = _DUMP.value
  print(json.dumps({**result, 'step': run.step}), flush=True)


def _score_pairs(run) -> None:
  """Prints the JSON line of an encoder-decoder run scored on --pairs_file."""
  from lm.errors import LmError, UsageError
  from lm.inference import seq2seq_scoring
  from lm.models import registry
  try:
    if not registry.get(run.config.model.type).encoder_decoder:
      raise UsageError(f'--pairs_file: model.type={run.config.model.type!r} is not an encoder-decoder; use '
                       '--text_file')
    result = seq2seq_scoring.score_pairs(run, _PAIRS_FILE.value, batch_size=_BATCH.value, num_beams=_NUM_BEAMS.value)
  except LmError as e:
    cli.fail(e)
  print(json.dumps({**result, 'objective': 'seq2seq', 'step': run.step}), flush=True)


def run():
  """Console entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
