"""A 6.9B-parameter GPT (32 layers, d_model 4096, 32 heads, d_ff 16384) for v5p-128 (64 chips) or larger.

  python -m lm.aot --config=configs/gpt_7b.py --topology=v5p-128         # fits? (any machine, needs libtpu)
  python -m launch.tpu run --name=lm-7b --zone=us-east5-a --accelerator=v5p-128 -- --config=configs/gpt_7b.py

Fully sharded parameters and Adam moments (mesh.fsdp=-1), bf16 compute on f32 master weights, scanned blocks with
full remat (only each block's input is kept for the backward pass). 512 x 2048 tokens (1M) per step.
`:v5p32` fits the same model on 16 chips with 128 x 2048 tokens per step. Point `data` at a real corpus.
"""
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_7b; `:v5p32` for a 16-chip slice."""
  c = base.get_config()
  c.num_train_steps = 100000
  c.batch_size = 512
  c.seq_len = 2048
  c.log_every_steps = 10
  c.eval_every_steps = 1000
  c.eval_steps = 8
  c.checkpoint_every_steps = 500
  c.num_samples = 3
  c.model.num_layers = 32
  c.model.num_heads = 32
  c.model.d_model = 4096
  c.model.d_ff = 16384
  c.model.vocab_size = 50304
  c.model.max_len = 2048
  c.model.dropout = 0.0
  c.model.dtype = 'bfloat16'
  c.model.scan_layers = True
  c.model.remat = 'full'
  c.optimizer.learning_rate = 1.5e-4
  c.optimizer.warmup_steps = 2000
  c.optimizer.min_lr_ratio = 0.1
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  if arg == 'v5p32':
    c.batch_size = 128
  return c
