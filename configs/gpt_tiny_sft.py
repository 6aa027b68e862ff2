"""Instruction-tune a pretrained gpt_tiny on the Alpaca-format demo set (lm/data/sft_demo.jsonl, 120 records).

  python -m lm.main --config=configs/gpt_tiny.py                        # pretrain (or use any gpt_tiny workdir)
  python -m lm.main --config=configs/gpt_tiny_sft.py --config.init_from=workdirs/gpt_tiny
  # your own data: --config.data.source=jsonl --config.data.path=train.jsonl [--config.data.eval_path=dev.jsonl]

Each record becomes `format_prompt(instruction, input)` + output + eos (lm/data/instructions.py); the loss covers
the response tokens only. eval/clm_loss and eval/perplexity are over the responses of the held-out records; the
run ends with samples from held-out prompts. eval/pretrain_loss tracks gpt_tiny's LM loss on its own eval data.

Variants (comma-separated): a learning-rate preset of base.FINETUNE_PRESETS, or 'lora'. 'fast' (1e-4, the
default) keeps improving the held-out loss for ~100 steps; 'tiny' (1e-3) memorises the 102 training records and
overfits after ~25. 'lora': rank-8 LoRA adapters (alpha 16) on the attention projections, the base frozen, at 5e-4
unless a preset is given (1.2% of the parameters train, so they take a larger step): held-out loss within 4% of
full fine-tuning's, with less forgetting (WORKSPACE.md, "Open models and LoRA").
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
  preset = next(iter(variants & set(base.FINETUNE_PRESETS)), None)
  base.finetune(c, preset or 'fast')
  if 'lora' in variants:
    c.model.lora_rank, c.model.lora_alpha = 8, 16.0
    if preset is None:
      c.optimizer.learning_rate = 5e-4
  return c
