"""A 1.3B-parameter GPT (24 layers, d_model 2048, 16 heads) for a TPU slice such as v5p-32 (16 chips).

  python -m lm.aot --config=configs/gpt_1b.py --topology=v5p-32          # fits? (any machine, needs libtpu)
  python -m launch.tpu run --name=lm-1b --zone=us-east5-a --accelerator=v5p-32 -- --config=configs/gpt_1b.py

Parameters and Adam moments are fully sharded over every chip (mesh.fsdp=-1), bf16 compute on f32 master weights,
scanned blocks with dot-saving remat. 256 x 2048 tokens (0.5M) per step. Point `data` at a corpus of billions of
tokens (text files, JSONL or a prepared tfds dataset); the embedded corpus is a smoke test at this size.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_1b; `:v5p128` spreads the same run over 64 chips with a larger batch."""
  c = base.get_config()
  c.num_train_steps = 50000
  c.batch_size = 256
  c.seq_len = 2048
  c.log_every_steps = 20
  c.eval_every_steps = 1000
  c.eval_steps = 16
  c.checkpoint_every_steps = 1000
  c.num_samples = 3
  c.model.num_layers = 24
  c.model.num_heads = 16
  c.model.d_model = 2048
  c.model.d_ff = 8192
  c.model.vocab_size = 50304
  c.model.max_len = 2048
  c.model.dropout = 0.0
  c.model.dtype = 'bfloat16'
  c.model.scan_layers = True
  c.model.remat = 'dots'
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 2000
  c.optimizer.min_lr_ratio = 0.1
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  if arg == 'v5p128':
    c.batch_size = 512
  return c
