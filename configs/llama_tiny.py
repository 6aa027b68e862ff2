"""A 4-layer Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head) on the embedded corpus.

  python -m lm.main --config=configs/llama_tiny.py
  python -m lm.generate --workdir=workdirs/llama_tiny --prompt="def "

The same shape budget as gpt_tiny; `:test` shrinks it for unit tests.
"""
from configs import gpt_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny's schedule and size with the Llama layout; 4 query heads share 2 key/value heads."""
  c = base.llama(gpt_tiny.get_config(arg))
  c.model.num_kv_heads = 2
  c.model.d_ff = c.model.d_model * 8 // 3 // 8 * 8  # SwiGLU's 2/3 of 4·d (three matrices instead of two)
  c.model.layer_norm_eps = 1e-6
  return c
