"""T5.1.1 small shape (8+8 blocks, d_model 512, 6 heads x 64, gated-GELU d_ff 1024, 32k vocabulary; ~77M
parameters) pretrained with span corruption: 512 encoder tokens from 568 raw ones, 114 decoder targets.

  python -m lm.main --config=configs/t5_small.py --config.data.source=tfds --config.data.tfds_name=c4/en:3.1.0
  # a quick check of the shape on a CPU:
  python -m lm.main --config=configs/t5_small.py --config.num_train_steps=1 --config.batch_size=2

Made for an accelerator (T5's pretraining: batch 128 x 512, Adafactor-like constant LR 1e-2 with inverse-sqrt
decay; here AdamW with warmup + cosine, the schedule lm has). The embedded corpus is small for 77M parameters:
point `data` at a real corpus. `:v1.0` is the original T5 layout (ReLU, tied head).
"""
from lm.config import base


def get_config(arg: str | None = None):
  """t5_small[:v1.0]."""
  c = base.t5(base.get_config(), '1.0' if arg == 'v1.0' else '1.1')
  c.num_train_steps = 100_000
  c.batch_size = 128
  c.seq_len = 512
  c.log_every_steps = 50
  c.eval_every_steps = 2000
  c.eval_steps = 16
  c.checkpoint_every_steps = 2000
  c.model.num_layers = 8
  c.model.num_decoder_layers = 8
  c.model.num_heads = 6
  c.model.head_dim = 64
  c.model.d_model = 512
  c.model.d_ff = 1024
  c.model.vocab_size = 32128  # T5's 32000 pieces + 100 sentinels, rounded up to a multiple of 128
  c.model.max_len = 512
  c.model.dropout = 0.0  # T5.1.1: no dropout in pretraining (0.1 when fine-tuning)
  c.data.num_sentinels = 100
  c.optimizer.warmup_steps = 10_000  # Adafactor at 1e-2 (the t5 preset), as t5x
  c.z_loss = 1e-4  # t5x's auxiliary loss
  return c
