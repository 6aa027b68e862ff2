"""Instruction-tune a pretrained gpt_tiny on the Alpaca-format demo set (lm/data/sft_demo.jsonl, 120 records).

  python -m lm.main --config=configs/gpt_tiny.py                        # pretrain (or use any gpt_tiny workdir)
  python -m lm.main --config=configs/gpt_tiny_sft.py --config.init_from=workdirs/gpt_tiny
  # your own data: --config.data.source=jsonl --config.data.path=train.jsonl [--config.data.eval_path=dev.jsonl]

Each record becomes `format_prompt(instruction, input)` + output + eos (lm/data/instructions.py); the loss covers
the response tokens only. eval/clm_loss and eval/perplexity are over the responses of the held-out records; the
run ends with samples from held-out prompts. eval/pretrain_loss tracks gpt_tiny's LM loss on its own eval data.

Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS; 'lora' (rank-8 LoRA adapters on the
attention projections, the base frozen, at 'tiny''s 1e-3 unless a preset is given: LoRA trains far fewer weights
and takes a larger step). 'fast' (1e-4, the default) keeps improving the held-out
loss for all 150 steps and forgets little; 'tiny' (1e-3) memorises the 102 training records and overfits after ~25.
There is no ':test' shape: the
64 positions of gpt_tiny:test cannot hold a prompt and its response; tests shorten this config instead.
"""
from configs import gpt_tiny
from lm.config import base


def get_config(arg: str | None = None):
  """gpt_tiny_sft[:preset][,lora]."""
  variants = set(filter(None, (arg or '').split(',')))
  c = gpt_tiny.get_config()
  c.data.task = 'sft'
  c.data.eval_fraction = 0.15  # of the records
  c.num_train_steps = 150
  c.batch_size = 16
  c.eval_every_steps = 25
  c.eval_steps = 0  # every held-out record
  c.checkpoint_every_steps = 50
  c.best_metric = 'eval/clm_loss'
  c.forgetting_every_steps = 50
  c.num_samples = 3
  c.sample_max_new_tokens = 96
  c.sample_temperature = 0.0  # greedy: the answer the model rates best
  presets = variants & set(base.FINETUNE_PRESETS)
  base.finetune(c, presets.pop() if presets else 'tiny' if 'lora' in variants else 'fast')
  if 'lora' in variants:
    c.model.lora_rank, c.model.lora_alpha = 8, 16.0
  return c
