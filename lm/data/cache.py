"""Where the data package keeps its caches, and how it writes them safely."""
import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator

import ml_collections


def cache_dir(data_cfg: ml_collections.ConfigDict) -> pathlib.Path:
  """Returns data.cache_dir, else $LM_CACHE_DIR, else ~/.cache/lm (not created)."""
  path = data_cfg.cache_dir or os.environ.get('LM_CACHE_DIR') or '~/.cache/lm'
  return pathlib.Path(path).expanduser()


@contextlib.contextmanager
def atomic_output(path: pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; on success moves it onto `path` in one step.

  Several processes may write the same cache entry at once: each writes its own temporary file and the
  last `os.replace` wins, so a reader never sees a half-written file. On error the temporary file is removed.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
