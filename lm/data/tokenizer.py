"""SentencePiece tokenizer: the special tokens, loading, and training (cached) on the training split.

The training settings below make `decode(encode(x)) == x` for any text, code included: no normalization, whitespace
kept as is, and bytes for whatever the vocabulary lacks.
"""
import hashlib
import io
import json
import os
import pathlib

import ml_collections
import numpy as np
import sentencepiece as spm
from absl import logging

from lm.data import cache, sources
from lm.errors import DataError
from lm.store import paths

# The special tokens, defined here and nowhere else.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = '<pad>', '<unk>', '<s>', '</s>'
MASK, CLS, SEP = '[MASK]', '[CLS]', '[SEP]'
MASK_ID, CLS_ID, SEP_ID = 4, 5, 6
_SPECIAL_PIECES = ((PAD_ID, PAD), (UNK_ID, UNK), (BOS_ID, BOS), (EOS_ID, EOS), (MASK_ID, MASK), (CLS_ID, CLS),
                   (SEP_ID, SEP))
NUM_SPECIAL_IDS = len(_SPECIAL_PIECES)  # ids below this are special; ordinary pieces are [NUM_SPECIAL_IDS, vocab)
_WORD_START = '\u2581'  # SentencePiece's whitespace marker '▁': a piece that starts with it begins a word
_WHITESPACE_BYTES = frozenset(f'<0x{b:02X}>' for b in b'\t\n\v\f\r ')  # byte-fallback pieces of whitespace

# Fixed SentencePiece training settings (the config adds vocab_size, model_type and input_sentence_size).
_TRAIN_SETTINGS = dict(
    pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_piece=PAD, unk_piece=UNK, bos_piece=BOS,
    eos_piece=EOS, user_defined_symbols=[MASK, CLS, SEP], byte_fallback=True, remove_extra_whitespaces=False,
    normalization_rule_name='identity', allow_whitespace_only_pieces=True, split_digits=True,
    shuffle_input_sentence=True, num_threads=2, minloglevel=2)
_TRAIN_SEED = 0  # SentencePiece's sampling seed, fixed so every host trains the same tokenizer


class Tokenizer:
  """A SentencePiece model with lm's special tokens (pad 0, unk 1, bos 2, eos 3, [MASK] 4, [CLS] 5, [SEP] 6)."""

  def __init__(self, model_proto: bytes, name: str = '<memory>'):
    """Wraps a serialized SentencePiece model; `name` (its path) is used in error messages."""
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    found = tuple((self._sp.piece_to_id(piece), piece) for _, piece in _SPECIAL_PIECES)
    if found != _SPECIAL_PIECES:
      raise DataError(f'data.tokenizer: {name} has special tokens {found} but lm needs {_SPECIAL_PIECES}; '
                      "set --config.data.tokenizer='' to train a compatible one")
    self.fingerprint = hashlib.sha256(model_proto).hexdigest()

  @classmethod
  def load(cls, path: str | os.PathLike) -> 'Tokenizer':
    """Loads a SentencePiece .model file; DataError if it is missing or unreadable."""
    path = paths.path(path)
    if not path.is_file():
      raise DataError(f'data.tokenizer: no file {str(path)!r}; set --config.data.tokenizer to a SentencePiece '
                      "model, or to '' to train one")
    try:
      return cls(path.read_bytes(), name=str(path))
    except RuntimeError as e:
      raise DataError(f'data.tokenizer: {path} is not a SentencePiece model ({e}); point it at a .model file') from e

  @property
  def model_proto(self) -> bytes:
    """The serialized SentencePiece model (what tokenizer.model holds)."""
    return self._proto

  def save(self, path: str | os.PathLike) -> None:
    """Writes the model file atomically (safe when several processes save the same path)."""
    with paths.atomic_output(path) as tmp:
      tmp.write_bytes(self._proto)

  def save_in(self, workdir: str) -> None:
    """<workdir>/tokenizer.model, where every CLI looks for it."""
    self.save(os.path.join(workdir, 'tokenizer.model'))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def mask_id(self) -> int:
    return MASK_ID

  @property
  def cls_id(self) -> int:
    return CLS_ID

  @property
  def sep_id(self) -> int:
    return SEP_ID

  @property
  def newline_id(self) -> int | None:
    """The id of the piece that is exactly '\\n' (with byte fallback: '<0x0A>'), or None if there is none."""
    for piece in ('\n', '<0x0A>'):
      piece_id = self._sp.piece_to_id(piece)
      if piece_id != UNK_ID:
        return piece_id
    return None

  def word_starts(self) -> np.ndarray:
    """bool [vocab_size]: True for pieces that begin a word, False for pieces that continue the one before.

    A word starts at a piece beginning with '▁' (SentencePiece's mark of preceding whitespace), at the byte piece
    of a whitespace character ('<0x0A>' for a newline, which SentencePiece never folds into '▁'), and at every
    special token; any other piece (e.g. '():' in '▁f', '():') continues the word before it.
    """
    starts = np.zeros(self.vocab_size, bool)
    for i in range(self.vocab_size):
      piece = self._sp.id_to_piece(i)
      starts[i] = (i < NUM_SPECIAL_IDS or piece.startswith(_WORD_START) or piece in _WHITESPACE_BYTES
                   or self._sp.is_control(i) or self._sp.is_unknown(i))
    return starts

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos or eos."""
    return self._sp.encode(text)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`encode(text)` and each token's (start, end) character span in `text` (a character split into several
    byte-fallback tokens: the last of them carries it, the others get an empty span at its start). Spans include
    the whitespace a token starts with ('▁the' -> ' the'): strip the text they cut out."""
    encode = getattr(self._sp, 'encode_as_proto', None)
    proto = encode(text) if encode else self._sp.encode(text, out_type='immutable_proto')
    char_at_byte = np.repeat(np.arange(len(text) + 1), [len(c.encode('utf-8')) for c in text] + [1])
    ids = [piece.id for piece in proto.pieces]
    spans = [(int(char_at_byte[piece.begin]), int(char_at_byte[piece.end])) for piece in proto.pieces]
    return ids, spans

  def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
    """Token ids of each text, encoded in parallel (num_threads 0 = all cores)."""
    return self._sp.encode(list(texts), num_threads=num_threads or os.cpu_count() or 1)

  def encode_default(self, text: str, encoder: bool = False) -> list[int]:
    """The model's default encoding of a whole text: [CLS] text [SEP] for an encoder (as in its pretraining), the
    plain ids for a decoder (documents carry no bos)."""
    ids = self.encode(text)
    return [CLS_ID] + ids + [SEP_ID] if encoder else ids

  def decode(self, ids) -> str:
    """The text of `ids`, leaving out pad, bos and eos."""
    return self._sp.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary piece of one id (e.g. '▁import', '<0x0A>', '[MASK]')."""
    return self._sp.id_to_piece(int(token_id))


def _lines(documents: sources.Documents):
  for i in range(len(documents)):
    for line in documents[i].splitlines():
      if line.strip():
        yield line


def sentinel_piece(k: int) -> str:
  """The text of sentinel k of span corruption (T5's name): id vocab_size - 1 - k."""
  return f'<extra_id_{k}>'


def with_sentinels(model_proto: bytes, num_sentinels: int) -> bytes:
  """The SentencePiece model with `num_sentinels` user-defined pieces appended, so that sentinel k
  (`sentinel_piece(k)`) has id vocab_size - 1 - k, counting down from the top as in T5's vocabulary."""
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  for k in reversed(range(num_sentinels)):
    proto.pieces.add(piece=sentinel_piece(k), score=0.0,
                     type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
  return proto.SerializeToString()


def train_tokenizer(documents: sources.Documents, settings: dict) -> Tokenizer:
  """Trains SentencePiece on the non-blank lines of `documents` with `settings` (see `_settings`); with
  settings['num_sentinels'] = N the last N of the vocab_size ids are span-corruption sentinels."""
  model = io.BytesIO()
  spm.set_random_generator_seed(settings['seed'])
  sentinels = settings.get('num_sentinels', 0)
  kwargs = {k: v for k, v in settings.items() if k not in ('seed', 'num_sentinels')}
  kwargs['vocab_size'] -= sentinels
  try:
    spm.SentencePieceTrainer.train(sentence_iterator=_lines(documents), model_writer=model, **kwargs)
  except RuntimeError as e:
    raise DataError(f'model.vocab_size: training a {kwargs["vocab_size"]}-piece tokenizer failed ({e}); lower '
                    '--config.model.vocab_size, use more data, or set --config.data.tokenizer') from e
  return Tokenizer(with_sentinels(model.getvalue(), sentinels) if sentinels else model.getvalue())


def _settings(config: ml_collections.ConfigDict) -> dict:
  settings = dict(_TRAIN_SETTINGS, vocab_size=config.model.vocab_size, model_type=config.data.tokenizer_type,
                  input_sentence_size=config.data.tokenizer_sentences, seed=_TRAIN_SEED)
  if config.data.num_sentinels:  # only then: the cache key of every other tokenizer stays what it was
    settings['num_sentinels'] = config.data.num_sentinels
  return settings


def tokenizer_path(config: ml_collections.ConfigDict, documents: sources.Documents) -> pathlib.Path:
  """The cache path of the tokenizer trained on `documents` with this config's settings."""
  key = json.dumps({'documents': documents.fingerprint, **_settings(config)}, sort_keys=True)
  return cache.cache_dir(config.data) / 'tokenizers' / f'{hashlib.sha256(key.encode()).hexdigest()}.model'


def given_path(config: ml_collections.ConfigDict) -> str:
  """data.tokenizer, else the tokenizer of the init_from run (a fine-tune keeps its tokenizer: tokenizer.json if it
  was converted from Hugging Face, else tokenizer.model), else ''."""
  if config.data.tokenizer:
    return config.data.tokenizer
  if not config.init_from:
    return ''
  converted = os.path.join(config.init_from, 'tokenizer.json')
  return converted if paths.path(converted).is_file() else os.path.join(config.init_from, 'tokenizer.model')


def get_tokenizer(config: ml_collections.ConfigDict, documents: sources.Documents | None = None) -> Tokenizer:
  """Loads data.tokenizer (or init_from's), or trains one on the train split (`documents` if given; at most about
  data.tokenizer_sample_bytes of it, evenly spread: sources.sample) and caches it.

  Raises DataError when the tokenizer's vocabulary size is not model.vocab_size.
  """
  data = config.data
  path = given_path(config)
  if path.endswith('.json') and paths.path(path).is_file():
    from lm.data import hf_tokenizer  # a Hugging Face tokenizer.json (with its tokenizer_config.json beside it)
    tokenizer = hf_tokenizer.HFTokenizer.load(os.path.dirname(path) or '.')
  elif path:
    if not paths.path(path).is_file():
      key = 'data.tokenizer' if data.tokenizer else 'init_from'
      raise DataError(f'{key}: no file at {path}; give the SentencePiece .model of the pretrained run '
                      '(--config.data.tokenizer=PATH)')
    tokenizer = Tokenizer.load(path)
  else:
    documents = sources.get_documents(data, 'train') if documents is None else documents
    if not len(documents):
      raise DataError(f'data: the train split of source {data.source!r} has no documents; check data.path / '
                      'data.tfds_name / data.eval_fraction')
    documents = sources.sample(documents, data.tokenizer_sample_bytes)
    path = tokenizer_path(config, documents)
    if path.is_file():
      tokenizer = Tokenizer.load(path)
    else:
      logging.info('Training a %d-piece tokenizer on %d documents -> %s', config.model.vocab_size,
                   len(documents), path)
      tokenizer = train_tokenizer(documents, _settings(config))
      tokenizer.save(path)
  check_vocab_size(config, tokenizer, path)
  check_sentinels(config, tokenizer, path)
  return tokenizer


def check_sentinels(config: ml_collections.ConfigDict, tokenizer, path) -> None:
  """DataError unless the tokenizer's top data.num_sentinels ids are the sentinels <extra_id_0> (the last id) down
  to <extra_id_N-1>, so that no real text is ever mistaken for one."""
  n = config.data.num_sentinels
  for k in (0, n - 1) if n else ():
    if tokenizer.id_to_piece(tokenizer.vocab_size - 1 - k) != sentinel_piece(k):
      raise DataError(f'data.num_sentinels={n} but tokenizer {path} has '
                      f'{tokenizer.id_to_piece(tokenizer.vocab_size - 1 - k)!r}, not {sentinel_piece(k)!r}, at id '
                      f'{tokenizer.vocab_size - 1 - k}; use a tokenizer with T5 sentinels or set data.tokenizer=\'\'')


def check_vocab_size(config: ml_collections.ConfigDict, tokenizer, path) -> None:
  """DataError unless the tokenizer at `path` has model.vocab_size pieces."""
  if tokenizer.vocab_size != config.model.vocab_size:
    raise DataError(f'model.vocab_size is {config.model.vocab_size} but tokenizer {path} has '
                    f'{tokenizer.vocab_size} pieces; set --config.model.vocab_size={tokenizer.vocab_size}')


def load_run_tokenizer(workdir: str):
  """The tokenizer of a run: tokenizer.json (converted from Hugging Face) or tokenizer.model (SentencePiece)."""
  if paths.path(os.path.join(workdir, 'tokenizer.json')).is_file():
    from lm.data import hf_tokenizer
    return hf_tokenizer.HFTokenizer.load(workdir)
  path = os.path.join(workdir, 'tokenizer.model')
  if not paths.path(path).is_file():
    raise DataError(f'--workdir={workdir}: no tokenizer.model or tokenizer.json there; copy the tokenizer of the run '
                    'that made it')
  return Tokenizer.load(path)
