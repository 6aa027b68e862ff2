"""Top-k predictions for each [MASK] in a text, from a BERT workdir.

  python -m lm.fill_mask --workdir=workdirs/bert_tiny --text="import [MASK] as np" [--top_k=5] [--step=N]
"""
from absl import app, flags

from lm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a BERT (model.type=bert) run.', required=True)
_TEXT = flags.DEFINE_string('text', None, 'Text with one or more [MASK] tokens.', required=True)
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Predictions shown per [MASK].')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')


def fill_mask(run, text: str, top_k: int) -> list[list[tuple[str, float]]]:
  """For each [MASK] in `text`: the top_k (token piece, probability) pairs of the MLM head."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  tok = run.tokenizer
  ids = [tok.cls_id] + tok.encode(text)[:run.config.seq_len - 2] + [tok.sep_id]
  inputs = jnp.asarray([ids], jnp.int32)
  batch = {'inputs': inputs, 'token_types': jnp.zeros_like(inputs), 'segment_ids': jnp.ones_like(inputs)}
  with jax.set_mesh(run.mesh):
    logits = run.model.apply({'params': run.params}, batch, train=False)['mlm_logits'][0]
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  out = []
  for position in [i for i, t in enumerate(ids) if t == tok.mask_id]:
    best = np.argsort(-probs[position])[:top_k]
    out.append([(tok.id_to_piece(int(i)), float(probs[position, i])) for i in best])
  return out


def main(argv):
  del argv
  cli.quiet_logs()
  from lm import workdir
  from lm.config import ConfigError
  from lm.data.errors import DataError
  try:
    run = workdir.load(_WORKDIR.value, _STEP.value)
    if run.config.model.type != 'bert':
      raise ConfigError(f'--workdir={_WORKDIR.value}: model.type={run.config.model.type!r}; fill-mask needs a BERT '
                        'run (use lm.generate for decoders)')
    if '[MASK]' not in _TEXT.value:
      raise ConfigError('--text: has no [MASK] token to fill')
  except (ConfigError, DataError) as e:
    cli.fail(e)
  for index, predictions in enumerate(fill_mask(run, _TEXT.value, _TOP_K.value)):
    print(f'[MASK] {index}: ' + '  '.join(f'{piece!r} {p:.3f}' for piece, p in predictions))


if __name__ == '__main__':
  app.run(main)
