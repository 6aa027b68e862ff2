"""BERT-base shape (12 layers, 12 heads, d_model 768, 110M parameters): MLM + NSP pretraining, for accelerators.

  python -m lm.main --config=configs/bert_base.py
  # a quick check of the shape on a CPU:
  python -m lm.main --config=configs/bert_base.py --config.num_train_steps=1 --config.batch_size=2 --config.seq_len=64 \
      --config.data.max_predictions_per_seq=10

Hyper-parameters follow Devlin et al. (2019): AdamW 1e-4, 10k warmup, linear decay, weight decay 0.01, dropout 0.1,
max_predictions_per_seq 80 at length 512. The embedded corpus (~3M tokens) is small for 110M parameters: point
`data` at a bigger corpus (text files, JSONL or tfds) for real use.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """bert_base. Vocabulary 30528 (BERT's 30522 rounded up to a multiple of 64), SentencePiece on the corpus."""
  del arg
  c = base.bert(base.get_config())
  c.num_train_steps = 1_000_000
  c.batch_size = 256
  c.seq_len = 512
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.eval_steps = 16
  c.checkpoint_every_steps = 10_000
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.d_model = 768
  c.model.d_ff = 3072
  c.model.vocab_size = 30528
  c.model.max_len = 512
  c.data.max_predictions_per_seq = 80
  c.optimizer.learning_rate = 1e-4
  c.optimizer.schedule = 'linear'
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.warmup_steps = 10_000
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  return c
