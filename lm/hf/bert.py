"""BERT (BertForPreTraining / ForMaskedLM / Model and the task classes of hf/heads.py) <-> lm's encoder: config keys
and one rule per tensor. HF nn.Linear weights are [out, in] and are transposed; heads a checkpoint lacks keep a fresh
init."""

from lm.errors import ConfigError
from lm.hf import heads, rules

_HEAD_TENSORS = {'class': 'classifier', 'span': 'qa_outputs', 'token': 'classifier'}


def preset(config):
  """The encoder family's preset (post-LN, exact GELU, token types, MLM + NSP)."""
  from lm.config import base
  return base.bert(config)


def fits(m) -> bool:
  """True when an encoder's config.model has BERT's layout."""
  return m.norm == 'post' and m.position == 'learned' and m.use_bias and m.norm_type == 'layernorm'


_BERT_ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh'}


def model_keys(hf: dict) -> dict:
  """lm's config.model keys from the HF config.json."""
  if hf.get('hidden_act', 'gelu') not in _BERT_ACTIVATIONS:
    raise ConfigError(f'BERT hidden_act={hf["hidden_act"]!r}: lm supports {sorted(_BERT_ACTIVATIONS)}')
  if hf.get('position_embedding_type', 'absolute') != 'absolute':
    raise ConfigError(f'BERT position_embedding_type={hf["position_embedding_type"]!r}: lm supports absolute only')
  return {**heads.task_keys(hf), 'num_layers': hf['num_hidden_layers'], 'num_heads': hf['num_attention_heads'],
          'd_model': hf['hidden_size'], 'd_ff': hf['intermediate_size'], 'vocab_size': hf['vocab_size'],
          'max_len': hf['max_position_embeddings'], 'type_vocab_size': hf.get('type_vocab_size', 2),
          'layer_norm_eps': hf.get('layer_norm_eps', 1e-12), 'activation': _BERT_ACTIVATIONS[hf.get('hidden_act',
                                                                                                   'gelu')],
          'norm': 'post', 'position': 'learned', 'tie_embeddings': True}


def hf_config(m) -> dict:
  """The HF config.json of an lm config.model."""
  out = {'architectures': [heads.architecture('Bert', m) or 'BertForPreTraining'], 'model_type': 'bert',
         'num_hidden_layers': m.num_layers,
         'num_attention_heads': m.num_heads, 'hidden_size': m.d_model, 'intermediate_size': m.d_ff,
         'vocab_size': m.vocab_size, 'max_position_embeddings': m.max_len, 'type_vocab_size': m.type_vocab_size,
         'layer_norm_eps': m.layer_norm_eps, 'hidden_act': 'gelu' if m.activation == 'gelu' else 'gelu_new',
         'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0, 'position_embedding_type': 'absolute'}
  return out


def _rules(m, prefix: str) -> list[rules.Rule]:
  h, dh = m.num_heads, m.d_model // m.num_heads
  e = f'{prefix}embeddings'
  out = [rules.one(f'{e}.word_embeddings.weight', 'embeddings/token/embedding'),
           rules.one(f'{e}.position_embeddings.weight', 'embeddings/position/embedding'),
           rules.one(f'{e}.token_type_embeddings.weight', 'embeddings/token_type/embedding')]
  out += rules.norm(f'{e}.LayerNorm', 'embeddings/norm')
  for i in range(m.num_layers):
    p, o = f'{prefix}encoder.layer.{i}', f'block_{i}'
    for name in ('query', 'key', 'value'):
      out += rules.heads_in(f'{p}.attention.self.{name}', f'{o}/attn/{name}', h, dh, bias=True)
    out += rules.heads_out(f'{p}.attention.output.dense', f'{o}/attn/out', h, dh, bias=True)
    out += rules.norm(f'{p}.attention.output.LayerNorm', f'{o}/ln_attn')
    out += rules.linear(f'{p}.intermediate.dense', f'{o}/mlp/fc_in')
    out += rules.linear(f'{p}.output.dense', f'{o}/mlp/fc_out')
    out += rules.norm(f'{p}.output.LayerNorm', f'{o}/ln_mlp')
  task = heads.architecture('Bert', m)
  if not task or m.task_head == 'class':  # the pooler: in the base model and sequence classification
    out += rules.linear(f'{prefix}pooler.dense', 'pooler/dense', required=False)
  if not task:  # the pretraining heads
    out += rules.linear('cls.predictions.transform.dense', 'mlm_transform/dense', required=False)
    out += rules.norm('cls.predictions.transform.LayerNorm', 'mlm_transform/ln', required=False)
    out += [rules.one('cls.predictions.bias', 'mlm_bias', required=False)]
    out += rules.linear('cls.seq_relationship', 'nsp_head/dense', required=False)
  return out + heads.head_rules(m, _HEAD_TENSORS)


def tensor_rules(m, names=()) -> list[rules.Rule]:
  """BERT's tensors, with the `bert.` prefix when the file's `names` have it (every head class) or for exports."""
  prefixed = not names or any(n.startswith('bert.') for n in names)
  return _rules(m, 'bert.' if prefixed else '')
