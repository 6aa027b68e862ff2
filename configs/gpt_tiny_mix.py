"""gpt_tiny on a mixture: the embedded corpus (stdlib + pydoc, 80%) and every .py file of the installed site-packages
(third-party code, about 300 MB here, 20%), with an eval loss per source (eval/stdlib/*, eval/site/*) and pooled.

  python -m lm.prepare --config=configs/gpt_tiny_mix.py --workers=2   # optional: tokenize both sources ahead
  python -m lm.main --config=configs/gpt_tiny_mix.py

The tokenizer is the embedded corpus's (the heaviest source), the same as gpt_tiny's. Both token stores live in the
cache (the site-packages one takes a few minutes to build on 2 cores, once); `:DIR` keeps the site-packages store
in DIR instead.
"""
import site

import ml_collections

from configs import gpt_tiny


def get_config(arg: str | None = None):
  """gpt_tiny_mix[:DIR of the site-packages token store]."""
  c = gpt_tiny.get_config()
  site_packages = site.getsitepackages()[0]
  c.data.mixture.stdlib = ml_collections.ConfigDict({'weight': 0.8})
  c.data.mixture.site = ml_collections.ConfigDict({
      'weight': 0.2, 'source': 'text', 'path': f'{site_packages}/**/*.py', 'store_shard_documents': 1000,
      'eval_fraction': 0.01, 'store': arg or ''})
  return c
