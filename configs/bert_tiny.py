"""Quick start for encoders: a 4-layer BERT pretrained with MLM + NSP on the embedded corpus, minutes on a CPU.

  python -m lm.main --config=configs/bert_tiny.py
  python -m lm.main --config=configs/bert_tiny.py:simcse     # SimCSE contrastive objective only
  python -m lm.fill_mask --workdir=workdirs/bert_tiny --text="import [MASK] as np"

Variants (comma-separated): `simcse` trains the contrastive objective alone (no masking); `test` shrinks everything
for unit tests.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """bert_tiny[:simcse][,test]."""
  variants = set((arg or '').split(','))
  c = base.bert(base.get_config())
  c.num_train_steps = 300
  c.batch_size = 32
  c.seq_len = 128
  c.log_every_steps = 10
  c.eval_every_steps = 100
  c.eval_steps = 8
  c.checkpoint_every_steps = 100
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 256
  c.model.d_ff = 1024
  c.model.max_len = 128
  c.data.max_predictions_per_seq = 20
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 30
  if 'simcse' in variants:
    c.objectives = {'contrastive': 1.0}
    c.data.mask_prob = 0.0
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.seq_len, c.model.max_len = 20, 8, 64, 64
    c.model.num_layers, c.model.d_model, c.model.d_ff, c.model.vocab_size = 2, 64, 256, 1024
    c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 5, 10, 2, 10
    c.data.max_predictions_per_seq, c.optimizer.warmup_steps = 10, 5
  return c
