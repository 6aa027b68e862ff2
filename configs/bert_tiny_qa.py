"""Extractive question answering, offline: fine-tune a pretrained bert_tiny to answer "What does <function>
return?" from a context of standard-library docstrings (lm/data/qa.py, `docstring_questions`).

  python -m lm.main --config=configs/bert_tiny.py                        # pretrain (or use any bert_tiny workdir)
  python -m lm.main --config=configs/bert_tiny_qa.py --config.init_from=workdirs/bert_tiny
  python -m lm.answer --workdir=workdirs/bert_tiny_qa --best --question="What does json.dumps return?" \
      --context="json.dumps: Serialize obj to a JSON formatted str."

A context is the first docstring paragraphs of 4 consecutive documented functions of one module, one bullet each;
each function whose docstring starts 'Return(s) <answer>.' is asked about, <answer> being the gold span. Held out:
the questions of 20% of the files. Every evaluation answers all held-out questions (SQuAD's post-processing over
each question's windows) and reports eval/exact_match and eval/f1, keeping the best checkpoint by eval/f1. The
trivial baseline (answering with the context's first sentence) is `lm.data.qa.first_sentence_baseline`; WORKSPACE.md
("Question answering and tagging") has what each reaches.

Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS ('tiny' is the default); 'test' (the
bert_tiny:test shape, a few steps, for unit tests).
"""
from configs import bert_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """bert_tiny_qa[:preset][,test]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.qa(bert_tiny.get_config('test' if 'test' in variants else ''))
  c.data.source = 'embedded'
  c.data.eval_fraction = 0.2  # of the standard-library files
  c.data.max_query_len = 32  # 'What does <module.Class.method> return?' fits
  c.data.doc_stride = 32  # windows of 128 tokens overlap by this much
  c.num_train_steps = 400
  c.batch_size = 32
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'tiny')
  if 'test' in variants:
    c.num_train_steps, c.batch_size, c.eval_every_steps, c.checkpoint_every_steps = 8, 16, 8, 4
    c.data.max_query_len, c.data.doc_stride, c.optimizer.warmup_steps = 24, 8, 2
    c.data.max_documents = 120  # questions per split
  return c
