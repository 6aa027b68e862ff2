"""A 4-layer OPT-style decoder (learned positions read at row p + 2, ReLU, biases, final LayerNorm, tied head) on the
embedded corpus; exports as OPTForCausalLM.

  python -m lm.main --config=configs/opt_tiny.py
  python -m lm.generate --workdir=workdirs/opt_tiny --prompt="def "

The same shape budget as gpt_tiny; `:test` shrinks it for unit tests.
"""
from configs import gpt_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny's schedule and size with the OPT layout."""
  return base.opt(gpt_tiny.get_config(arg))
