"""GPT-2 (GPT2LMHeadModel) <-> lm's decoder in the GPT-2 layout: config keys and one rule per tensor. GPT-2's Conv1D
weights are already [in, out]; its fused c_attn splits into query, key and value."""
import numpy as np

from lm.errors import ConfigError
from lm.hf import heads, rules

CONV1D = True  # weights are [in, out] (transformers' Conv1D); PEFT's LoRA on them sets fan_in_fan_out
IGNORED = ('.attn.bias', '.attn.masked_bias', 'lm_head.weight')  # buffers and the tied head copy, when importing
_HEAD_TENSORS = {'span': 'qa_outputs', 'token': 'classifier'}


def preset(config):
  """The base config is the GPT-2 layout already."""
  return config


def fits(m) -> bool:
  """True when a decoder's config.model has GPT-2's layout."""
  return (m.norm_type == 'layernorm' and m.position == 'learned' and not m.position_offset and not m.embedding_norm
          and m.tie_embeddings and m.use_bias
          and m.norm == 'pre' and m.activation == 'gelu_tanh' and m.num_kv_heads in (0, m.num_heads)
          and m.head_dim in (0, m.d_model // m.num_heads))


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json."""
  if hf.get('activation_function', 'gelu_new') not in ('gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'):
    raise ConfigError(f'GPT-2 activation_function={hf["activation_function"]!r}: lm supports the tanh GELU only')
  d = hf['n_embd']
  return {**heads.task_keys(hf), 'num_layers': hf['n_layer'], 'num_heads': hf['n_head'], 'd_model': d,
          'd_ff': hf.get('n_inner') or 4 * d, 'vocab_size': hf['vocab_size'], 'max_len': hf['n_positions'],
          'layer_norm_eps': hf.get('layer_norm_epsilon', 1e-5), 'activation': 'gelu_tanh', 'norm': 'pre',
          'position': 'learned', 'tie_embeddings': True}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  return {'architectures': [heads.architecture('GPT2', m) or 'GPT2LMHeadModel'], 'model_type': 'gpt2',
          'n_layer': m.num_layers, 'n_head': m.num_heads,
          'n_embd': m.d_model, 'n_inner': m.d_ff, 'vocab_size': m.vocab_size, 'n_positions': m.max_len,
          'n_ctx': m.max_len, 'layer_norm_epsilon': m.layer_norm_eps, 'activation_function': 'gelu_new',
          'tie_word_embeddings': True, 'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0}


def _rules(m, prefix: str) -> list[rules.Rule]:
  """GPT-2's tensors; `prefix` is '' for files saved from a bare GPT2Model (e.g. the original `gpt2` upload)."""
  h, dh, d = m.num_heads, m.d_model // m.num_heads, m.d_model
  split_w = lambda a: tuple(part.reshape(d, h, dh) for part in np.split(a, 3, axis=1))
  join_w = lambda xs: np.concatenate([x.reshape(d, d) for x in xs], axis=1)
  split_b = lambda a: tuple(part.reshape(h, dh) for part in np.split(a, 3))
  join_b = lambda xs: np.concatenate([x.reshape(-1) for x in xs])
  out = [rules.one(f'{prefix}wte.weight', 'embeddings/token/embedding'),
           rules.one(f'{prefix}wpe.weight', 'embeddings/position/embedding')]
  out += rules.norm(f'{prefix}ln_f', 'ln_final')
  for i in range(m.num_layers):
    p, o = f'{prefix}h.{i}', f'block_{i}'
    qkv = tuple(f'{o}/attn/{n}' for n in ('query', 'key', 'value'))
    out += rules.norm(f'{p}.ln_1', f'{o}/ln_attn') + rules.norm(f'{p}.ln_2', f'{o}/ln_mlp')
    out += [rules.Rule(f'{p}.attn.c_attn.weight', tuple(f'{q}/kernel' for q in qkv), split_w, join_w),
            rules.Rule(f'{p}.attn.c_attn.bias', tuple(f'{q}/bias' for q in qkv), split_b, join_b),
            rules.one(f'{p}.attn.c_proj.weight', f'{o}/attn/out/kernel', lambda a: a.reshape(h, dh, d),
                      lambda x: x.reshape(d, d)),
            rules.one(f'{p}.attn.c_proj.bias', f'{o}/attn/out/bias'),
            rules.one(f'{p}.mlp.c_fc.weight', f'{o}/mlp/fc_in/kernel'),
            rules.one(f'{p}.mlp.c_fc.bias', f'{o}/mlp/fc_in/bias'),
            rules.one(f'{p}.mlp.c_proj.weight', f'{o}/mlp/fc_out/kernel'),
            rules.one(f'{p}.mlp.c_proj.bias', f'{o}/mlp/fc_out/bias')]
  return out + heads.head_rules(m, _HEAD_TENSORS)


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """GPT-2's tensors, named with the `transformer.` prefix unless the file's `names` lack it (a bare GPT2Model, e.g.
  the original `gpt2` upload). Exports use the prefix."""
  bare = bool(names) and not any(n.startswith('transformer.') for n in names)
  return _rules(m, '' if bare else 'transformer.')
