"""The token store (lm/data/store.py, store_builder.py, `lm.prepare`): sharded, parallel, resumable, deterministic,
read by memmap with the same rows as one token stream, and refused when it does not match the run."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lm.data import packing, sources, store, store_builder, tokenizer as tokenizer_lib
from lm.errors import DataError

from runs import REPO


def _files(root) -> dict[str, bytes]:
  """{relative path: bytes} of every file under root."""
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      out[os.path.relpath(path, root)] = open(path, 'rb').read()
  return out


@pytest.fixture(scope='module')
def small(tiny_config, tiny_data, tmp_path_factory):
  """gpt_tiny:test over the first 300 documents, with the session tokenizer, cut into shards of 40 documents."""
  path = str(tmp_path_factory.mktemp('tok') / 'tokenizer.model')
  tiny_data[0].save(path)
  config = tiny_config.copy_and_resolve_references()
  config.data.tokenizer, config.data.max_documents, config.data.store_shard_documents = path, 300, 40
  return config


def _with_store(config, root):
  config = config.copy_and_resolve_references()
  config.data.store = str(root)
  return config


def test_same_bytes_for_any_worker_count(small, tmp_path):
  one = store_builder.build(_with_store(small, tmp_path / 'one'))
  two = store_builder.build(_with_store(small, tmp_path / 'two'), workers=2)
  assert one.content == two.content and one.content['splits']['train']['shards'][0]['documents'] == 40
  assert len(one.content['splits']['train']['shards']) == 8  # 285 train documents of the first 300
  assert _files(tmp_path / 'one') == _files(tmp_path / 'two')
  again = store_builder.build(_with_store(small, tmp_path / 'one'))
  assert again.stats['shards'] == 0  # complete: nothing rewritten


def test_hosts_write_their_share_and_the_last_writes_the_manifest(small, tmp_path):
  config = _with_store(small, tmp_path / 's')
  first = store_builder.build(config, num_hosts=3, host_index=0)
  assert first.content is None and not (tmp_path / 's' / store.MANIFEST).exists()
  written = sorted(p.name for p in (tmp_path / 's' / 'train').glob('*.idx'))
  assert written == ['00000.idx', '00003.idx', '00006.idx']
  store_builder.build(config, num_hosts=3, host_index=2)
  last = store_builder.build(config, num_hosts=3, host_index=1)
  assert last.content is not None
  assert _files(tmp_path / 's') == _files(store_builder.build(_with_store(small, tmp_path / 'one')).root)


def test_sharded_stream_gives_the_rows_of_one_stream(small, tmp_path):
  built = store_builder.build(_with_store(small, tmp_path / 's'))
  tokens, starts = store.open_split(built.root, built.content, 'train')
  whole = np.concatenate([tokens.shard(k) for k in range(len(tokens.offsets) - 1)])
  whole_starts = np.asarray(starts)
  assert len(whole) == len(tokens) and whole_starts[0] == 0 and np.all(np.diff(whole_starts) > 0)
  sharded = packing.PackedSequences(tokens, starts, 64)
  single = packing.PackedSequences(whole, whole_starts, 64)
  boundaries = [int(o) // 64 for o in tokens.offsets[1:-1]]  # rows that straddle a shard boundary
  for i in sorted(set(boundaries + [0, 1, len(single) - 1] + list(range(0, len(single), 97)))):
    a, b = sharded[i], single[i]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), i


def test_a_store_of_another_tokenizer_is_refused(small, tmp_path):
  store_builder.build(_with_store(small, tmp_path / 's'))
  other = tokenizer_lib.train_tokenizer(
      [open(os.path.join(REPO, 'README.md')).read()],
      dict(tokenizer_lib._TRAIN_SETTINGS, vocab_size=600, model_type='bpe', input_sentence_size=1000, seed=0))
  other.save(tmp_path / 'other.model')
  config = _with_store(small, tmp_path / 's')
  config.data.tokenizer, config.model.vocab_size = str(tmp_path / "other.model"), 600
  with pytest.raises(DataError, match=r'^data.tokenizer: the store .* was made with another tokenizer'):
    store_builder.build(config)
  config = _with_store(small, tmp_path / 's')
  config.data.max_documents = 200
  with pytest.raises(DataError, match=r'^data.max_documents: the store .* was made with data.max_documents=300, this '
                                      'run has 200'):
    store_builder.build(config)


def _prepare_args(small, root) -> list[str]:
  return [sys.executable, '-m', 'lm.prepare', '--config=configs/gpt_tiny.py:test', f'--config.data.store={root}',
          f'--config.data.tokenizer={small.data.tokenizer}', '--config.data.max_documents=300',
          '--config.data.store_shard_documents=5']


@pytest.mark.slow
def test_kill_9_during_prepare_then_rerun_gives_the_same_bytes(small, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  reference = subprocess.run(_prepare_args(small, tmp_path / 'ref'), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
  assert reference.returncode == 0, reference.stderr[-2000:]
  assert json.loads(reference.stdout.splitlines()[-1])['complete']
  root = tmp_path / 'killed'
  process = subprocess.Popen(_prepare_args(small, root) + ['--workers=2'], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.time() + 120
  while len(list(root.glob('train/*.idx'))) < 10 and time.time() < deadline and process.poll() is None:
    time.sleep(0.05)
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  assert not (root / store.MANIFEST).exists(), 'the build finished before the kill; shrink the shards'
  rerun = subprocess.run(_prepare_args(small, root), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  result = json.loads(rerun.stdout.splitlines()[-1])
  assert result['complete'] and 0 < result['shards'] < 60
  assert _files(root) == _files(tmp_path / 'ref')


def test_prepare_refuses_a_task_without_documents(lm_cli, tmp_path):
  result = lm_cli('--config=configs/bert_tiny_finetune.py:test', f'--config.data.store={tmp_path / "s"}',
                  module='lm.prepare', timeout=120)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1 and "data.task='classify'" in errors[0], result.stderr[-2000:]
  assert not (tmp_path / 's').exists()


def test_training_reads_a_prepared_store_without_its_source(small, tmp_path):
  """pipeline.prepare on a complete data.store neither lists nor reads the corpus: here it no longer exists."""
  from lm.data import pipeline
  corpus = tmp_path / 'corpus.jsonl'
  root, ids = sources.stdlib_files()
  corpus.write_text(''.join(json.dumps({'text': open(f'{root}/{rel}').read()}) + '\n' for rel in ids[:80]))
  config = _with_store(small, tmp_path / 's')
  config.data.source, config.data.path, config.data.max_documents = 'jsonl', str(corpus), 0
  config.data.eval_fraction = 0.25  # of 80 documents split by a hash of their path: never none
  built = store_builder.build(config)
  corpus.unlink()
  tokenizer, train, eval_ = pipeline.prepare(config)
  assert tokenizer.fingerprint == built.tokenizer.fingerprint and len(train) > 0 and len(eval_) > 0
  assert train.num_tokens == built.content['splits']['train']['tokens']


def test_the_tokenizer_sample_is_every_kth_document_and_small_corpora_are_whole(small):
  docs = sources.get_documents(small.data, 'train')
  assert sources.sample(docs, 0) is docs and sources.sample(docs, 10**12) is docs
  total = sum(len(docs[i].encode()) for i in range(len(docs)))
  sampled = sources.sample(docs, total // 10)
  assert any(sampled[:] == docs[::stride] for stride in range(8, 13)), len(sampled)
  assert sampled.fingerprint != docs.fingerprint
