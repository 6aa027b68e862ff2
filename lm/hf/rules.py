"""The mapping of one Hugging Face tensor onto lm parameters (a Rule), and the reshapes every layout uses.

A Rule names an HF tensor, the lm parameter(s) it becomes ('block_0/attn/query/kernel'), and the two reshapes. HF
`nn.Linear` weights are [out, in] (transposed here), GPT-2's `Conv1D` weights are already [in, out], attention
projections become lm's [d_model, heads, head_dim] / [heads, head_dim, d_model] kernels, and GPT-2's fused c_attn
splits into query, key and value.
"""
import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str
  ours: tuple  # lm parameter paths
  to_ours: Callable  # HF array -> tuple of lm arrays
  to_hf: Callable  # tuple of lm arrays -> HF array
  required: bool = True  # False: a head the checkpoint may lack (then lm keeps its fresh init)


def one(hf: str, ours: str, fwd=lambda a: a, back=lambda x: x, required: bool = True) -> Rule:
  return Rule(hf, (ours,), lambda a: (fwd(a),), lambda xs: back(xs[0]), required)


def linear(hf: str, ours: str, required: bool = True) -> list[Rule]:
  """nn.Linear [out, in] + bias -> Dense kernel [in, out] + bias."""
  return [one(f'{hf}.weight', f'{ours}/kernel', np.transpose, np.transpose, required),
          one(f'{hf}.bias', f'{ours}/bias', required=required)]


def norm(hf: str, ours: str, weight: str = 'weight', bias: str | None = 'bias', required: bool = True) -> list:
  rules = [one(f'{hf}.{weight}', f'{ours}/scale', required=required)]
  return rules + ([one(f'{hf}.{bias}', f'{ours}/bias', required=required)] if bias else [])


def heads_in(hf: str, ours: str, heads: int, head_dim: int, bias: bool) -> list[Rule]:
  """nn.Linear [heads*head_dim, d] -> HeadsDense kernel [d, heads, head_dim] (+ bias [heads, head_dim])."""
  rules = [one(f'{hf}.weight', f'{ours}/kernel', lambda a: a.T.reshape(a.shape[1], heads, head_dim),
                lambda x: x.reshape(x.shape[0], -1).T)]
  if bias:
    rules.append(one(f'{hf}.bias', f'{ours}/bias', lambda a: a.reshape(heads, head_dim), lambda x: x.reshape(-1)))
  return rules


def heads_out(hf: str, ours: str, heads: int, head_dim: int, bias: bool) -> list[Rule]:
  """nn.Linear [d, heads*head_dim] -> HeadsDense kernel [heads, head_dim, d] (+ bias [d])."""
  rules = [one(f'{hf}.weight', f'{ours}/kernel', lambda a: a.T.reshape(heads, head_dim, a.shape[0]),
                lambda x: x.reshape(-1, x.shape[-1]).T)]
  return rules + ([one(f'{hf}.bias', f'{ours}/bias')] if bias else [])
