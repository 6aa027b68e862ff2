"""Classification benchmarks for a pretrained BERT: GLUE SST-2, GLUE MNLI, IMDB reviews (tfds) or your own files.

  python -m lm.main --config=configs/bert_classify.py:sst2 --config.init_from=WORKDIR_OF_A_BERT_BASE_RUN
  python -m lm.main --config=configs/bert_classify.py:mnli --config.init_from=...
  python -m lm.main --config=configs/bert_classify.py:imdb --config.init_from=...
  python -m lm.main --config=configs/bert_classify.py:files --config.init_from=... \
      --config.data.path=train.jsonl --config.data.eval_path=dev.jsonl   # or .csv / .tsv (data.source=csv)

The tfds datasets must be prepared offline first, as array_record (random access), e.g. on a machine with internet:
`tfds build glue/sst2 --file_format=array_record --data_dir=DIR`, then copy DIR and pass
--config.data.tfds_data_dir=DIR. Files hold `text` and `label` (integers, or strings mapped to ids in sorted
order); for sentence pairs add --config.data.text_b_key=text_b. Hyper-parameters follow the BERT paper's
fine-tuning: batch 32, LR 2e-5, 10% warmup, linear decay, 3 epochs of SST-2 (~6.3k steps), dropout 0.1, max length
128 (IMDB: 512). Add `,tiny` to fine-tune a bert_tiny-shaped run instead of bert_base.
"""
from configs import bert_base, bert_tiny
from lm.config import base

# variant -> (tfds name, text key, text_b key, eval split, train steps, seq_len)
TASKS = {
    'sst2': ('glue/sst2', 'sentence', '', 'validation', 6_300, 128),
    'mnli': ('glue/mnli', 'premise', 'hypothesis', 'validation_matched', 36_800, 128),
    'imdb': ('imdb_reviews', 'text', '', 'test', 2_400, 512),
    'files': ('', 'text', '', '', 3_000, 128),
}


def get_config(arg: str | None = None):
  """bert_classify:TASK[,tiny][,preset] with TASK in TASKS."""
  variants = set(filter(None, (arg or 'sst2').split(',')))
  tasks = variants & set(TASKS)
  if len(tasks) != 1:
    raise ValueError(f'bert_classify: name one task of {sorted(TASKS)}, e.g. configs/bert_classify.py:sst2')
  name, text_key, text_b_key, eval_split, steps, seq_len = TASKS[tasks.pop()]
  c = bert_tiny.get_config() if 'tiny' in variants else bert_base.get_config()
  c.data.task, c.objectives = 'classify', {'classify': 1.0}
  c.data.source = 'tfds' if name else 'jsonl'
  c.data.tfds_name, c.data.text_key, c.data.text_b_key, c.data.eval_split = name, text_key, text_b_key, eval_split
  c.data.train_split = 'train'
  c.num_train_steps, c.seq_len, c.batch_size = steps, min(seq_len, c.model.max_len), 32
  c.log_every_steps, c.eval_every_steps, c.eval_steps, c.checkpoint_every_steps = 50, 1000, 0, 1000
  c.best_metric = 'eval/accuracy'
  c.forgetting_every_steps = 1000
  presets = variants & (set(base.FINETUNE_PRESETS) | {'probe'})
  return base.finetune(c, presets.pop() if presets else 'base')
