"""Code summarization, offline: fine-tune t5_tiny to write the first sentence of a standard-library function's
docstring from its code (docstring removed; lm/data/seq2seq.py, source 'embedded').

  python -m lm.main --config=configs/t5_tiny.py:reconstruct --workdir=workdirs/t5_tiny   # pretrain (~16 min)
  python -m lm.main --config=configs/t5_tiny_summarize_code.py --config.init_from=workdirs/t5_tiny
  python -m lm.generate --workdir=workdirs/t5_tiny_summarize_code --best --prompt="$(python -c 'import inspect, \
      textwrap; print(inspect.getsource(textwrap.dedent))')" --num_beams=4

Held out: the functions of 10% of the files (by path). Each evaluation decodes all of them (greedy) and reports
eval/rouge1, rouge2, rougeLsum and bleu against the real first sentences, keeping the best checkpoint by
eval/rougeLsum in <workdir>/best; the baseline to beat is copying the function's name (seq2seq.first_name_baseline:
ROUGE-Lsum 18.5 on Python 3.11's 275). ~30 min on a 2-core VM; WORKSPACE.md ("Encoder-decoder") has what it reaches
(below the baseline so far: ROUGE-Lsum 16.9 at best, with --config.data.code_packages=absl,clu,etils,flax,grain,jax,
ml_collections,numpy,optax,orbax,tensorflow,tensorflow_datasets: the requirements' own functions as 15,901 train
pairs instead of 3,443). Without init_from it trains from scratch.
"""
from configs import t5_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """t5_tiny_summarize_code[:preset][,names]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = t5_tiny.get_config()
  c.data.task, c.data.source = 'seq2seq', 'embedded'
  c.data.task_prefix = 'summarize: '
  c.data.split_identifiers = True  # 'def get_terminal_size' -> 'def get terminal size': words a summary can reuse
  c.data.eval_fraction = 0.1  # of the standard-library files
  c.seq_len = 192  # source tokens (longer functions are cut, and counted)
  c.data.target_len = 32
  c.num_train_steps = 1200
  c.batch_size = 16
  c.eval_every_steps = 400
  c.eval_steps = 0  # every held-out pair
  c.checkpoint_every_steps = 400
  c.generation_eval_examples = 300  # every held-out function (275 on Python 3.11)
  c.best_metric = 'eval/rougeLsum'
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'tiny')
  if not variants & set(base.FINETUNE_PRESETS):
    c.optimizer.learning_rate = 3e-3  # Adafactor (relative steps) on a few-million-parameter model
  if 'names' in variants:  # the copying warm-up: write each function's name (as words) from its code
    c.data.code_target, c.data.task_prefix = 'name', 'name: '
    c.seq_len, c.data.target_len = 64, 8  # the name sits at the top of the source
    c.optimizer.learning_rate = 1e-2
  return c
