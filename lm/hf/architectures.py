"""How Hugging Face GPT-2, BERT and Llama checkpoints map onto lm's models: config keys and one Rule per tensor.

A Rule names an HF tensor, the lm parameter(s) it becomes ('block_0/attn/query/kernel'), and the two reshapes. HF
`nn.Linear` weights are [out, in] (transposed here), GPT-2's `Conv1D` weights are already [in, out], attention
projections become lm's [d_model, heads, head_dim] / [heads, head_dim, d_model] kernels, and GPT-2's fused c_attn
splits into query, key and value.
"""
import dataclasses
from typing import Callable

import numpy as np

from lm.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str
  ours: tuple  # lm parameter paths
  to_ours: Callable  # HF array -> tuple of lm arrays
  to_hf: Callable  # tuple of lm arrays -> HF array
  required: bool = True  # False: a head the checkpoint may lack (then lm keeps its fresh init)


def _one(hf: str, ours: str, fwd=lambda a: a, back=lambda x: x, required: bool = True) -> Rule:
  return Rule(hf, (ours,), lambda a: (fwd(a),), lambda xs: back(xs[0]), required)


def _linear(hf: str, ours: str, required: bool = True) -> list[Rule]:
  """nn.Linear [out, in] + bias -> Dense kernel [in, out] + bias."""
  return [_one(f'{hf}.weight', f'{ours}/kernel', np.transpose, np.transpose, required),
          _one(f'{hf}.bias', f'{ours}/bias', required=required)]


def _norm(hf: str, ours: str, weight: str = 'weight', bias: str | None = 'bias', required: bool = True) -> list:
  rules = [_one(f'{hf}.{weight}', f'{ours}/scale', required=required)]
  return rules + ([_one(f'{hf}.{bias}', f'{ours}/bias', required=required)] if bias else [])


def _heads_in(hf: str, ours: str, heads: int, head_dim: int, bias: bool) -> list[Rule]:
  """nn.Linear [heads*head_dim, d] -> HeadsDense kernel [d, heads, head_dim] (+ bias [heads, head_dim])."""
  rules = [_one(f'{hf}.weight', f'{ours}/kernel', lambda a: a.T.reshape(a.shape[1], heads, head_dim),
                lambda x: x.reshape(x.shape[0], -1).T)]
  if bias:
    rules.append(_one(f'{hf}.bias', f'{ours}/bias', lambda a: a.reshape(heads, head_dim), lambda x: x.reshape(-1)))
  return rules


def _heads_out(hf: str, ours: str, heads: int, head_dim: int, bias: bool) -> list[Rule]:
  """nn.Linear [d, heads*head_dim] -> HeadsDense kernel [heads, head_dim, d] (+ bias [d])."""
  rules = [_one(f'{hf}.weight', f'{ours}/kernel', lambda a: a.T.reshape(heads, head_dim, a.shape[0]),
                lambda x: x.reshape(-1, x.shape[-1]).T)]
  return rules + ([_one(f'{hf}.bias', f'{ours}/bias')] if bias else [])


# ---------------------------------------------------------------------------------------------------------- GPT-2
def gpt2_model(hf: dict) -> dict:
  if hf.get('activation_function', 'gelu_new') not in ('gelu_new', 'gelu_pytorch_tanh', 'gelu_fast'):
    raise ConfigError(f'GPT-2 activation_function={hf["activation_function"]!r}: lm supports the tanh GELU only')
  d = hf['n_embd']
  return {'type': 'gpt', 'num_layers': hf['n_layer'], 'num_heads': hf['n_head'], 'd_model': d,
          'd_ff': hf.get('n_inner') or 4 * d, 'vocab_size': hf['vocab_size'], 'max_len': hf['n_positions'],
          'layer_norm_eps': hf.get('layer_norm_epsilon', 1e-5), 'activation': 'gelu_tanh', 'norm': 'pre',
          'position': 'learned', 'tie_embeddings': True}


def gpt2_config(m) -> dict:
  return {'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2', 'n_layer': m.num_layers, 'n_head': m.num_heads,
          'n_embd': m.d_model, 'n_inner': m.d_ff, 'vocab_size': m.vocab_size, 'n_positions': m.max_len,
          'n_ctx': m.max_len, 'layer_norm_epsilon': m.layer_norm_eps, 'activation_function': 'gelu_new',
          'tie_word_embeddings': True, 'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0}


def gpt2_rules(m, prefix: str = 'transformer.') -> list[Rule]:
  """GPT-2's tensors; `prefix` is '' for files saved from a bare GPT2Model (e.g. the original `gpt2` upload)."""
  h, dh, d = m.num_heads, m.d_model // m.num_heads, m.d_model
  split_w = lambda a: tuple(part.reshape(d, h, dh) for part in np.split(a, 3, axis=1))
  join_w = lambda xs: np.concatenate([x.reshape(d, d) for x in xs], axis=1)
  split_b = lambda a: tuple(part.reshape(h, dh) for part in np.split(a, 3))
  join_b = lambda xs: np.concatenate([x.reshape(-1) for x in xs])
  rules = [_one(f'{prefix}wte.weight', 'embeddings/token/embedding'),
           _one(f'{prefix}wpe.weight', 'embeddings/position/embedding')]
  rules += _norm(f'{prefix}ln_f', 'ln_final')
  for i in range(m.num_layers):
    p, o = f'{prefix}h.{i}', f'block_{i}'
    qkv = tuple(f'{o}/attn/{n}' for n in ('query', 'key', 'value'))
    rules += _norm(f'{p}.ln_1', f'{o}/ln_attn') + _norm(f'{p}.ln_2', f'{o}/ln_mlp')
    rules += [Rule(f'{p}.attn.c_attn.weight', tuple(f'{q}/kernel' for q in qkv), split_w, join_w),
              Rule(f'{p}.attn.c_attn.bias', tuple(f'{q}/bias' for q in qkv), split_b, join_b),
              _one(f'{p}.attn.c_proj.weight', f'{o}/attn/out/kernel', lambda a: a.reshape(h, dh, d),
                   lambda x: x.reshape(d, d)),
              _one(f'{p}.attn.c_proj.bias', f'{o}/attn/out/bias'),
              _one(f'{p}.mlp.c_fc.weight', f'{o}/mlp/fc_in/kernel'), _one(f'{p}.mlp.c_fc.bias', f'{o}/mlp/fc_in/bias'),
              _one(f'{p}.mlp.c_proj.weight', f'{o}/mlp/fc_out/kernel'),
              _one(f'{p}.mlp.c_proj.bias', f'{o}/mlp/fc_out/bias')]
  return rules


# ----------------------------------------------------------------------------------------------------------- BERT
_BERT_ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh'}


def bert_model(hf: dict) -> dict:
  if hf.get('hidden_act', 'gelu') not in _BERT_ACTIVATIONS:
    raise ConfigError(f'BERT hidden_act={hf["hidden_act"]!r}: lm supports {sorted(_BERT_ACTIVATIONS)}')
  if hf.get('position_embedding_type', 'absolute') != 'absolute':
    raise ConfigError(f'BERT position_embedding_type={hf["position_embedding_type"]!r}: lm supports absolute only')
  labels = len(hf['id2label']) if hf.get('architectures', [''])[0] == 'BertForSequenceClassification' else 0
  return {'type': 'bert', 'num_layers': hf['num_hidden_layers'], 'num_heads': hf['num_attention_heads'],
          'd_model': hf['hidden_size'], 'd_ff': hf['intermediate_size'], 'vocab_size': hf['vocab_size'],
          'max_len': hf['max_position_embeddings'], 'type_vocab_size': hf.get('type_vocab_size', 2),
          'layer_norm_eps': hf.get('layer_norm_eps', 1e-12), 'activation': _BERT_ACTIVATIONS[hf.get('hidden_act',
                                                                                                   'gelu')],
          'norm': 'post', 'position': 'learned', 'tie_embeddings': True, 'num_labels': labels}


def bert_config(m) -> dict:
  arch = 'BertForSequenceClassification' if m.num_labels else 'BertForPreTraining'
  out = {'architectures': [arch], 'model_type': 'bert', 'num_hidden_layers': m.num_layers,
         'num_attention_heads': m.num_heads, 'hidden_size': m.d_model, 'intermediate_size': m.d_ff,
         'vocab_size': m.vocab_size, 'max_position_embeddings': m.max_len, 'type_vocab_size': m.type_vocab_size,
         'layer_norm_eps': m.layer_norm_eps, 'hidden_act': 'gelu' if m.activation == 'gelu' else 'gelu_new',
         'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0, 'position_embedding_type': 'absolute'}
  if m.num_labels:
    out['id2label'] = {str(i): f'LABEL_{i}' for i in range(m.num_labels)}
    out['label2id'] = {f'LABEL_{i}': i for i in range(m.num_labels)}
  return out


def bert_rules(m, prefix: str = 'bert.') -> list[Rule]:
  h, dh = m.num_heads, m.d_model // m.num_heads
  e = f'{prefix}embeddings'
  rules = [_one(f'{e}.word_embeddings.weight', 'embeddings/token/embedding'),
           _one(f'{e}.position_embeddings.weight', 'embeddings/position/embedding'),
           _one(f'{e}.token_type_embeddings.weight', 'embeddings/token_type/embedding')]
  rules += _norm(f'{e}.LayerNorm', 'embeddings/norm')
  for i in range(m.num_layers):
    p, o = f'{prefix}encoder.layer.{i}', f'block_{i}'
    for name in ('query', 'key', 'value'):
      rules += _heads_in(f'{p}.attention.self.{name}', f'{o}/attn/{name}', h, dh, bias=True)
    rules += _heads_out(f'{p}.attention.output.dense', f'{o}/attn/out', h, dh, bias=True)
    rules += _norm(f'{p}.attention.output.LayerNorm', f'{o}/ln_attn')
    rules += _linear(f'{p}.intermediate.dense', f'{o}/mlp/fc_in') + _linear(f'{p}.output.dense', f'{o}/mlp/fc_out')
    rules += _norm(f'{p}.output.LayerNorm', f'{o}/ln_mlp')
  rules += _linear(f'{prefix}pooler.dense', 'pooler/dense', required=False)
  rules += _linear('cls.predictions.transform.dense', 'mlm_transform/dense', required=False)
  rules += _norm('cls.predictions.transform.LayerNorm', 'mlm_transform/ln', required=False)
  rules += [_one('cls.predictions.bias', 'mlm_bias', required=False)]
  rules += _linear('cls.seq_relationship', 'nsp_head/dense', required=False)
  if m.num_labels:
    rules += _linear('classifier', 'class_head/dense', required=False)
  return rules


# ---------------------------------------------------------------------------------------------------------- Llama
def llama_model(hf: dict) -> dict:
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
  return {'type': 'gpt', 'num_layers': hf['num_hidden_layers'], 'num_heads': heads, 'd_model': d,
          'd_ff': hf['intermediate_size'], 'vocab_size': hf['vocab_size'], 'max_len': hf['max_position_embeddings'],
          'num_kv_heads': hf.get('num_key_value_heads') or heads, 'layer_norm_eps': hf.get('rms_norm_eps', 1e-6),
          'rope_theta': float(rope.get('rope_theta', hf.get('rope_theta', 10000.0))), 'norm': 'pre',
          'norm_type': 'rmsnorm', 'activation': 'swiglu', 'position': 'rope', 'use_bias': False,
          'tie_embeddings': bool(hf.get('tie_word_embeddings', False))}


def llama_config(m) -> dict:
  return {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'num_hidden_layers': m.num_layers,
          'num_attention_heads': m.num_heads, 'num_key_value_heads': m.num_kv_heads or m.num_heads,
          'hidden_size': m.d_model, 'intermediate_size': m.d_ff, 'vocab_size': m.vocab_size,
          'max_position_embeddings': m.max_len, 'rms_norm_eps': m.layer_norm_eps, 'rope_theta': m.rope_theta,
          'hidden_act': 'silu', 'tie_word_embeddings': m.tie_embeddings, 'attention_bias': False, 'mlp_bias': False,
          'head_dim': m.d_model // m.num_heads}


def llama_rules(m) -> list[Rule]:
  h, kv, dh = m.num_heads, m.num_kv_heads or m.num_heads, m.d_model // m.num_heads
  rules = [_one('model.embed_tokens.weight', 'embeddings/token/embedding')]
  rules += _norm('model.norm', 'ln_final', bias=None)
  if not m.tie_embeddings:
    rules.append(_one('lm_head.weight', 'lm_head/kernel', np.transpose, np.transpose))
  for i in range(m.num_layers):
    p, o = f'model.layers.{i}', f'block_{i}'
    rules += _norm(f'{p}.input_layernorm', f'{o}/ln_attn', bias=None)
    rules += _norm(f'{p}.post_attention_layernorm', f'{o}/ln_mlp', bias=None)
    rules += _heads_in(f'{p}.self_attn.q_proj', f'{o}/attn/query', h, dh, bias=False)
    rules += _heads_in(f'{p}.self_attn.k_proj', f'{o}/attn/key', kv, dh, bias=False)
    rules += _heads_in(f'{p}.self_attn.v_proj', f'{o}/attn/value', kv, dh, bias=False)
    rules += _heads_out(f'{p}.self_attn.o_proj', f'{o}/attn/out', h, dh, bias=False)
    for hf_name, ours in (('gate_proj', 'fc_gate'), ('up_proj', 'fc_in'), ('down_proj', 'fc_out')):
      rules.append(_one(f'{p}.mlp.{hf_name}.weight', f'{o}/mlp/{ours}/kernel', np.transpose, np.transpose))
  return rules


# HF architecture -> (family, lm model keys from the HF config, HF config from lm's model config, rules, tensors to
# ignore when importing: buffers and tied copies).
ARCHITECTURES = {
    'GPT2LMHeadModel': ('gpt2', gpt2_model, gpt2_config, gpt2_rules, ('.attn.bias', '.attn.masked_bias',
                                                                      'lm_head.weight')),
    'BertForPreTraining': ('bert', bert_model, bert_config, bert_rules, ('position_ids', 'cls.predictions.decoder')),
    'BertForMaskedLM': ('bert', bert_model, bert_config, bert_rules, ('position_ids', 'cls.predictions.decoder')),
    'BertModel': ('bert', bert_model, bert_config, bert_rules, ('position_ids',)),
    'BertForSequenceClassification': ('bert', bert_model, bert_config, bert_rules, ('position_ids',)),
    'LlamaForCausalLM': ('llama', llama_model, llama_config, llama_rules, ('rotary_emb.inv_freq',)),
}


def family_of(model_cfg) -> str:
  """'llama', 'gpt2' or 'bert': which HF layout an lm model exports to; ConfigError when it fits none."""
  m = model_cfg
  if m.type == 'bert':
    family, fits = 'bert', m.norm == 'post' and m.position == 'learned' and m.use_bias and m.norm_type == 'layernorm'
  elif m.norm_type == 'rmsnorm':
    family, fits = 'llama', m.position == 'rope' and m.activation == 'swiglu' and not m.use_bias and m.norm == 'pre'
  else:
    family = 'gpt2'
    fits = (m.position == 'learned' and m.tie_embeddings and m.use_bias and m.norm == 'pre'
            and m.activation == 'gelu_tanh' and m.num_kv_heads in (0, m.num_heads))
  if not fits:
    raise ConfigError(f'this model (norm={m.norm}, norm_type={m.norm_type}, activation={m.activation}, '
                      f'position={m.position}, use_bias={m.use_bias}, tie_embeddings={m.tie_embeddings}, '
                      f'num_kv_heads={m.num_kv_heads}) has no {family} layout in transformers; it cannot be exported')
  return family
