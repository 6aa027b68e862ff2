"""A Cloud Storage API on 127.0.0.1 for the tests: gcp-storage-emulator (PyPI), in memory, one bucket.

  python tests/gcs_emulator.py PORT BUCKET

One gap to real Cloud Storage is closed here: the emulator's object downloads omit the `x-goog-generation` header
that Cloud Storage sends and that tensorstore (orbax's array writer) reads to make its conditional writes
(`Malformed StorageGeneration` otherwise). The header is added from the emulator's own object record; nothing of lm
is replaced. Clients reach it through STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT (see lm/store/paths.py).
"""
import sys
import time

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  """The emulator's download, plus the generation headers Cloud Storage sends with every object read."""
  _download(request, response, storage, *args, **kwargs)
  try:
    record = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except NotFound:
    return
  response['x-goog-generation'] = str(record['generation'])
  response['x-goog-metageneration'] = str(record['metageneration'])


objects.download = _download_with_generation  # before server builds its route table from it

from gcp_storage_emulator import server  # noqa: E402


def main(port: int, bucket: str) -> None:
  emulator = server.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket)
  emulator.start()
  print('ready', flush=True)
  while True:
    time.sleep(3600)


if __name__ == '__main__':
  main(int(sys.argv[1]), sys.argv[2])
