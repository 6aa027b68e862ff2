"""One path layer for every file of a run: local paths and `gs://` (Cloud Storage) alike, through etils `epath`.

Workdirs (config.json, metrics.jsonl, the tokenizer, TensorBoard events, orbax checkpoints, best/, the set-aside
folder), token stores and init_from runs all go through `path()`. Remote paths reach Cloud Storage by two clients:
gcsfs (epath's fsspec backend: files, listings, renames; orbax's metadata) and tensorstore (orbax's arrays).
TensorFlow's gfile is not used for gs:// because it cannot be pointed at another endpoint.

`STORAGE_EMULATOR_HOST` (the Google client libraries' convention, e.g. http://127.0.0.1:9023) points both clients
at a Cloud Storage emulator; importing this module sets what each client reads for that (see _configure_clients).
"""
import contextlib
import logging
import os
import pathlib
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator

from etils import epath

from lm.errors import ConfigError

REMOTE_SCHEMES = ('gs',)  # what lm writes besides local paths
EMULATOR_ENV = 'STORAGE_EMULATOR_HOST'


def _endpoint() -> str:
  """The Cloud Storage endpoint: STORAGE_EMULATOR_HOST (scheme added if missing), else Google's."""
  emulator = os.environ.get(EMULATOR_ENV)
  if not emulator:
    return 'https://storage.googleapis.com'
  return emulator if '://' in emulator else f'http://{emulator}'


def _configure_clients() -> None:
  """epath -> gcsfs for gs:// (instead of TensorFlow's gfile); with STORAGE_EMULATOR_HOST, tensorstore goes there
  too and gcsfs skips the bucket-layout probe the emulator lacks. Explicit settings of these variables win."""
  os.environ.setdefault('EPATH_USE_TF', 'false')
  if os.environ.get(EMULATOR_ENV):
    os.environ.setdefault('TENSORSTORE_GCS_HTTP_URL', _endpoint())
    os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')


_configure_clients()


def scheme(path: str | os.PathLike) -> str | None:
  """'gs' for gs://bucket/..., any other 'x' of x://..., None for a local path."""
  text = os.fspath(path)
  return text.split('://', 1)[0] if '://' in text else None


def is_remote(path: str | os.PathLike) -> bool:
  """True for a path with a scheme (gs://...)."""
  return scheme(path) is not None


def path(value: str | os.PathLike) -> epath.Path:
  """An epath.Path for a local path (~ expanded) or a gs:// URL."""
  return epath.Path(value if is_remote(value) else os.path.expanduser(os.fspath(value)))


def absolute(value: str | os.PathLike) -> str:
  """The absolute form of a local path, or the URL itself (what orbax's managers are given)."""
  return os.fspath(value) if is_remote(value) else os.path.abspath(os.path.expanduser(os.fspath(value)))


def check_usable(value: str, field: str, write: bool) -> None:
  """ConfigError (one line, naming `field`) unless `value` is local, or a gs:// URL whose bucket answers (and
  accepts a write when `write`). Run before anything is written."""
  kind = scheme(value)
  if kind is None:
    return
  if kind not in REMOTE_SCHEMES:
    raise ConfigError(f'{field}={value}: lm reads and writes local paths and gs:// only, not {kind}://; use a gs:// '
                      'bucket or a local (or mounted) folder')
  bucket = value.split('://', 1)[1].split('/', 1)[0]
  gcsfs_logger = logging.getLogger('gcsfs')
  level = gcsfs_logger.level
  gcsfs_logger.setLevel(logging.CRITICAL)  # its retry tracebacks; the one line below says it
  try:
    _probe(bucket, value, write)
  except Exception as e:  # noqa: BLE001 (gcsfs, google-auth and HTTP errors alike)
    reason = ' '.join(str(e).split())[:200] or type(e).__name__
    raise ConfigError(f'{field}={value}: cannot reach bucket gs://{bucket} ({reason}); check the name, your '
                      f'credentials, or {EMULATOR_ENV} for an emulator') from e
  finally:
    gcsfs_logger.setLevel(level)


def _probe(bucket: str, value: str, write: bool) -> None:
  """Connects to the endpoint (an unreachable one fails in seconds), lists the bucket; with `write`, also writes
  and removes a marker object next to `value`."""
  import gcsfs
  endpoint = urllib.parse.urlsplit(_endpoint())
  socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=10).close()  # gcsfs would retry ~30 s
  fs = gcsfs.GCSFileSystem(skip_instance_cache=True)
  fs.ls(bucket, max_results=1)
  if write:
    marker = f'{value.split("://", 1)[1].rstrip("/")}.lm-write-check-{os.getpid()}'
    fs.pipe_file(marker, b'')
    fs.rm_file(marker)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a local temporary file; on success it becomes `target` in one step, so a reader never sees a partial
  file: a rename beside a local target (the last of several writers wins), one upload for a gs:// target (an object
  appears whole or not at all). On error the temporary file is removed and `target` is untouched."""
  remote = is_remote(target)
  target = path(target)
  folder = tempfile.mkdtemp(prefix='lm-upload-') if remote else None
  if not remote:
    target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder or os.fspath(target.parent), prefix=f'.{target.name}.', suffix='.tmp')
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    if remote:
      target.write_bytes(pathlib.Path(tmp).read_bytes())
    else:
      os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
    if folder:
      shutil.rmtree(folder, ignore_errors=True)


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
  """Moves a folder (a rename locally; copy-then-delete of each object on Cloud Storage: gcsfs's `mv` tries the
  moveTo API first and backs off ~30 s where it is missing, as on emulators)."""
  if is_remote(source):
    fs = epath.backend.fsspec_backend.fs(os.fspath(source))
    fs.copy(os.fspath(source), os.fspath(target), recursive=True)
    fs.rm(os.fspath(source), recursive=True)
  else:
    os.makedirs(os.path.dirname(os.fspath(target)), exist_ok=True)
    shutil.move(os.fspath(source), os.fspath(target))
