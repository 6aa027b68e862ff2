"""Extractive question answering on SQuAD for a pretrained BERT (tfds squad/v1.1, or v2.0 with unanswerable
questions), or on your own jsonl in SQuAD's fields.

  python -m lm.main --config=configs/bert_squad.py --config.init_from=WORKDIR_OF_A_BERT_BASE_RUN
  python -m lm.main --config=configs/bert_squad.py:v2 --config.init_from=...
  python -m lm.main --config=configs/bert_squad.py:files --config.init_from=... \
      --config.data.path=train.jsonl --config.data.eval_path=dev.jsonl

The tfds datasets must be prepared offline first as array_record, e.g. on a machine with internet:
`tfds build squad/v1.1 --file_format=array_record --data_dir=DIR`, then copy DIR and pass
--config.data.tfds_data_dir=DIR. Hyper-parameters follow the BERT paper's SQuAD fine-tuning: batch 32, LR 3e-5,
10% warmup, linear decay, 2 epochs (~88k questions, ~5.5k steps), length 384, stride 128, questions cut at 64 tokens,
answers up to 30 tokens; v2.0 adds the null answer (data.allow_null). Reports eval/exact_match and eval/f1 on the
whole dev set. Add `,tiny` to fine-tune a bert_tiny-shaped run (length 128) instead of bert_base.
"""
from configs import bert_base, bert_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """bert_squad[:v2 | :files][,tiny]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.qa(bert_tiny.get_config() if 'tiny' in variants else bert_base.get_config())
  if 'files' in variants:
    c.data.source = 'jsonl'
  else:
    c.data.source, c.data.train_split, c.data.eval_split = 'tfds', 'train', 'validation'
    c.data.tfds_name = 'squad/v2.0' if 'v2' in variants else 'squad/v1.1'
  c.data.allow_null = 'v2' in variants
  c.num_train_steps, c.batch_size = 5_500, 32
  c.seq_len = min(384, c.model.max_len)
  c.data.doc_stride = 128 if c.seq_len >= 384 else 32
  c.data.max_query_len = 64 if c.seq_len >= 384 else 32
  c.model.dropout = 0.1
  c.eval_every_steps = c.checkpoint_every_steps = 1_000
  base.finetune(c, 'base')
  c.optimizer.learning_rate = 3e-5
  return c
