"""metrics.jsonl writer, FLOP counting, learning-rate schedule."""
import json

import numpy as np

from lm.config import base
from lm.perf import flops
from lm.store import writers
from lm.training import optim


def test_jsonl_merges_a_step_and_truncates_on_resume(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  writer = writers.JsonlWriter(path)
  writer.write_scalars(10, {'train/loss': 2.0})
  writer.write_scalars(10, {'eval/loss': 2.5})
  writer.write_scalars(20, {'train/loss': 1.5})
  writer.close()
  with open(path, 'a') as f:
    f.write('{"step": 30, "train/lo')  # torn by a crash
  lines = [json.loads(l) for l in open(path) if l.strip().endswith('}')]
  assert lines == [{'step': 10, 'train/loss': 2.0, 'eval/loss': 2.5}, {'step': 20, 'train/loss': 1.5}]
  writers.JsonlWriter(path).truncate_after(10)
  assert [json.loads(l)['step'] for l in open(path)] == [10]


def test_flops_per_token_follows_the_palm_convention():
  c = base.get_config()
  m, n = c.model, 1_000_000
  assert flops.flops_per_token(c, n) == 6 * (n - m.max_len * m.d_model) + 12 * m.num_layers * m.d_model * 256
  m.tie_embeddings = False
  assert flops.flops_per_token(c, n) == 6 * (n - (m.max_len + m.vocab_size) * m.d_model) + 12 * 4 * 256 * 256


def test_encoder_flops_count_the_mlm_head_only_where_it_runs():
  c = base.get_config()
  c.model.type, c.model.type_vocab_size, c.data.max_predictions_per_seq = 'bert', 2, 32
  m, n = c.model, 10_000_000
  body = n - (m.max_len + 2) * m.d_model
  head = m.vocab_size * m.d_model + m.d_model ** 2
  pooler = m.d_model ** 2 + 2 * m.d_model
  expected = 6 * (body - head * (1 - 32 / 256) - pooler * (1 - 1 / 256)) + 12 * 4 * 256 * 256
  assert np.isclose(flops.flops_per_token(c, n), expected)
  c.objectives = {'contrastive': 1.0}
  assert np.isclose(flops.flops_per_token(c, n), 2 * expected)  # two forward/backward passes


def test_schedule_warms_up_from_the_first_update_and_ends_at_the_minimum():
  c = base.get_config()
  c.optimizer.warmup_steps, c.num_train_steps = 10, 100
  lr = optim.learning_rate_schedule(c.optimizer, c.num_train_steps)
  peak = c.optimizer.learning_rate
  assert np.isclose(lr(0), peak / 10)  # update 1 (optax count 0) already learns
  assert np.isclose(lr(9), peak)
  assert np.isclose(lr(99), peak * c.optimizer.min_lr_ratio)


def test_weight_decay_only_on_kernels():
  params = {'block': {'fc': {'kernel': 1.0, 'bias': 1.0}, 'ln': {'scale': 1.0}}, 'embed': {'embedding': 1.0}}
  mask = optim.weight_decay_mask(params)
  assert mask == {'block': {'fc': {'kernel': True, 'bias': False}, 'ln': {'scale': False}},
                  'embed': {'embedding': False}}
