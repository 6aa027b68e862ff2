"""Corpus files wherever they are: local or remote (`gs://`, any scheme etils `epath` knows), plain or compressed
(`.gz`, `.zst`), matched by globs. What the text, jsonl and parquet sources read through."""
import gzip
import io
import os
from collections.abc import Iterator

from lm.errors import DataError

COMPRESSED = ('.gz', '.zst')


def is_remote(path: str) -> bool:
  """True for a URL-style path such as gs://bucket/x (a scheme before '://')."""
  head, sep, _ = path.partition('://')
  return bool(sep) and head.isidentifier()


def _epath(path: str):
  from etils import epath  # remote paths only: its gs:// backend loads on first use
  return epath.Path(path)


def _glob(pattern: str) -> list[str]:
  if not is_remote(pattern):
    import glob
    return sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
  scheme, _, rest = pattern.partition('://')
  bucket, _, inner = rest.partition('/')
  try:
    root = _epath(f'{scheme}://{bucket}')
    return sorted(os.fspath(p) for p in root.glob(inner) if p.is_file()) if any(c in inner for c in '*?[') \
        else ([pattern] if _epath(pattern).is_file() else [])
  except Exception as e:  # noqa: BLE001 (each backend raises its own: no credentials, no network, no bucket)
    raise DataError(f'data.path: cannot list {pattern!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); '
                    'check the bucket name, your credentials and network, or copy the files here') from e


def expand(path: str, kind: str, key: str = 'data.path') -> list[str]:
  """Files matched by the comma-separated globs in `path` (config key `key`), in order, each once."""
  patterns = [p.strip() for p in path.split(',') if p.strip()]
  if not patterns:
    raise DataError(f"{key} is empty; set --config.{key} to {kind} files (globs, comma-separated)")
  paths = []
  for pattern in patterns:
    matches = _glob(pattern)
    if not matches:
      raise DataError(f"{key}: no file matches {pattern!r}; set --config.{key} to existing {kind} files")
    paths += [p for p in matches if p not in paths]
  return paths


def stat(path: str) -> tuple[int, int]:
  """(size, modification time in ns) of a file, for fingerprints."""
  if not is_remote(path):
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns
  info = _epath(path).stat()
  return int(info.length), int(info.mtime * 1e9) if info.mtime else 0


def open_binary(path: str):
  """A binary file object of the (decompressed) contents."""
  raw = _epath(path).open('rb') if is_remote(path) else open(path, 'rb')
  if path.endswith('.gz'):
    return gzip.GzipFile(fileobj=raw)
  if path.endswith('.zst'):
    import zstandard
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
  return raw


def open_text(path: str) -> io.TextIOBase:
  """The file's text (UTF-8, undecodable bytes replaced), decompressed by its suffix."""
  return io.TextIOWrapper(open_binary(path), encoding='utf-8', errors='replace')


def read_text(path: str) -> str:
  """All of a (possibly compressed, possibly remote) text file."""
  with open_text(path) as f:
    return f.read()


def lines(path: str) -> Iterator[str]:
  """The lines of a (possibly compressed, possibly remote) text file."""
  with open_text(path) as f:
    yield from f
