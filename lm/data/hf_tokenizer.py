"""Hugging Face tokenizers (the `tokenizers` library) behind the same interface as lm's SentencePiece Tokenizer.

A converted workdir (lm.convert from_hf) holds `tokenizer.json` (the fast-tokenizer file; built from vocab.json +
merges.txt or vocab.txt when the HF directory has only those) and `tokenizer_config.json` (which token is pad, eos,
[CLS], ...). `encode` gives the ids of the text alone; `encode_default` what the HF tokenizer returns by default,
special tokens included (BERT's [CLS] ... [SEP], Llama's <s>).
"""
import hashlib
import json
import os
import shutil

from lm.errors import DataError

TOKENIZER_FILE = 'tokenizer.json'
CONFIG_FILE = 'tokenizer_config.json'
_ROLES = ('pad', 'unk', 'bos', 'eos', 'mask', 'cls', 'sep')


def _token_text(value) -> str | None:
  """A special token entry of tokenizer_config.json: a string or {'content': ...}."""
  return value.get('content') if isinstance(value, dict) else value


def build_from_files(hf_dir: str):
  """A `tokenizers.Tokenizer` from an HF directory: tokenizer.json, else vocab.json + merges.txt (GPT-2 byte-level
  BPE), else vocab.txt (BERT WordPiece, lower-casing as tokenizer_config.json says). DataError if none is there."""
  import tokenizers
  path = lambda name: os.path.join(hf_dir, name)
  if os.path.isfile(path(TOKENIZER_FILE)):
    return tokenizers.Tokenizer.from_file(path(TOKENIZER_FILE))
  settings = _read_config(hf_dir)
  if os.path.isfile(path('vocab.json')) and os.path.isfile(path('merges.txt')):
    return tokenizers.ByteLevelBPETokenizer(path('vocab.json'), path('merges.txt'))._tokenizer
  if os.path.isfile(path('vocab.txt')):
    lowercase = settings.get('do_lower_case', True)
    return tokenizers.BertWordPieceTokenizer(path('vocab.txt'), lowercase=lowercase)._tokenizer
  raise DataError(f'--hf_dir={hf_dir}: no tokenizer.json, vocab.json + merges.txt, or vocab.txt there')


def _read_config(directory: str) -> dict:
  """tokenizer_config.json merged over special_tokens_map.json (either may be missing)."""
  out = {}
  for name in ('special_tokens_map.json', CONFIG_FILE):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      with open(path) as f:
        out.update(json.load(f))
  return out


class HFTokenizer:
  """A `tokenizers.Tokenizer` with lm's Tokenizer interface (ids of pad/eos/[CLS]/..., encode, decode, save)."""

  def __init__(self, tokenizer, settings: dict, name: str = '<memory>'):
    self._tok, self._settings, self.name = tokenizer, settings, name
    self._ids = {}
    for role in _ROLES:
      text = _token_text(settings.get(f'{role}_token'))
      self._ids[role] = self._tok.token_to_id(text) if text else None
    self.fingerprint = hashlib.sha256(self._tok.to_str().encode()).hexdigest()

  @classmethod
  def load(cls, directory: str) -> 'HFTokenizer':
    """The tokenizer.json + tokenizer_config.json saved in `directory` (a converted workdir)."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
      raise DataError(f'{directory}: no {TOKENIZER_FILE}; convert the checkpoint with lm.convert from_hf')
    import tokenizers
    return cls(tokenizers.Tokenizer.from_file(path), _read_config(directory), name=path)

  @classmethod
  def from_hf_dir(cls, hf_dir: str) -> 'HFTokenizer':
    """The tokenizer of an HF model directory. Special tokens the tokenizer files do not name (GPT-2's config has
    none) come from the model's config.json ids (bos/eos/pad_token_id)."""
    tok, settings = build_from_files(hf_dir), _read_config(hf_dir)
    model_config = os.path.join(hf_dir, 'config.json')
    if os.path.isfile(model_config):
      with open(model_config) as f:
        ids = json.load(f)
      for role in ('bos', 'eos', 'pad'):
        token_id = ids.get(f'{role}_token_id')
        token_id = token_id[0] if isinstance(token_id, list) and token_id else token_id
        if not _token_text(settings.get(f'{role}_token')) and isinstance(token_id, int) and tok.id_to_token(token_id):
          settings[f'{role}_token'] = tok.id_to_token(token_id)
    return cls(tok, settings, name=hf_dir)

  def save_in(self, directory: str) -> None:
    """tokenizer.json and tokenizer_config.json into `directory` (a workdir or an HF directory)."""
    self._tok.save(os.path.join(directory, TOKENIZER_FILE))
    with open(os.path.join(directory, CONFIG_FILE), 'w') as f:
      json.dump(self._settings, f, indent=2, sort_keys=True)

  def copy_special_files(self, hf_dir: str, directory: str) -> None:
    """Copies the HF directory's tokenizer side files (special_tokens_map.json, ...) that transformers reads."""
    for name in ('special_tokens_map.json', 'vocab.json', 'merges.txt', 'vocab.txt'):
      if os.path.isfile(os.path.join(hf_dir, name)):
        shutil.copy(os.path.join(hf_dir, name), os.path.join(directory, name))

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def _id(self, role: str, *fallbacks: str) -> int:
    """The id of the role's token (or a fallback role's); -1 when the tokenizer has none (never a real token)."""
    for name in (role, *fallbacks):
      if self._ids.get(name) is not None:
        return self._ids[name]
    return -1

  pad_id = property(lambda self: max(self._id('pad', 'eos'), 0))  # padding is masked out: any id will do
  unk_id = property(lambda self: self._id('unk'))
  bos_id = property(lambda self: self._id('bos', 'cls'))
  eos_id = property(lambda self: self._id('eos', 'sep'))
  mask_id = property(lambda self: self._id('mask'))
  cls_id = property(lambda self: self._id('cls', 'bos'))
  sep_id = property(lambda self: self._id('sep', 'eos'))
  newline_id = property(lambda self: None)  # no line snapping for BERT pairs on foreign vocabularies

  def word_starts(self):
    return None

  def encode(self, text: str) -> list[int]:
    """The ids of the text alone (no special tokens)."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`encode(text)` and each token's (start, end) character span in `text`."""
    encoding = self._tok.encode(text, add_special_tokens=False)
    return encoding.ids, [tuple(span) for span in encoding.offsets]

  def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
    del num_threads
    return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def encode_default(self, text: str, encoder: bool = False) -> list[int]:
    """What the HF tokenizer returns by default, special tokens included (`encoder` is the model's business)."""
    del encoder
    return self._tok.encode(text).ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def id_to_piece(self, token_id: int) -> str:
    return self._tok.id_to_token(int(token_id)) or ''
