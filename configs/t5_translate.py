"""Machine translation with a pretrained T5 on WMT (tfds): `wmt14_de_en` (German -> English, T5's WMT EnDe task in
reverse), `wmt14_en_de`, `wmt16_ro_en`. Held-out BLEU (sacrebleu, T5's settings) on generation_eval_examples of
the test split at every evaluation.

  python -m lm.main --config=configs/t5_translate.py:wmt14_de_en --config.init_from=WORKDIR_OF_A_T5_SMALL_RUN

The dataset must be prepared offline first (`tfds build wmt14_translate/de-en --file_format=array_record
--data_dir=DIR` where there is internet, then --config.data.tfds_data_dir=DIR); lm does not download. A converted
Hugging Face T5 (lm.convert from_hf) works as init_from too. `,tiny` fine-tunes a t5_tiny-shaped run.
"""
from configs import t5_small, t5_tiny
from lm.config import base

# variant -> (tfds name, source key, target key, task prefix)
TASKS = {
    'wmt14_de_en': ('wmt14_translate/de-en', 'de', 'en', 'translate German to English: '),
    'wmt14_en_de': ('wmt14_translate/de-en', 'en', 'de', 'translate English to German: '),
    'wmt16_ro_en': ('wmt16_translate/ro-en', 'ro', 'en', 'translate Romanian to English: '),
}


def get_config(arg: str | None = None):
  """t5_translate:TASK[,tiny][,preset]."""
  variants = set(filter(None, (arg or 'wmt14_de_en').split(',')))
  tasks = variants & set(TASKS)
  if len(tasks) != 1:
    raise ValueError(f't5_translate: name one task of {sorted(TASKS)}, e.g. configs/t5_translate.py:wmt14_de_en')
  name, source_key, target_key, prefix = TASKS[tasks.pop()]
  return tfds_finetune(variants, name, (source_key, target_key, prefix), lengths=(256, 256), batch_size=128,
                       examples=512, best_metric='eval/bleu')


def tfds_finetune(variants: set, tfds_name: str, fields: tuple, *, lengths: tuple, batch_size: int, examples: int,
                  best_metric: str):
  """A seq2seq fine-tune of t5_small (or t5_tiny with 'tiny' in variants) on a prepared tfds dataset: fields =
  (source key, target key, task prefix), lengths = (source, target) tokens, `examples` decoded with 4 beams at each
  evaluation; the train split to learn, the test split to evaluate."""
  c = t5_tiny.get_config() if 'tiny' in variants else t5_small.get_config()
  c.data.task, c.data.source, c.data.tfds_name = 'seq2seq', 'tfds', tfds_name
  c.data.source_key, c.data.target_key, c.data.task_prefix = fields
  c.data.train_split, c.data.eval_split = 'train', 'test'
  c.seq_len, c.data.target_len = min(lengths[0], c.model.max_len), lengths[1]
  c.num_train_steps, c.batch_size, c.z_loss = 20_000, batch_size, 0.0
  c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 50, 2000, 16, 2000
  c.generation_eval_examples, c.generation_num_beams = examples, 4
  c.model.dropout = 0.1
  c.best_metric = best_metric
  presets = variants & set(base.FINETUNE_PRESETS)
  return base.finetune(c, presets.pop() if presets else 'fast')
