"""Abstractive summarization with a pretrained T5: CNN / Daily Mail (tfds `cnn_dailymail`, article -> highlights),
prefix 'summarize: ', 512 source tokens and 128 summary tokens; held-out ROUGE-1/2/Lsum (rouge-score, T5's
settings) on generation_eval_examples of the test split at every evaluation.

  python -m lm.main --config=configs/t5_summarize.py:cnn_dailymail --config.init_from=WORKDIR_OF_A_T5_SMALL_RUN

Prepare the dataset offline first (`tfds build cnn_dailymail --file_format=array_record --data_dir=DIR`, then
--config.data.tfds_data_dir=DIR); lm does not download. `,tiny` fine-tunes a t5_tiny-shaped run.
"""
from configs import t5_small, t5_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """t5_summarize:cnn_dailymail[,tiny][,preset]."""
  variants = set(filter(None, (arg or 'cnn_dailymail').split(',')))
  if 'cnn_dailymail' not in variants:
    raise ValueError('t5_summarize: the task is cnn_dailymail, e.g. configs/t5_summarize.py:cnn_dailymail')
  c = t5_tiny.get_config() if 'tiny' in variants else t5_small.get_config()
  c.data.task, c.data.source, c.data.tfds_name = 'seq2seq', 'tfds', 'cnn_dailymail'
  c.data.source_key, c.data.target_key, c.data.task_prefix = 'article', 'highlights', 'summarize: '
  c.data.train_split, c.data.eval_split = 'train', 'test'
  c.seq_len, c.data.target_len = min(512, c.model.max_len), 128
  c.num_train_steps, c.batch_size, c.z_loss = 20_000, 64, 0.0
  c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 50, 2000, 16, 2000
  c.generation_eval_examples, c.generation_num_beams = 256, 4
  c.model.dropout = 0.1
  c.best_metric = 'eval/rougeLsum'
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'fast')
  return c
