"""The model families lm knows, one record each. Everything outside a family's own module asks this registry.

A record is plain data plus the name of the family's module, imported on first use; that module defines:

  Model                      the linen module: takes a batch dict, returns a dict of outputs
  example_batch(config)      a one-row dummy batch with the keys the model reads (init and shape inference)
  check_config(config)       family-specific config checks (raise lm.errors.ConfigError)
  sparse_params(config)      parameters that do not run for every token (a head on a few positions): the FLOP
                             model (lm/perf/flops.py) discounts them

Adding a family: write its module, add one `Family(...)` to FAMILIES below. See WORKSPACE.md, "How to add a model
family". The data layer reads only the plain fields (example layouts), never model code.
"""
import dataclasses
import importlib
import types

from lm.models import lora

# Top-level modules a fine-tune adds to a pretrained network: init_from creates them fresh (anything else missing from
# the checkpoint is an error), and optimizer.freeze_all_but_head trains only them.
TASK_HEADS = ('class_head', 'qa_head', 'tag_head')  # heads.TASK_HEAD_NAMES
DEFAULT = 'gpt'  # config.model.type of the base config


def added_by_finetuning(path: str) -> bool:
  """True for the '/'-path of a parameter a fine-tune adds to a pretrained network: a task head's or a LoRA
  adapter's (init_from creates them fresh, LoRA trains and checkpoints only them)."""
  return path.split('/')[0] in TASK_HEADS or lora.is_adapter(path)


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family: what it is, which objectives and tasks it serves, and how data is laid out for it."""
  name: str  # config.model.type
  module: str  # the family's module (see the module docstring for what it defines)
  causal: bool  # a left-to-right decoder: generates text (lm.generate, samples), scored by next-token NLL
  objectives: tuple[str, ...]  # the objectives (lm/objectives.py) its outputs serve
  tasks: tuple[str, ...]  # the data.task values it trains on
  pretrain_examples: str  # pretraining example layout (lm/data/pipeline.py): 'packed' rows, 'sentence_pairs' or
  # 'span_corruption' (T5: encoder inputs with sentinels, decoder targets)
  class_summary: str  # where a classifier reads a sequence: 'first' ([CLS] ... [SEP]) or 'last' (a [SEP] b </s>)
  fills_masks: bool = False  # has an MLM head: lm.fill_mask works on it
  encoder_decoder: bool = False  # an encoder and a decoder: examples are (encoder_inputs, inputs -> targets)

  @property
  def impl(self) -> types.ModuleType:
    """The family's module."""
    return importlib.import_module(self.module)


FAMILIES = {f.name: f for f in (
    Family('gpt', 'lm.models.decoder', causal=True, objectives=('clm', 'classify', 'span', 'tag'),
           tasks=('pretrain', 'classify', 'sft', 'qa', 'tag'), pretrain_examples='packed', class_summary='last'),
    Family('bert', 'lm.models.encoder', causal=False,
           objectives=('mlm', 'nsp', 'contrastive', 'classify', 'span', 'tag'),
           tasks=('pretrain', 'classify', 'qa', 'tag'), pretrain_examples='sentence_pairs', class_summary='first',
           fills_masks=True),
    Family('t5', 'lm.models.t5', causal=False, objectives=('seq2seq',), tasks=('pretrain', 'seq2seq'),
           pretrain_examples='span_corruption', class_summary='first', encoder_decoder=True),
)}


def names() -> tuple[str, ...]:
  """The registered family names (the choices of config.model.type)."""
  return tuple(FAMILIES)


def get(name: str) -> Family:
  """The family record of `name` (config.model.type); ValueError naming the choices if there is none."""
  if name not in FAMILIES:
    raise ValueError(f'model.type={name!r} is unknown; choose one of {sorted(FAMILIES)}')
  return FAMILIES[name]


def build(model_cfg):
  """Instantiates the linen module of `model_cfg.type` from `config.model`."""
  from lm.models import layers
  family = get(model_cfg.type)
  return family.impl.Model(layers.ModelConfig.from_config(model_cfg, causal=family.causal))


def example_batch(config) -> dict:
  """A one-row dummy batch with the keys the config's model reads (for init and shape inference)."""
  return get(config.model.type).impl.example_batch(config)
