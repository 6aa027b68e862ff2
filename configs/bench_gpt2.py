"""The three GPT-2 shapes `lm.bench --vs_torch` compares against an eager PyTorch GPT2LMHeadModel (WORKSPACE.md,
Benchmarks): `:small` L4/d256/T256/B8/V8192, `:medium` L6/d512/T256/B8/V32000, `:124m` L12/d768/T512/B4/V50304.

  python -m lm.bench --config=configs/bench_gpt2.py:small --vs_torch
"""
from lm.config import base

# arg -> (layers, d_model, seq_len, batch_size, vocab_size); heads of 64 dims, d_ff = 4 d_model, as GPT-2
SHAPES = {'small': (4, 256, 256, 8, 8192), 'medium': (6, 512, 256, 8, 32000), '124m': (12, 768, 512, 4, 50304)}


def get_config(arg: str | None = None):
  """A GPT-2-layout config of one of SHAPES (default 'small'); the embedded corpus feeds it."""
  arg = arg or 'small'
  if arg not in SHAPES:
    raise ValueError(f'configs/bench_gpt2.py:{arg}: choose one of {sorted(SHAPES)}')
  layers, d_model, seq_len, batch_size, vocab_size = SHAPES[arg]
  c = base.get_config()
  c.batch_size, c.seq_len = batch_size, seq_len
  c.model.num_layers, c.model.d_model, c.model.num_heads = layers, d_model, d_model // 64
  c.model.d_ff, c.model.vocab_size, c.model.max_len = 4 * d_model, vocab_size, 1024
  return c
