"""A LoRA run's adapters in PEFT's layout: adapter_model.safetensors + adapter_config.json, which
`peft.PeftModel.from_pretrained(<the converted base model>, DIR)` loads.

PEFT's lora_A.weight is [r, in] and lora_B.weight [out, r] of the HF module (nn.Linear, or GPT-2's Conv1D with
fan_in_fan_out). lm's A [*in, r] flattens to the HF input order directly (every layout keeps lm's head-major
order). B goes through the layout's own tensor rule: the rule is linear, so feeding it lm kernels whose first r
input rows hold B (zeros elsewhere) yields B in HF's output order — the fused projections too (GPT-2's c_attn,
BLOOM's query_key_value), whose n adapted parts stack into one adapter of rank n·r and alpha n·alpha, so that
alpha / r is unchanged (PEFT's rank_pattern / alpha_pattern). Every exported adapter is checked: B·A in HF's layout
equals the rule applied to lm's own A·B.
"""
import numpy as np

from lm.errors import ConfigError
from lm.hf import rules as rules_lib

CONFIG_FILE = 'adapter_config.json'
TENSORS_FILE = 'adapter_model.safetensors'
_PREFIX = 'base_model.model.'  # PEFT's tensor names: the HF model wrapped by PeftModel and LoraModel


def _kernel_with_rows(shape: tuple, rows: np.ndarray) -> np.ndarray:
  """A zero lm kernel of `shape` [*in, *out] whose first len(rows) flattened input rows are `rows` [r, *out]."""
  kernel = np.zeros(shape, np.float32)
  kernel.reshape(-1, *rows.shape[1:])[:len(rows)] = rows
  return kernel


def _adapter(flat: dict, kernel_path: str) -> tuple | None:
  """(lora_a, lora_b) beside the lm kernel at `kernel_path`, or None when it has no adapter."""
  module = kernel_path.removesuffix('/kernel')
  return (flat[f'{module}/lora_a'], flat[f'{module}/lora_b']) if f'{module}/lora_a' in flat else None


def fused_adapter(rule: rules_lib.Rule, flat: dict, conv1d: bool) -> tuple[np.ndarray, np.ndarray, int]:
  """(lora_A [n·r, in], lora_B [out, n·r], n) of the n adapted lm kernels that the HF weight of `rule` joins."""
  a_rows, b_cols = [], []
  adapted = [p for p in rule.ours if _adapter(flat, p)]
  for path in adapted:
    a, b = _adapter(flat, path)
    rank = a.shape[-1]
    a_rows.append(a.reshape(-1, rank).T)
    parts = tuple(_kernel_with_rows(flat[p].shape, b) if p == path else np.zeros(flat[p].shape, np.float32)
                  for p in rule.ours)
    weight = rule.to_hf(parts)
    b_cols.append(weight[:rank].T if conv1d else weight[:, :rank])
  return np.concatenate(a_rows), np.concatenate(b_cols, axis=1), len(adapted)


def _check(rule: rules_lib.Rule, flat: dict, a: np.ndarray, b: np.ndarray, conv1d: bool) -> None:
  """ConfigError unless B·A is, in HF's layout, what the rule makes of lm's A·B (per part, zeros where none)."""
  parts = tuple(np.tensordot(*_adapter(flat, p), axes=1) if _adapter(flat, p) else np.zeros(flat[p].shape, np.float32)
                for p in rule.ours)
  expected = rule.to_hf(parts)
  ours = (b @ a).T if conv1d else b @ a
  if not np.allclose(ours, expected, atol=1e-6 * max(1.0, float(np.abs(expected).max()))):
    raise ConfigError(f'to_peft: the adapter of {rule.hf} does not map onto PEFT\'s layout exactly; not exported')


def export(flat: dict, tensor_rules: list, model_cfg, conv1d: bool, base: str) -> tuple[dict, dict]:
  """({PEFT tensor name: array}, adapter_config.json) of every adapted kernel; `flat` holds the run's unstacked
  parameters ('block_0/attn/query/lora_a', ...), `base` names the base model (init_from)."""
  tensors, ranks, alphas = {}, {}, {}
  for rule in tensor_rules:
    if not any(_adapter(flat, p) for p in rule.ours):
      continue
    a, b, parts = fused_adapter(rule, flat, conv1d)
    _check(rule, flat, a, b, conv1d)
    module = rule.hf.removesuffix('.weight')
    tensors[f'{_PREFIX}{module}.lora_A.weight'] = np.ascontiguousarray(a)
    tensors[f'{_PREFIX}{module}.lora_B.weight'] = np.ascontiguousarray(b)
    if parts > 1:
      ranks[module], alphas[module] = parts * model_cfg.lora_rank, parts * model_cfg.lora_alpha
  if not tensors:
    raise ConfigError('to_peft: no adapted kernel of this run has an HF module; nothing to export')
  modules = sorted(name.removeprefix(_PREFIX).removesuffix('.lora_A.weight') for name in tensors
                   if name.endswith('.lora_A.weight'))
  escape = lambda name: name.replace('.', r'\.')
  return tensors, {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': model_cfg.lora_rank,
                   'lora_alpha': model_cfg.lora_alpha, 'lora_dropout': model_cfg.lora_dropout, 'bias': 'none',
                   'target_modules': modules, 'rank_pattern': {escape(k): v for k, v in ranks.items()},
                   'alpha_pattern': {escape(k): v for k, v in alphas.items()}, 'fan_in_fan_out': conv1d,
                   'init_lora_weights': True, 'use_rslora': False, 'use_dora': False, 'modules_to_save': None,
                   'base_model_name_or_path': base, 'inference_mode': True}
