"""Fine-tune a pretrained bert_tiny to classify code: which stdlib package is a 12-line chunk from?

  python -m lm.main --config=configs/bert_tiny.py                       # pretrain (or use any bert_tiny workdir)
  python -m lm.main --config=configs/bert_tiny_finetune.py --config.init_from=workdirs/bert_tiny

The task (lm/data/classification.py, STDLIB_PACKAGES) is offline and real: 12-line chunks of the standard library's
asyncio, email, multiprocessing and xml packages, split by file, balanced, so chance is 0.25. It reports
eval/accuracy and eval/macro_f1 on the whole held-out split every 50 steps, keeps the best checkpoint by
eval/accuracy in <workdir>/best, and watches forgetting: eval/pretrain_loss is bert_tiny's MLM + NSP loss on its
own eval data.

Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS ('gentle', 'base', 'fast', 'tiny', the
default) or 'probe' (only the head trains); 'llrd' (layer-wise LR decay 0.8); 'freeze' (embeddings and the first
2 blocks frozen); 'test' (the bert_tiny:test shape, a few steps, for unit tests).
"""
from configs import bert_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """bert_tiny_finetune[:preset][,llrd][,freeze][,test]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.classify(bert_tiny.get_config('test' if 'test' in variants else ''))
  c.num_train_steps = 300
  c.batch_size = 32
  c.eval_every_steps = 50
  c.checkpoint_every_steps = 100
  c.forgetting_every_steps = 100
  presets = variants & (set(base.FINETUNE_PRESETS) | {'probe'})
  base.finetune(c, presets.pop() if presets else 'tiny')
  if 'llrd' in variants:
    c.optimizer.layer_decay = 0.8
  if 'freeze' in variants:
    c.optimizer.freeze_embeddings, c.optimizer.freeze_layers = True, 2
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.eval_every_steps, c.checkpoint_every_steps = 30, 16, 10, 10
    c.forgetting_every_steps, c.forgetting_eval_steps = 10, 2
    c.optimizer.warmup_steps = 3
  return c
