"""Which Hugging Face architectures lm converts, and the layout module (gpt2.py, bert.py, llama.py, t5.py) of each.

A layout module defines: `model_keys(hf config) -> config.model keys`, `hf_config(config.model) -> HF config.json`,
`tensor_rules(config.model, tensor names) -> [rules.Rule]`, `preset(config)` (the lm family preset it starts from)
and `fits(config.model)` (whether an lm model can be exported to it).
"""
import types
from typing import NamedTuple

from lm.errors import ConfigError
from lm.hf import bert, bloom, gpt2, heads, llama, opt, t5
from lm.models import registry


class Architecture(NamedTuple):
  layout: types.ModuleType  # gpt2, bert, llama, bloom, opt or t5
  ignored: tuple[str, ...]  # tensor name parts skipped when importing: buffers and tied copies


_BERT_HEADS = ('position_ids', 'cls.predictions.decoder')
ARCHITECTURES = {
    'GPT2LMHeadModel': Architecture(gpt2, gpt2.IGNORED),
    'BertForPreTraining': Architecture(bert, _BERT_HEADS),
    'BertForMaskedLM': Architecture(bert, _BERT_HEADS),
    'BertModel': Architecture(bert, ('position_ids',)),
    'BertForSequenceClassification': Architecture(bert, ('position_ids',)),
    'BertForQuestionAnswering': Architecture(bert, ('position_ids',)),
    'BertForTokenClassification': Architecture(bert, ('position_ids',)),
    'GPT2ForQuestionAnswering': Architecture(gpt2, gpt2.IGNORED),
    'GPT2ForTokenClassification': Architecture(gpt2, gpt2.IGNORED),
    'LlamaForCausalLM': Architecture(llama, llama.IGNORED),
    'LlamaForQuestionAnswering': Architecture(llama, llama.IGNORED),
    'LlamaForTokenClassification': Architecture(llama, llama.IGNORED),
    'BloomForCausalLM': Architecture(bloom, bloom.IGNORED),
    'OPTForCausalLM': Architecture(opt, opt.IGNORED),
    'T5ForConditionalGeneration': Architecture(t5, t5.IGNORED),
}
# The decoder layouts an lm decoder may export to: (HF model name, its language-model class, the layout module).
_DECODER_LAYOUTS = (('GPT2', 'GPT2LMHeadModel', gpt2), ('Llama', 'LlamaForCausalLM', llama),
                    ('Bloom', 'BloomForCausalLM', bloom), ('OPT', 'OPTForCausalLM', opt))


def export_architecture(model_cfg) -> str:
  """The HF architecture an lm model exports to: encoders BertForPreTraining, decoders the language-model class of
  the first of _DECODER_LAYOUTS whose layout they fit (GPT2LMHeadModel when none does: then the error says why),
  or the `<Model>For<Task>` class of a task head (hf/heads.py); encoder-decoders T5ForConditionalGeneration.
  ConfigError when it fits none."""
  m = model_cfg
  if registry.get(m.type).encoder_decoder:
    arch = 'T5ForConditionalGeneration'
  else:
    name, language_model = ('Bert', 'BertForPreTraining') if not registry.get(m.type).causal else next(
        ((n, lm_class) for n, lm_class, layout in _DECODER_LAYOUTS if layout.fits(m)), _DECODER_LAYOUTS[0][:2])
    arch = heads.architecture(name, m) or language_model
    if arch not in ARCHITECTURES:
      raise ConfigError(f'model.task_head={m.task_head!r} on a {name} layout: lm has no {arch} export; exportable task '
                        f'heads: {sorted(a for a in ARCHITECTURES if heads.task_head(a))}')
  if not ARCHITECTURES[arch].layout.fits(m):
    raise ConfigError(f'this model (norm={m.norm}, norm_type={m.norm_type}, activation={m.activation}, '
                      f'position={m.position}, use_bias={m.use_bias}, tie_embeddings={m.tie_embeddings}, '
                      f'num_kv_heads={m.num_kv_heads}) has no {arch} layout in transformers; it cannot be exported')
  return arch
