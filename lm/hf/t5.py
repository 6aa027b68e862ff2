"""T5 (T5ForConditionalGeneration) <-> lm's 't5' family: v1.1 (gated GELU, untied head) and v1.0 (ReLU, head tied
to the shared embedding with the d_model^-0.5 output scale). The relative position tables sit in block 0's
self-attention of each stack; HF nn.Linear weights are [out, in] and are transposed."""
import numpy as np

from lm.errors import ConfigError
from lm.hf import rules

IGNORED = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')  # tied copies of shared.weight
_ACTIVATIONS = {'gated-gelu': 'geglu', 'relu': 'relu'}  # HF feed_forward_proj -> lm model.activation


def preset(config):
  """The t5 family's preset."""
  from lm.config import base
  return base.t5(config)


def fits(m) -> bool:
  """True when an encoder-decoder's config.model has T5's layout."""
  return (m.position == 'relative' and m.norm_type == 'rmsnorm' and m.norm == 'pre' and not m.use_bias
          and m.activation in _ACTIVATIONS.values() and m.num_kv_heads in (0, m.num_heads))


def _tied(hf: dict) -> bool:
  """v1.0 (scaled, tied output): transformers >= 5 writes scale_decoder_outputs; older configs say
  tie_word_embeddings=False for v1.1."""
  if 'scale_decoder_outputs' in hf:
    return bool(hf['scale_decoder_outputs'])
  return hf.get('tie_word_embeddings', True) is not False


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json; ConfigError for a T5 layout lm does not have."""
  proj = hf.get('feed_forward_proj', 'relu')
  if proj not in _ACTIVATIONS:
    raise ConfigError(f'T5 feed_forward_proj={proj!r}: lm supports {sorted(_ACTIVATIONS)} (T5 v1.1 / v1.0)')
  if not hf.get('is_encoder_decoder', True):
    raise ConfigError('T5 config with is_encoder_decoder=false: lm converts the encoder-decoder only')
  layers = hf['num_layers']
  return {'num_layers': layers, 'num_decoder_layers': hf.get('num_decoder_layers') or layers,
          'num_heads': hf['num_heads'], 'd_model': hf['d_model'], 'head_dim': hf['d_kv'], 'd_ff': hf['d_ff'],
          'vocab_size': hf['vocab_size'], 'max_len': hf.get('n_positions', 512),
          'relative_attention_buckets': hf.get('relative_attention_num_buckets', 32),
          'relative_attention_max_distance': hf.get('relative_attention_max_distance', 128),
          'layer_norm_eps': hf.get('layer_norm_epsilon', 1e-6), 'activation': _ACTIVATIONS[proj],
          'tie_embeddings': _tied(hf), 'position': 'relative', 'norm': 'pre', 'norm_type': 'rmsnorm',
          'use_bias': False}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  proj = {v: k for k, v in _ACTIVATIONS.items()}[m.activation]
  return {'architectures': ['T5ForConditionalGeneration'], 'model_type': 't5', 'is_encoder_decoder': True,
          'd_model': m.d_model, 'd_kv': m.head_dim or m.d_model // m.num_heads, 'd_ff': m.d_ff,
          'num_layers': m.num_layers, 'num_decoder_layers': m.num_decoder_layers or m.num_layers,
          'num_heads': m.num_heads, 'vocab_size': m.vocab_size, 'n_positions': m.max_len,
          'relative_attention_num_buckets': m.relative_attention_buckets,
          'relative_attention_max_distance': m.relative_attention_max_distance,
          'layer_norm_epsilon': m.layer_norm_eps, 'feed_forward_proj': proj, 'dropout_rate': 0.0,
          'tie_word_embeddings': m.tie_embeddings, 'scale_decoder_outputs': m.tie_embeddings}


def token_ids(tokenizer) -> dict:
  """The config.json ids generation needs: T5 starts the decoder with the pad id."""
  return {'pad_token_id': tokenizer.pad_id, 'eos_token_id': tokenizer.eos_id,
          'decoder_start_token_id': tokenizer.pad_id}


def _attention(hf: str, ours: str, heads: int, head_dim: int) -> list[rules.Rule]:
  out = [r for name in ('q', 'k', 'v')
         for r in rules.heads_in(f'{hf}.{name}', f'{ours}/{dict(q="query", k="key", v="value")[name]}', heads,
                                 head_dim, bias=False)]
  return out + rules.heads_out(f'{hf}.o', f'{ours}/out', heads, head_dim, bias=False)


def _mlp(hf: str, ours: str, gated: bool) -> list[rules.Rule]:
  names = (('wi_0', 'fc_gate'), ('wi_1', 'fc_in'), ('wo', 'fc_out')) if gated else (('wi', 'fc_in'),
                                                                                     ('wo', 'fc_out'))
  return [rules.one(f'{hf}.{theirs}.weight', f'{ours}/{mine}/kernel', np.transpose, np.transpose)
          for theirs, mine in names]


def _stack(m, stack: str) -> list[rules.Rule]:
  """One stack's tensors: blocks (self-attention, [cross-attention,] MLP, norms), block 0's bias table, final norm."""
  heads, head_dim, gated = m.num_heads, m.head_dim or m.d_model // m.num_heads, m.activation == 'geglu'
  count = m.num_layers if stack == 'encoder' else (m.num_decoder_layers or m.num_layers)
  out = [rules.one(f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
                   f'{stack}_bias/embedding'),
         rules.one(f'{stack}.final_layer_norm.weight', f'{stack}/ln_final/scale')]
  sublayers = [('SelfAttention', 'attn', 'ln_attn')] + ([('EncDecAttention', 'cross', 'ln_cross')]
                                                         if stack == 'decoder' else [])
  for i in range(count):
    p, o = f'{stack}.block.{i}.layer', f'{stack}/block_{i}'
    for j, (theirs, mine, norm) in enumerate(sublayers):
      out += _attention(f'{p}.{j}.{theirs}', f'{o}/{mine}', heads, head_dim)
      out.append(rules.one(f'{p}.{j}.layer_norm.weight', f'{o}/{norm}/scale'))
    mlp = len(sublayers)
    out += _mlp(f'{p}.{mlp}.DenseReluDense', f'{o}/mlp', gated)
    out.append(rules.one(f'{p}.{mlp}.layer_norm.weight', f'{o}/ln_mlp/scale'))
  return out


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """T5's tensors. An untied model whose file has no lm_head.weight (transformers >= 5 ties it unless the file
  holds its own) takes its head from shared.weight, as transformers does."""
  embed = 'embeddings/token/embedding'
  out = _stack(m, 'encoder') + _stack(m, 'decoder')
  if m.tie_embeddings:
    return [rules.one('shared.weight', embed)] + out
  if names and 'lm_head.weight' not in names:
    return [rules.Rule('shared.weight', (embed, 'lm_head/kernel'), lambda a: (a, a.T), lambda xs: xs[0])] + out
  return [rules.one('shared.weight', embed), rules.one('lm_head.weight', 'lm_head/kernel', np.transpose,
                                                       np.transpose)] + out
