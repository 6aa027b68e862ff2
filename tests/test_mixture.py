"""data.mixture: several pretraining sources sampled by weight (lm/data/mixture.py), exact proportions, the same
global batches for any process count, per-source eval metrics; bad entries are one line naming the key."""
import ml_collections
import numpy as np
import pytest

from lm.config import validation
from lm.data import mixture, packing, pipeline
from lm.errors import ConfigError

from runs import read_metrics


def _rows(low: int, count: int, seq_len: int = 8) -> packing.PackedSequences:
  """`count` rows whose tokens all lie in [low, low + 100): the source of a row is readable from its tokens."""
  tokens = (np.arange(count * seq_len + 1) % 100 + low).astype(np.uint16)
  return packing.PackedSequences(tokens, np.array([0]), seq_len)


def test_sources_are_drawn_by_weight_within_1_percent_and_the_same_for_any_process_count(tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.batch_size = 8
  rows = mixture.MixedRows(['code', 'docs', 'web'], [0.2, 0.1, 0.7], [_rows(100, 300), _rows(200, 50), _rows(300, 900)])
  iterator = pipeline.train_iterator(config, rows, 0, 1)
  sources = np.concatenate([next(iterator)['inputs'][:, 0] // 100 for _ in range(1250)])  # 10k rows
  shares = np.bincount(sources, minlength=4)[1:] / len(sources)
  np.testing.assert_allclose(shares, [0.2, 0.1, 0.7], atol=0.01)
  whole = [next(iterator)['inputs'] for _ in range(2)]  # steps 1251, 1252 of one process
  halves = [pipeline.train_iterator(config, rows, p, 2, start_step=1250) for p in range(2)]
  for step in range(2):
    both = np.concatenate([next(h)['inputs'] for h in halves])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, whole[step].tolist()))


@pytest.mark.parametrize('entry, needle', [
    ({'weight': 0}, 'data.mixture.web.weight=0: give each source a weight > 0'),
    ({'weight': 1, 'seq_len': 3}, "data.mixture.web: ['seq_len'] cannot differ per source"),
    ({'weight': 1, 'packing': 'concat'}, "data.mixture.web: ['packing'] cannot differ per source"),
])
def test_a_bad_mixture_entry_is_one_line(tiny_config, entry, needle):
  config = tiny_config.copy_and_resolve_references()
  config.data.mixture = ml_collections.ConfigDict({'web': entry})
  with pytest.raises(ConfigError, match=r'^' + needle.replace('[', r'\[').replace(']', r'\]')):
    validation.validate(config)


@pytest.mark.slow
def test_a_mixture_trains_and_reports_every_source(tiny_config, tiny_data, tmp_path):
  """gpt_tiny:test on the embedded corpus (0.8) and the SFT demo's responses as plain text (0.2), in-process."""
  from lm.training import loop
  config = tiny_config.copy_and_resolve_references()
  config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps, config.num_samples = 4, 4, 4, 0
  config.data.mixture = ml_collections.ConfigDict({
      'stdlib': {'weight': 0.8},
      'answers': {'weight': 0.2, 'source': 'jsonl', 'path': 'lm/data/sft_demo.jsonl', 'text_key': 'output',
                  'eval_fraction': 0.2}})
  validation.validate(config)
  trainer = loop.Trainer(config, str(tmp_path / 'wd'))
  assert trainer.tokenizer.fingerprint == tiny_data[0].fingerprint  # trained on the heaviest source, as alone
  trainer.train()
  last = read_metrics(str(tmp_path / 'wd'))[-1]
  for prefix in ('eval/', 'eval/stdlib/', 'eval/answers/'):
    assert np.isfinite(last[f'{prefix}loss']) and f'{prefix}perplexity' in last, sorted(last)
  assert min(last['eval/stdlib/loss'], last['eval/answers/loss']) <= last['eval/loss']
  assert last['eval/loss'] <= max(last['eval/stdlib/loss'], last['eval/answers/loss'])
