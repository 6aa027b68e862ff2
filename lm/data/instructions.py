"""Instruction tuning (SFT) data: Alpaca-format records, THE prompt template, and examples with a response-only loss.

A record is a JSON object with `instruction`, optional `input`, and `output`. `format_prompt` is the one template:
training puts the response after it, and generation (lm.generate, end-of-run samples) starts from it.

  records = instructions.get_records(config.data, 'train')   # data.source 'embedded' = DEMO_FILE, or 'jsonl'
  examples = instructions.InstructionExamples(records, tokenizer, config.seq_len)

The demo set DEMO_FILE (120 records on Python and its standard library, written for this repo) is what the offline
SFT config trains on; eval holds out data.eval_fraction of the records by a hash of 'file:line'.
"""
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from lm.data import sources, tokenizer as tokenizer_lib
from lm.errors import DataError

DEMO_FILE = os.path.join(os.path.dirname(__file__), 'sft_demo.jsonl')
FIELDS = ('instruction', 'input', 'output')


def format_prompt(instruction: str, input_text: str = '') -> str:
  """The prompt of one instruction; the model's answer follows it directly."""
  prompt = f'### Instruction:\n{instruction.strip()}\n\n'
  if input_text.strip():
    prompt += f'### Input:\n{input_text.strip()}\n\n'
  return prompt + '### Response:\n'


class Records(Sequence):
  """(prompt, response) pairs of one split, with a fingerprint of the files and the selection."""

  def __init__(self, pairs: list[tuple[str, str]], fingerprint: str):
    self._pairs, self.fingerprint = pairs, fingerprint

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, i):
    return self._pairs[i]


def get_records(data_cfg: ml_collections.ConfigDict, split: str) -> Records:
  """Records of `split`: DEMO_FILE for source 'embedded', data.path for 'jsonl' (data.eval_path for eval if set)."""
  path, key = (DEMO_FILE, 'data.path') if data_cfg.source == 'embedded' else (data_cfg.path, 'data.path')
  held_out = not (data_cfg.eval_path and data_cfg.source == 'jsonl')
  if split == 'eval' and not held_out:
    path, key = data_cfg.eval_path, 'data.eval_path'
  paths = sources.expand_paths(path, 'jsonl', key)
  pairs = []
  demo_root = os.path.dirname(DEMO_FILE) if data_cfg.source == 'embedded' else None
  for record_id, record in sources.read_jsonl(paths, {}, id_root=demo_root):
    if not isinstance(record, dict) or not all(isinstance(record.get(f, ''), str) for f in FIELDS) or any(
        f not in record for f in ('instruction', 'output')):
      raise DataError(f'{key}: {record_id} is not an Alpaca record (string fields instruction, input (optional), '
                      'output); fix that line')
    if held_out and sources.is_eval_document(record_id, data_cfg.eval_fraction) != (split == 'eval'):
      continue
    pairs.append((format_prompt(str(record['instruction']), str(record.get('input', ''))), str(record['output'])))
  if data_cfg.max_documents:
    pairs = pairs[:data_cfg.max_documents]
  if not pairs:
    raise DataError(f'{key}: the {split} split has no instruction records; check the files or data.eval_fraction')
  fingerprint = sources.sha256(sources.files_fingerprint('sft', paths), split, data_cfg.eval_fraction, len(pairs))
  return Records(pairs, fingerprint)


class InstructionExamples(Sequence):
  """Rows for the clm objective: prompt + response + eos, cut to seq_len + 1 tokens and padded.

  `targets[t]` is the token after `inputs[t]`; `weights[t]` is 1 exactly where that target is a response token
  (or the closing eos), so the loss covers the response only. `segment_ids` 1 = token, 0 = padding.
  """

  def __init__(self, records: Records, tokenizer: tokenizer_lib.Tokenizer, seq_len: int):
    self._records, self._tokenizer, self._seq_len = records, tokenizer, seq_len

  def __len__(self) -> int:
    return len(self._records)

  def prompt(self, i: int) -> str:
    """The formatted prompt of record i (what generation starts from)."""
    return self._records[i][0]

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    prompt, response = self._records[i]
    prompt_ids = self._tokenizer.encode(prompt)
    ids = (prompt_ids + self._tokenizer.encode(response) + [self._tokenizer.eos_id])[:self._seq_len + 1]
    is_response = np.arange(1, len(ids)) >= len(prompt_ids)  # per target position
    pad = self._seq_len + 1 - len(ids)
    ids = np.asarray(ids + [self._tokenizer.pad_id] * pad, np.int32)
    n = len(is_response)
    weights = np.zeros(self._seq_len, np.float32)
    weights[:n] = is_response
    segment_ids = np.zeros(self._seq_len, np.int32)
    segment_ids[:n] = 1
    return {'inputs': ids[:-1], 'targets': ids[1:], 'weights': weights, 'segment_ids': segment_ids,
            'positions': np.arange(self._seq_len, dtype=np.int32)}
