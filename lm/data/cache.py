"""Where the data package keeps its caches (written through lm.store.paths.atomic_output)."""
import os
import pathlib

import ml_collections


def cache_dir(data_cfg: ml_collections.ConfigDict) -> pathlib.Path:
  """Returns data.cache_dir, else $LM_CACHE_DIR, else ~/.cache/lm (not created)."""
  path = data_cfg.cache_dir or os.environ.get('LM_CACHE_DIR') or '~/.cache/lm'
  return pathlib.Path(path).expanduser()
