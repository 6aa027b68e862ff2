"""Corpus files real datasets come in: jsonl plain / .gz / .zst, text .gz, and parquet (lm/data/files.py, sources.py)
give the same documents, ids and splits; a missing column or file is one line naming the key."""
import gzip
import json

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lm.config import base
from lm.data import sources
from lm.errors import DataError


@pytest.fixture(scope='module')
def texts() -> list[str]:
  """60 real documents: the first stdlib modules, cut to 2 kB each."""
  root, ids = sources.stdlib_files()
  return [open(f'{root}/{rel}', encoding='utf-8', errors='replace').read()[:2000] for rel in ids[:60]]


def _data(source: str, path: str, **overrides) -> ml_collections.ConfigDict:
  data = base.get_config().data
  data.source, data.path, data.eval_fraction = source, path, 0.2
  data.update(overrides)
  return data


def _jsonl_bytes(texts: list[str]) -> bytes:
  return ''.join(json.dumps({'text': t, 'id': i}) + '\n' for i, t in enumerate(texts)).encode()


def test_compressed_jsonl_and_parquet_give_the_same_documents(texts, tmp_path):
  payload = _jsonl_bytes(texts)
  (tmp_path / 'a.jsonl').write_bytes(payload)
  (tmp_path / 'a.jsonl.gz').write_bytes(gzip.compress(payload))
  (tmp_path / 'a.jsonl.zst').write_bytes(zstandard.ZstdCompressor().compress(payload))
  table = pa.table({'id': list(range(len(texts))), 'text': texts})
  pq.write_table(table.slice(0, 35), tmp_path / 'p-0.parquet', row_group_size=10)  # several row groups and files
  pq.write_table(table.slice(35), tmp_path / 'p-1.parquet', row_group_size=10)
  everything = {'eval_fraction': 0.0}
  fingerprints = set()
  for source, path in (('jsonl', 'a.jsonl'), ('jsonl', 'a.jsonl.gz'), ('jsonl', 'a.jsonl.zst'),
                       ('parquet', 'p-*.parquet')):
    docs = sources.get_documents(_data(source, str(tmp_path / path), **everything), 'train')
    assert docs[:] == texts, path
    fingerprints.add(docs.fingerprint)
    train, eval_ = (sources.get_documents(_data(source, str(tmp_path / path)), split) for split in sources.SPLITS)
    assert 0 < len(eval_) < len(texts) // 2 and sorted(train[:] + eval_[:]) == sorted(texts)
  assert len(fingerprints) == 4
  parquet = sources.get_documents(_data('parquet', str(tmp_path / 'p-*.parquet'), **everything), 'train')
  assert [parquet[i] for i in reversed(range(len(parquet)))] == texts[::-1]  # random access across row groups
  assert parquet.doc_id(37) == f'{tmp_path}/p-1.parquet:0:2'


def test_gzipped_text_files_are_one_document_each(texts, tmp_path):
  for i, text in enumerate(texts[:5]):
    (tmp_path / f'{i}.txt.gz').write_bytes(gzip.compress(text.encode()))
  docs = sources.get_documents(_data('text', str(tmp_path / '*.txt.gz'), eval_fraction=0.0), 'train')
  assert docs[:] == texts[:5]


def test_a_parquet_file_without_the_text_column_is_one_line(texts, tmp_path):
  pq.write_table(pa.table({'content': texts[:3]}), tmp_path / 'x.parquet')
  with pytest.raises(DataError, match=r"^data.text_key: .*x.parquet has no column 'text' \(has \['content'\]\)"):
    sources.get_documents(_data('parquet', str(tmp_path / 'x.parquet')), 'train')
  with pytest.raises(DataError, match=r"^data.path: no file matches .*nothing-\*.parquet"):
    sources.get_documents(_data('parquet', str(tmp_path / 'nothing-*.parquet')), 'train')
