"""A 4-layer BLOOM-style decoder (ALiBi instead of position embeddings, a LayerNorm after the embedding, tanh GELU,
biases, tied head) on the embedded corpus; exports as BloomForCausalLM.

  python -m lm.main --config=configs/bloom_tiny.py
  python -m lm.generate --workdir=workdirs/bloom_tiny --prompt="def "

The same shape budget as gpt_tiny; `:test` shrinks it for unit tests.
"""
from configs import gpt_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny's schedule and size with the BLOOM layout."""
  return base.bloom(gpt_tiny.get_config(arg))
