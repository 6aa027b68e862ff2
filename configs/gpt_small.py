"""GPT-2 small shape (12 layers, 12 heads, d_model 768, 124M parameters) on the embedded corpus.

  python -m lm.main --config=configs/gpt_small.py
  # a quick check of the shape on a CPU:
  python -m lm.main --config=configs/gpt_small.py --config.num_train_steps=1 --config.batch_size=2 --config.seq_len=64

Made for an accelerator: the defaults (batch 64 x 1024 tokens) take minutes per step on a CPU. The embedded corpus
(~3.6M tokens) is small for 124M parameters: point `data` at a bigger corpus (text files, JSONL or tfds) for real use.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_small (GPT-2 124M shape). The vocabulary is a SentencePiece one trained on the corpus, not GPT-2's BPE."""
  del arg
  c = base.get_config()
  c.num_train_steps = 10000
  c.batch_size = 64
  c.seq_len = 1024
  c.log_every_steps = 10
  c.eval_every_steps = 500
  c.eval_steps = 16
  c.checkpoint_every_steps = 1000
  c.num_samples = 3
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.d_model = 768
  c.model.d_ff = 3072
  c.model.vocab_size = 50304  # GPT-2's 50257 rounded up to a multiple of 64 (as nanoGPT): 124M parameters
  c.model.max_len = 1024
  c.model.dropout = 0.0
  c.optimizer.learning_rate = 6e-4
  c.optimizer.warmup_steps = 500
  c.optimizer.min_lr_ratio = 0.1
  return c
