"""Quick start: a 4-layer GPT on the embedded corpus (Python stdlib + pydoc), minutes on a laptop CPU.

  python -m lm.main --config=configs/gpt_tiny.py
  python -m launch.sweep --config=configs/gpt_tiny.py          # the learning-rate sweep below, one run per point
  python -m launch.sweep report --root=workdirs/gpt_tiny_sweep

Loss falls from ~9.0 (ln 8192) within the first 40 steps; eval perplexity every 100 steps; samples at the end.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny; `:test` shrinks it further for unit tests."""
  c = base.get_config()
  c.num_train_steps = 200
  c.batch_size = 16
  c.seq_len = 256
  c.log_every_steps = 10
  c.eval_every_steps = 100
  c.eval_steps = 8
  c.checkpoint_every_steps = 100
  c.num_samples = 3
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 256
  c.model.d_ff = 1024
  c.model.max_len = 256
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 20
  if arg == 'test':
    c.num_train_steps, c.batch_size, c.seq_len, c.model.max_len = 20, 8, 64, 64
    c.model.num_layers, c.model.d_model, c.model.d_ff, c.model.vocab_size = 2, 64, 256, 1024
    c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 5, 10, 2, 10
    c.num_samples, c.sample_max_new_tokens, c.optimizer.warmup_steps = 1, 8, 5
    c.optimizer.learning_rate = 1e-2
  return c


def get_sweep(arg: str | None = None) -> list[dict]:
  """A learning-rate sweep around the default 2e-3 (`:test`: two points of the unit-test size)."""
  rates = (5e-3, 1e-2) if arg == 'test' else (1e-3, 2e-3, 4e-3)
  return base.sweep_product({'optimizer.learning_rate': rates})
