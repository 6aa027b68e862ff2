"""Token classification, offline: fine-tune a pretrained bert_tiny to tag the words of standard-library source
lines as Python's own `tokenize` does (lm/data/tagging.py, `python_line_tags`): KEYWORD, NAME (a dotted name such
as os.path.join is one entity), NUMBER and STRING, in IOB2.

  python -m lm.main --config=configs/bert_tiny.py                        # pretrain (or use any bert_tiny workdir)
  python -m lm.main --config=configs/bert_tiny_tag.py --config.init_from=workdirs/bert_tiny
  python -m lm.tag --workdir=workdirs/bert_tiny_tag --best --text="x = os.path.join(a, 'b') if n > 2 else None"

The lines come from a quarter of the standard library's files (~26k lines); held out: the lines of 10% of those
files (lines also found in train are dropped). Every evaluation tags all held-out
lines and reports eval/entity_f1 (seqeval's entity-level F1), entity_precision and entity_recall, keeping the best
checkpoint by eval/entity_f1. The trivial baseline (each word's most frequent training tag) is
`lm.data.tagging.most_frequent_tag_baseline`; WORKSPACE.md ("Question answering and tagging") has the numbers.

Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS ('tiny' is the default); 'test' (the
bert_tiny:test shape, a few steps, for unit tests).
"""
from configs import bert_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """bert_tiny_tag[:preset][,test]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.tag(bert_tiny.get_config('test' if 'test' in variants else ''))
  c.data.source = 'embedded'
  c.data.eval_fraction = 0.1  # of the files the demo reads
  c.seq_len = 64  # sub-tokens per line (longer lines lose their last words, counted)
  c.num_train_steps = 400
  c.batch_size = 32
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'tiny')
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.eval_every_steps, c.checkpoint_every_steps = 8, 16, 8, 4
    c.data.max_documents, c.optimizer.warmup_steps = 400, 2
  return c
