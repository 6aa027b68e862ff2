"""Abstractive summarization with a pretrained T5: CNN / Daily Mail (tfds `cnn_dailymail`, article -> highlights),
prefix 'summarize: ', 512 source tokens and 128 summary tokens; held-out ROUGE-1/2/Lsum (rouge-score, T5's
settings) on generation_eval_examples of the test split at every evaluation.

  python -m lm.main --config=configs/t5_summarize.py:cnn_dailymail --config.init_from=WORKDIR_OF_A_T5_SMALL_RUN

Prepare the dataset offline first (`tfds build cnn_dailymail --file_format=array_record --data_dir=DIR`, then
--config.data.tfds_data_dir=DIR); lm does not download. `,tiny` fine-tunes a t5_tiny-shaped run.
"""
from configs import t5_translate


def get_config(arg: str | None = None):
  """t5_summarize:cnn_dailymail[,tiny][,preset]."""
  variants = set(filter(None, (arg or 'cnn_dailymail').split(',')))
  if 'cnn_dailymail' not in variants:
    raise ValueError('t5_summarize: the task is cnn_dailymail, e.g. configs/t5_summarize.py:cnn_dailymail')
  return t5_translate.tfds_finetune(variants, 'cnn_dailymail', ('article', 'highlights', 'summarize: '),
                                    lengths=(512, 128), batch_size=64, examples=256, best_metric='eval/rougeLsum')
