"""OPT (OPTForCausalLM) <-> lm's decoder in the OPT layout: learned positions with OPT's offset of 2 (the whole
table, its two unused rows included, so round trips are exact: model.position_offset=2), pre-LN blocks with a final
LayerNorm, ReLU, biases, a tied head. The post-LN layout (do_layer_norm_before=false, OPT-350m) and the
project_in / project_out of word_embed_proj_dim != hidden_size are refused."""
import numpy as np

from lm.errors import ConfigError
from lm.hf import heads as heads_lib, rules

IGNORED = ('lm_head.weight',)  # the tied head's copy, when importing
_HEAD_TENSORS = {'span': 'qa_outputs'}
OFFSET = 2  # OPTLearnedPositionalEmbedding: position p reads row p + 2


def preset(config):
  """The decoder's OPT layout."""
  from lm.config import base
  return base.opt(config)


def fits(m) -> bool:
  """True when a decoder's config.model has OPT's layout."""
  return (m.position == 'learned' and m.position_offset == OFFSET and not m.embedding_norm and m.norm == 'pre'
          and m.norm_type == 'layernorm' and m.activation == 'relu' and m.num_kv_heads in (0, m.num_heads)
          and m.head_dim in (0, m.d_model // m.num_heads))


def _refuse_unsupported(hf: dict) -> None:
  d = hf['hidden_size']
  if not hf.get('do_layer_norm_before', True) or hf.get('_remove_final_layer_norm'):
    raise ConfigError('OPT do_layer_norm_before=false (the post-LN layout of OPT-350m): not supported; lm converts '
                      'the pre-LN OPT models')
  if hf.get('word_embed_proj_dim', d) != d:
    raise ConfigError(f'OPT word_embed_proj_dim={hf["word_embed_proj_dim"]} != hidden_size={d} (project_in / '
                      'project_out): not supported')
  if not hf.get('layer_norm_elementwise_affine', True):
    raise ConfigError('OPT layer_norm_elementwise_affine=false: not supported (lm\'s layer norms have scale and bias)')
  if hf.get('activation_function', 'relu') != 'relu':
    raise ConfigError(f'OPT activation_function={hf["activation_function"]!r}: lm supports relu only')


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json; ConfigError (one line naming the field) for the layouts lm
  does not compute."""
  _refuse_unsupported(hf)
  return {**heads_lib.task_keys(hf), 'num_layers': hf['num_hidden_layers'], 'num_heads': hf['num_attention_heads'],
          'd_model': hf['hidden_size'], 'd_ff': hf['ffn_dim'], 'vocab_size': hf['vocab_size'],
          'max_len': hf['max_position_embeddings'], 'position': 'learned', 'position_offset': OFFSET,
          'use_bias': bool(hf.get('enable_bias', True)), 'layer_norm_eps': 1e-5,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', True))}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  return {'architectures': [heads_lib.architecture('OPT', m) or 'OPTForCausalLM'], 'model_type': 'opt',
          'num_hidden_layers': m.num_layers, 'num_attention_heads': m.num_heads, 'hidden_size': m.d_model,
          'word_embed_proj_dim': m.d_model, 'ffn_dim': m.d_ff, 'vocab_size': m.vocab_size,
          'max_position_embeddings': m.max_len, 'do_layer_norm_before': True, 'activation_function': 'relu',
          'enable_bias': m.use_bias, 'layer_norm_elementwise_affine': True, 'tie_word_embeddings': m.tie_embeddings,
          'dropout': 0.0, 'attention_dropout': 0.0, 'activation_dropout': 0.0, 'layerdrop': 0.0}


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """OPT's tensors under `model.decoder.` (`decoder.` when the file's `names` lack `model.`, as OPTModel saves)."""
  bare = bool(names) and not any(n.startswith('model.') for n in names)
  prefix, task = 'decoder.' if bare else 'model.decoder.', heads_lib.architecture('OPT', m)
  h, dh = m.num_heads, m.d_model // m.num_heads
  out = [rules.one(f'{prefix}embed_tokens.weight', 'embeddings/token/embedding'),
         rules.one(f'{prefix}embed_positions.weight', 'embeddings/position/embedding')]
  out += rules.norm(f'{prefix}final_layer_norm', 'ln_final')
  if not m.tie_embeddings and not task:
    out.append(rules.one('lm_head.weight', 'lm_head/kernel', np.transpose, np.transpose))
  for i in range(m.num_layers):
    p, o = f'{prefix}layers.{i}', f'block_{i}'
    out += rules.norm(f'{p}.self_attn_layer_norm', f'{o}/ln_attn') + rules.norm(f'{p}.final_layer_norm', f'{o}/ln_mlp')
    for hf_name, ours in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value')):
      out += rules.heads_in(f'{p}.self_attn.{hf_name}', f'{o}/attn/{ours}', h, dh, bias=m.use_bias)
    out += rules.heads_out(f'{p}.self_attn.out_proj', f'{o}/attn/out', h, dh, bias=m.use_bias)
    for hf_name, ours in (('fc1', 'fc_in'), ('fc2', 'fc_out')):
      out += (rules.linear(f'{p}.{hf_name}', f'{o}/mlp/{ours}') if m.use_bias else
              [rules.one(f'{p}.{hf_name}.weight', f'{o}/mlp/{ours}/kernel', np.transpose, np.transpose)])
  return out + heads_lib.head_rules(m, _HEAD_TENSORS)
