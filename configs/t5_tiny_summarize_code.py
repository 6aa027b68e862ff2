"""Code summarization, offline: fine-tune t5_tiny to write the first sentence of a standard-library function's
docstring from its code (docstring removed; lm/data/seq2seq.py, source 'embedded').

  python -m lm.main --config=configs/t5_tiny.py:reconstruct --workdir=workdirs/t5_tiny   # pretrain (~16 min)
  python -m lm.main --config=configs/t5_tiny_summarize_code.py:names --workdir=workdirs/t5_names \
      --config.init_from=workdirs/t5_tiny --config.data.code_packages=$PACKAGES      # copying warm-up (~17 min)
  python -m lm.main --config=configs/t5_tiny_summarize_code.py:names --workdir=workdirs/t5_names2 \
      --config.init_from=workdirs/t5_names --config.data.code_packages=$PACKAGES     # once more: copying sets in
  python -m lm.main --config=configs/t5_tiny_summarize_code.py --config.init_from=workdirs/t5_names2 \
      --config.data.code_packages=$PACKAGES --config.num_train_steps=1000 --config.eval_every_steps=500  # ~45 min
  python -m lm.generate --workdir=workdirs/t5_tiny_summarize_code --best --prompt="$(python -c 'import inspect, \
      textwrap; print(inspect.getsource(textwrap.dedent))')" --num_beams=4

$PACKAGES: absl,clu,etils,flax,grain,jax,ml_collections,numpy,optax,orbax,tensorflow,tensorflow_datasets,django,
torch,scipy,matplotlib,networkx,docutils,setuptools,pip,jinja2,werkzeug,pygments,requests,urllib3 (installed
packages whose functions join the TRAINING split: 30,812 pairs instead of the standard library's 3,443).

Held out: the functions of 10% of the standard library's files (by path). Each evaluation decodes all of them
(greedy) and reports eval/rouge1, rouge2, rougeLsum and bleu against the real first sentences, keeping the best
checkpoint by eval/rougeLsum in <workdir>/best; the baseline to beat is copying the function's name
(seq2seq.first_name_baseline: ROUGE-Lsum 18.5 on Python 3.11's 275). The `names` variant (data.code_target='name')
asks for each function's name as words instead, which its source holds: without it the small model never learns to
copy from its input and stays below that baseline (WORKSPACE.md "Encoder-decoder" has every run; this recipe:
ROUGE-Lsum 20.3, ROUGE-1 21.9, ROUGE-2 4.3 greedy, against the baseline's 18.5 / 18.9 / 3.2).
Without init_from it trains from scratch.
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
