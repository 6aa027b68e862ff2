"""BLOOM (BloomForCausalLM) <-> lm's decoder in the BLOOM layout: ALiBi instead of positions (model.position='alibi'),
a LayerNorm right after the embedding (model.embedding_norm), pre-LN blocks with biases, tanh GELU, a 4·d MLP, a
tied head. BLOOM's fused query_key_value is laid out per head ([heads, 3, head_dim] rows), unlike GPT-2's c_attn."""
import numpy as np

from lm.errors import ConfigError
from lm.hf import heads as heads_lib, rules

IGNORED = ('lm_head.weight',)  # the tied head's copy, when importing
_HEAD_TENSORS = {'span': 'qa_outputs', 'token': 'classifier'}
_MAX_LEN = 2048  # BLOOM has no position table; its config's seq_length (BLOOM's training length) when absent


def preset(config):
  """The decoder's BLOOM layout."""
  from lm.config import base
  return base.bloom(config)


def fits(m) -> bool:
  """True when a decoder's config.model has BLOOM's layout."""
  return (m.position == 'alibi' and m.embedding_norm and m.norm == 'pre' and m.norm_type == 'layernorm'
          and m.activation == 'gelu_tanh' and m.use_bias and m.num_kv_heads in (0, m.num_heads)
          and m.head_dim in (0, m.d_model // m.num_heads) and m.d_ff == 4 * m.d_model)


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json; ConfigError for the variants lm does not compute."""
  if hf.get('apply_residual_connection_post_layernorm'):
    raise ConfigError('BLOOM apply_residual_connection_post_layernorm=true: not supported (lm adds the residual '
                      'before the layer norm)')
  d = hf.get('hidden_size') or hf['n_embed']
  return {**heads_lib.task_keys(hf), 'num_layers': hf.get('n_layer', hf.get('num_hidden_layers')),
          'num_heads': hf.get('n_head', hf.get('num_attention_heads')), 'd_model': d, 'd_ff': 4 * d,
          'vocab_size': hf['vocab_size'], 'max_len': hf.get('seq_length') or _MAX_LEN,
          'layer_norm_eps': hf.get('layer_norm_epsilon', 1e-5), 'position': 'alibi', 'embedding_norm': True,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', True))}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  return {'architectures': [heads_lib.architecture('Bloom', m) or 'BloomForCausalLM'], 'model_type': 'bloom',
          'n_layer': m.num_layers, 'n_head': m.num_heads, 'hidden_size': m.d_model, 'vocab_size': m.vocab_size,
          'seq_length': m.max_len, 'layer_norm_epsilon': m.layer_norm_eps, 'tie_word_embeddings': m.tie_embeddings,
          'apply_residual_connection_post_layernorm': False, 'hidden_dropout': 0.0, 'attention_dropout': 0.0,
          'pretraining_tp': 1, 'slow_but_exact': False}


def _fused_qkv(h: int, dh: int):
  """BLOOM's query_key_value (weight [heads*3*dh, d], bias [heads*3*dh]; rows grouped per head as q, k, v) <->
  lm's query / key / value kernels [d, heads, dh] and biases [heads, dh]."""
  def split_w(a):
    per_head = a.reshape(h, 3, dh, a.shape[1])
    return tuple(per_head[:, j].transpose(2, 0, 1) for j in range(3))
  join_w = lambda xs: np.stack([x.transpose(1, 2, 0) for x in xs], axis=1).reshape(h * 3 * dh, -1)
  split_b = lambda a: tuple(a.reshape(h, 3, dh)[:, j] for j in range(3))
  join_b = lambda xs: np.stack(xs, axis=1).reshape(-1)
  return split_w, join_w, split_b, join_b


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """BLOOM's tensors under `transformer.` (bare names when the file's `names` lack the prefix, as BloomModel
  saves them)."""
  bare = bool(names) and not any(n.startswith('transformer.') for n in names)
  prefix, task = '' if bare else 'transformer.', heads_lib.architecture('Bloom', m)
  h, dh = m.num_heads, m.d_model // m.num_heads
  split_w, join_w, split_b, join_b = _fused_qkv(h, dh)
  out = [rules.one(f'{prefix}word_embeddings.weight', 'embeddings/token/embedding')]
  out += rules.norm(f'{prefix}word_embeddings_layernorm', 'embeddings/norm') + rules.norm(f'{prefix}ln_f', 'ln_final')
  if not m.tie_embeddings and not task:
    out.append(rules.one('lm_head.weight', 'lm_head/kernel', np.transpose, np.transpose))
  for i in range(m.num_layers):
    p, o = f'{prefix}h.{i}', f'block_{i}'
    qkv = tuple(f'{o}/attn/{n}' for n in ('query', 'key', 'value'))
    out += rules.norm(f'{p}.input_layernorm', f'{o}/ln_attn') + rules.norm(f'{p}.post_attention_layernorm',
                                                                           f'{o}/ln_mlp')
    out += [rules.Rule(f'{p}.self_attention.query_key_value.weight', tuple(f'{q}/kernel' for q in qkv), split_w,
                       join_w),
            rules.Rule(f'{p}.self_attention.query_key_value.bias', tuple(f'{q}/bias' for q in qkv), split_b, join_b)]
    out += rules.heads_out(f'{p}.self_attention.dense', f'{o}/attn/out', h, dh, bias=True)
    out += rules.linear(f'{p}.mlp.dense_h_to_4h', f'{o}/mlp/fc_in') + rules.linear(f'{p}.mlp.dense_4h_to_h',
                                                                                   f'{o}/mlp/fc_out')
  return out + heads_lib.head_rules(m, _HEAD_TENSORS)
