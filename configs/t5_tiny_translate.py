"""Translation, offline: English -> German (or :fr) user-interface messages of Django's gettext catalogs, a real
parallel corpus that a PyPI package ships (`pip install django`, a test/demo extra; lm/data/seq2seq.py, source
'gettext': every .mo of conf/locale/<lang> and contrib/*/locale/<lang>, about 780 pairs per language).

  python -m lm.main --config=configs/t5_tiny.py                                   # pretrain (span corruption)
  python -m lm.main --config=configs/t5_tiny_translate.py --config.init_from=workdirs/t5_tiny
  python -m lm.generate --workdir=workdirs/t5_tiny_translate --prompt="Enter a valid date." --num_beams=4

Held out: 10% of the messages (by a hash of the English text). Each evaluation decodes them and reports eval/bleu
(sacrebleu, T5's settings) and eval/rouge*; the baseline is copying the English source. Without init_from it trains
from scratch with a tokenizer of its own pairs.
"""
from configs import t5_tiny
from lm.config import base
from lm.data import seq2seq


def get_config(arg: str | None = None):
  """t5_tiny_translate[:de|fr][,preset]."""
  variants = set(filter(None, (arg or '').split(',')))
  language = 'fr' if 'fr' in variants else 'de'
  c = t5_tiny.get_config()
  c.data.task, c.data.source = 'seq2seq', 'gettext'
  c.data.path = ','.join(seq2seq.django_catalogs(language))
  c.data.task_prefix = f'translate English to {dict(de="German", fr="French")[language]}: '
  c.data.eval_fraction = 0.1  # of the messages
  c.seq_len = 64
  c.data.target_len = 64
  c.num_train_steps = 600
  c.batch_size = 16
  c.eval_every_steps = 200
  c.eval_steps = 0
  c.checkpoint_every_steps = 200
  c.generation_eval_examples = 84  # the whole held-out split
  c.best_metric = 'eval/bleu'
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'tiny')
  if not variants & set(base.FINETUNE_PRESETS):
    c.optimizer.learning_rate = 3e-3  # Adafactor (relative steps) on a few-million-parameter model
  return c
