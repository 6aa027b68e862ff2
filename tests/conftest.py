"""Test session setup: 8 simulated CPU devices and a private cache, both fixed before jax is imported.

XLA_FLAGS must be set before the first `import jax` of the process, and pytest imports conftest.py before any test
module, so the sharded tests (tests/test_sharded.py) find 8 devices. Single-device tests build their meshes over
`jax.devices()[:1]`; end-to-end tests run `python -m lm.main` in a subprocess without these flags.
"""
import os
import sys
import tempfile

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('LM_CACHE_DIR', tempfile.mkdtemp(prefix='lm-test-cache-'))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
