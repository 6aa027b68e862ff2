"""Named-entity recognition on CoNLL-2003 for a pretrained BERT (tfds conll2003: `tokens`, `ner` in IOB2), or on
your own jsonl of `tokens` and `tags`.

  python -m lm.main --config=configs/bert_conll.py --config.init_from=WORKDIR_OF_A_BERT_BASE_RUN
  python -m lm.main --config=configs/bert_conll.py:files --config.init_from=... \
      --config.data.path=train.jsonl --config.data.eval_path=dev.jsonl
  python -m lm.tag --workdir=workdirs/bert_conll --best --text="EU rejects German call to boycott British lamb ."

The tfds dataset must be prepared offline first as array_record (`tfds build conll2003 --file_format=array_record
--data_dir=DIR` on a machine with internet; copy DIR, pass --config.data.tfds_data_dir=DIR). Hyper-parameters as in
Hugging Face's token-classification example: batch 32, LR 5e-5, 10% warmup, linear decay, 3 epochs (~14k
sentences, ~1.3k steps), length 128, labels on first sub-tokens. Reports seqeval's eval/entity_f1 on the
validation split. Add `,tiny` to fine-tune a bert_tiny-shaped run instead of bert_base.
"""
from configs import bert_base, bert_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """bert_conll[:files][,tiny]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = base.tag(bert_tiny.get_config() if 'tiny' in variants else bert_base.get_config())
  if 'files' in variants:
    c.data.source = 'jsonl'
  else:
    c.data.source, c.data.tfds_name, c.data.train_split, c.data.eval_split = 'tfds', 'conll2003', 'train', 'validation'
    c.data.text_key, c.data.label_key = 'tokens', 'ner'
  c.num_train_steps, c.batch_size, c.seq_len = 1_300, 32, 128
  c.model.dropout = 0.1
  c.eval_every_steps = c.checkpoint_every_steps = 400
  base.finetune(c, 'fast')
  c.optimizer.learning_rate = 5e-5
  return c
