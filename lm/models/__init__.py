"""Model registry: `config.model.type` -> module class."""
from lm.models import decoder, layers

MODELS = {'gpt': decoder.Decoder}


def build(model_cfg):
  """Instantiates the linen module named by `model_cfg.type` from `config.model`."""
  if model_cfg.type not in MODELS:
    raise ValueError(f'model.type={model_cfg.type!r} is unknown; choose one of {sorted(MODELS)}')
  return MODELS[model_cfg.type](layers.ModelConfig.from_config(model_cfg))
