"""Llama (LlamaForCausalLM and the task classes of hf/heads.py) <-> lm's decoder in the Llama layout: RMSNorm, RoPE
(the config's theta), SwiGLU, grouped-query attention, no biases, tied or untied head."""
import numpy as np

from lm.errors import ConfigError
from lm.hf import heads as heads_lib, rules

IGNORED = ('rotary_emb.inv_freq',)  # a buffer, when importing
_HEAD_TENSORS = {'span': 'qa_outputs', 'token': 'score'}


def preset(config):
  """The decoder's Llama layout."""
  from lm.config import base
  return base.llama(config)


def fits(m) -> bool:
  """True when a decoder's config.model has Llama's layout."""
  return m.norm_type == 'rmsnorm' and m.position == 'rope' and m.activation == 'swiglu' and not m.use_bias \
      and m.norm == 'pre' and m.head_dim in (0, m.d_model // m.num_heads) and not m.embedding_norm


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json."""
  d, heads = hf['hidden_size'], hf['num_attention_heads']
  if hf.get('head_dim', d // heads) != d // heads:
    raise ConfigError(f'Llama head_dim={hf["head_dim"]} != hidden_size / num_attention_heads: not supported')
  if hf.get('attention_bias') or hf.get('mlp_bias'):
    raise ConfigError('Llama with attention_bias / mlp_bias: not supported (lm\'s Llama has no biases)')
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  if rope.get('rope_type', 'default') != 'default':
    raise ConfigError(f'Llama rope_type={rope["rope_type"]!r}: lm supports the default RoPE only')
  if hf.get('hidden_act', 'silu') != 'silu':
    raise ConfigError(f'Llama hidden_act={hf["hidden_act"]!r}: lm supports silu (SwiGLU) only')
  return {**heads_lib.task_keys(hf), 'num_layers': hf['num_hidden_layers'], 'num_heads': heads, 'd_model': d,
          'd_ff': hf['intermediate_size'], 'vocab_size': hf['vocab_size'], 'max_len': hf['max_position_embeddings'],
          'num_kv_heads': hf.get('num_key_value_heads') or heads, 'layer_norm_eps': hf.get('rms_norm_eps', 1e-6),
          'rope_theta': float(rope.get('rope_theta', hf.get('rope_theta', 10000.0))), 'norm': 'pre',
          'norm_type': 'rmsnorm', 'activation': 'swiglu', 'position': 'rope', 'use_bias': False,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', False))}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  return {'architectures': [heads_lib.architecture('Llama', m) or 'LlamaForCausalLM'], 'model_type': 'llama',
          'num_hidden_layers': m.num_layers, 'num_attention_heads': m.num_heads,
          'num_key_value_heads': m.num_kv_heads or m.num_heads,
          'hidden_size': m.d_model, 'intermediate_size': m.d_ff, 'vocab_size': m.vocab_size,
          'max_position_embeddings': m.max_len, 'rms_norm_eps': m.layer_norm_eps, 'rope_theta': m.rope_theta,
          'hidden_act': 'silu', 'tie_word_embeddings': m.tie_embeddings, 'attention_bias': False, 'mlp_bias': False,
          'head_dim': m.d_model // m.num_heads}


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """Llama's tensors under `model.` (LlamaForQuestionAnswering's base model is `transformer.`: when the file's
  `names` say so, and for exports of a span head)."""
  task = heads_lib.architecture('Llama', m)
  bare = 'transformer.' if (any(n.startswith('transformer.') for n in names) if names else m.task_head == 'span') \
      else 'model.'
  h, kv, dh = m.num_heads, m.num_kv_heads or m.num_heads, m.d_model // m.num_heads
  out = [rules.one(f'{bare}embed_tokens.weight', 'embeddings/token/embedding')]
  out += rules.norm(f'{bare}norm', 'ln_final', bias=None)
  if not m.tie_embeddings and not task:
    out.append(rules.one('lm_head.weight', 'lm_head/kernel', np.transpose, np.transpose))
  for i in range(m.num_layers):
    p, o = f'{bare}layers.{i}', f'block_{i}'
    out += rules.norm(f'{p}.input_layernorm', f'{o}/ln_attn', bias=None)
    out += rules.norm(f'{p}.post_attention_layernorm', f'{o}/ln_mlp', bias=None)
    out += rules.heads_in(f'{p}.self_attn.q_proj', f'{o}/attn/query', h, dh, bias=False)
    out += rules.heads_in(f'{p}.self_attn.k_proj', f'{o}/attn/key', kv, dh, bias=False)
    out += rules.heads_in(f'{p}.self_attn.v_proj', f'{o}/attn/value', kv, dh, bias=False)
    out += rules.heads_out(f'{p}.self_attn.o_proj', f'{o}/attn/out', h, dh, bias=False)
    for hf_name, ours in (('gate_proj', 'fc_gate'), ('up_proj', 'fc_in'), ('down_proj', 'fc_out')):
      out.append(rules.one(f'{p}.mlp.{hf_name}.weight', f'{o}/mlp/{ours}/kernel', np.transpose, np.transpose))
  return out + heads_lib.head_rules(m, _HEAD_TENSORS)
