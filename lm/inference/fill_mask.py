"""Top-k predictions of an encoder's MLM head for each [MASK] of a text (lm.fill_mask)."""
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UsageError
from lm.models import registry


def check_fillable(run, text: str, workdir: str) -> None:
  """UsageError unless the run's model has an MLM head and the text has a [MASK]."""
  if not registry.get(run.config.model.type).fills_masks:
    raise UsageError(f'--workdir={workdir}: model.type={run.config.model.type!r} has no MLM head; fill-mask needs an '
                     'encoder run such as bert (use lm.generate for decoders)')
  if '[MASK]' not in text:
    raise UsageError('--text: has no [MASK] token to fill')


def fill_mask(run, text: str, top_k: int) -> list[list[tuple[str, float]]]:
  """For each [MASK] in `text`: the top_k (token piece, probability) pairs of the MLM head."""
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
