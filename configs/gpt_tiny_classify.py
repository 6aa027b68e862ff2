"""Fine-tune a pretrained gpt_tiny as a classifier (head on the last token) on the offline STDLIB_PACKAGES task.

  python -m lm.main --config=configs/gpt_tiny.py
  python -m lm.main --config=configs/gpt_tiny_classify.py --config.init_from=workdirs/gpt_tiny

The same task, metrics and strategies as configs/bert_tiny_finetune.py (see there); the decoder reads its own
`a </s>` sequence causally, and the class head sits on the hidden state of the closing </s>.
Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS ('tiny' is the default) or 'probe';
'test' (the gpt_tiny:test shape, a few steps, for unit tests).
"""
from configs import gpt_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny_classify[:preset][,test]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.classify(gpt_tiny.get_config('test' if 'test' in variants else ''))
  c.num_train_steps = 300
  c.batch_size = 16
  c.eval_every_steps = 50
  c.checkpoint_every_steps = 100
  c.forgetting_every_steps = 100
  c.num_samples = 0
  presets = variants & (set(base.FINETUNE_PRESETS) | {'probe'})
  base.finetune(c, presets.pop() if presets else 'tiny')
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.eval_every_steps, c.checkpoint_every_steps = 20, 8, 10, 10
    c.forgetting_every_steps, c.forgetting_eval_steps, c.optimizer.warmup_steps = 10, 2, 2
  return c
