"""Quick start for encoder-decoders: a small T5 (v1.1 layout) pretrained with span corruption on the embedded
corpus, minutes on a CPU.

  python -m lm.main --config=configs/t5_tiny.py
  python -m lm.main --config=configs/t5_tiny_summarize_code.py --config.init_from=workdirs/t5_tiny

Span corruption (lm/data/span_corruption.py): 15% of each 142-token window (mean span 3) is replaced by sentinels,
giving 128 encoder tokens and 30 decoder targets. Variants (comma-separated): `v1.0` (ReLU, tied head);
`reconstruct` (the decoder writes the whole uncorrupted 142-token chunk: data.span_targets='original', ~2x the step
time; the better start for code summarization, WORKSPACE.md "Encoder-decoder"); `test` shrinks everything for unit
tests.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """t5_tiny[:v1.0][,reconstruct][,test]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.t5(base.get_config(), '1.0' if 'v1.0' in variants else '1.1')
  c.num_train_steps = 300
  c.batch_size = 16
  c.seq_len = 128  # encoder tokens; the decoder gets data.target_len = 30 from span corruption
  c.data.eval_fraction = 0.1  # hold out the files t5_tiny_summarize_code evaluates on (their docstrings: its targets)
  c.log_every_steps = 10
  c.eval_every_steps = 100
  c.eval_steps = 8
  c.checkpoint_every_steps = 100
  c.model.num_layers = 4  # encoder blocks
  c.model.num_decoder_layers = 4
  c.model.num_heads = 4
  c.model.head_dim = 64
  c.model.d_model = 256
  c.model.d_ff = 640
  c.model.max_len = 512  # no position table: the limit generation and config checks use
  c.optimizer.warmup_steps = 30  # Adafactor at 1e-2 (the t5 preset)
  if 'reconstruct' in variants:
    c.data.span_targets = 'original'  # targets: the raw chunk, so the decoder learns to copy through cross-attention
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.seq_len = 20, 8, 64
    c.model.num_layers, c.model.num_decoder_layers, c.model.d_model, c.model.d_ff = 2, 2, 64, 128
    c.model.num_heads, c.model.head_dim, c.model.vocab_size = 4, 16, 1024
    c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 5, 10, 2, 10
    c.optimizer.warmup_steps = 5
  return c
