"""Model registry: `config.model.type` -> module class. Every model takes a batch dict and returns a dict."""
import jax.numpy as jnp

from lm.models import decoder, encoder, layers

MODELS = {'gpt': decoder.Decoder, 'bert': encoder.Encoder}
CAUSAL = {'gpt': True, 'bert': False}
# Top-level modules a fine-tune adds to a pretrained network: init_from creates them fresh (anything else missing from
# the checkpoint is an error), and optimizer.freeze_all_but_head trains only them.
TASK_HEADS = ('class_head',)


def example_batch(config) -> dict:
  """A one-row dummy batch with the keys the model reads (for init and shape inference)."""
  batch = {'inputs': jnp.zeros((1, config.seq_len), jnp.int32),
           'segment_ids': jnp.ones((1, config.seq_len), jnp.int32)}
  if config.model.type == 'bert':
    batch['mlm_positions'] = jnp.zeros((1, config.data.max_predictions_per_seq), jnp.int32)
  return batch


def build(model_cfg):
  """Instantiates the linen module named by `model_cfg.type` from `config.model`."""
  if model_cfg.type not in MODELS:
    raise ValueError(f'model.type={model_cfg.type!r} is unknown; choose one of {sorted(MODELS)}')
  cfg = layers.ModelConfig.from_config(model_cfg, causal=CAUSAL[model_cfg.type])
  return MODELS[model_cfg.type](cfg)
