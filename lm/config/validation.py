"""Config validation: every bad value is rejected before any compile, with one line naming the key and the fix."""
import re

import ml_collections

from lm.config import base, inherit, resume
from lm.errors import ConfigError
from lm.models import registry
from lm.store import paths

CHOICES = {  # model.type: a name in models/registry.py (checked against the registry as it is at validation)
    'model.norm': ('pre', 'post'),
    'model.activation': ('gelu_tanh', 'gelu', 'swiglu', 'geglu', 'relu'),
    'model.norm_type': ('layernorm', 'rmsnorm'),
    'model.position': ('learned', 'rope', 'relative', 'alibi'),
    'model.dtype': ('float32', 'bfloat16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'model.attention_impl': ('einsum', 'xla', 'cudnn', 'auto', 'pallas_tpu'),
    'model.projection_impl': ('auto', 'matmul', 'einsum'),
    'model.remat': ('none', 'full', 'dots'),
    'data.task': ('pretrain', 'classify', 'sft', 'seq2seq', 'qa', 'tag'),
    'model.task_head': ('class', 'span', 'token'),
    'data.source': ('embedded', 'text', 'jsonl', 'csv', 'parquet', 'tfds', 'gettext'),
    'data.packing': ('packed', 'concat'),
    'data.span_targets': ('sentinels', 'original'),
    'data.code_target': ('docstring', 'name'),
    'data.tokenizer_type': ('bpe', 'unigram'),
    'optimizer.name': ('adamw', 'adafactor'),
    'optimizer.schedule': ('cosine', 'linear', 'constant'),
    'nonfinite_policy': ('stop', 'skip'),
}
POSITIVE = ('generation_num_beams', 'num_train_steps',
            'max_skipped_steps', 'batch_size', 'seq_len', 'grad_accum_steps', 'log_every_steps',
            'forgetting_eval_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'model.num_layers',
            'model.num_heads', 'model.d_model', 'model.d_ff', 'model.vocab_size', 'model.max_len',
            'data.tokenizer_sentences', 'data.num_threads', 'data.store_shard_documents')
NON_NEGATIVE = ('eval_every_steps', 'eval_steps', 'early_stopping_patience', 'forgetting_every_steps',
                'model.num_labels', 'model.num_kv_heads', 'model.attention_block', 'model.head_dim',
                'model.num_decoder_layers',
                'data.target_len', 'data.num_sentinels', 'z_loss', 'loss_chunk_size', 'generation_eval_examples',
                'generation_max_new_tokens', 'optimizer.freeze_layers', 'num_samples',
                'sample_max_new_tokens',
                'sample_temperature', 'data.max_documents', 'data.prefetch', 'data.tokenizer_sample_bytes',
                'optimizer.learning_rate',
                'optimizer.warmup_steps', 'optimizer.weight_decay', 'optimizer.grad_clip_norm', 'optimizer.eps')
FREE_FORM = resume.FREE_FORM


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _check_keys_and_types(config, reference, prefix=''):
  """Every key of `config` exists in the base config with the same type (an int may stand for a float)."""
  for key, value in config.items():
    name = prefix + key
    if key not in reference:
      raise ConfigError(f'{name}: unknown config key; see lm/config/base.py for the keys that exist')
    ref = reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f'{name}: must be a sub-config like in lm/config/base.py, got {type(value).__name__}')
      if name not in FREE_FORM:
        _check_keys_and_types(value, ref, name + '.')
      continue
    ok = isinstance(value, type(ref)) and not (isinstance(value, bool) and not isinstance(ref, bool))
    ok = ok or (isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
      raise ConfigError(f'{name}: expected {type(ref).__name__}, got {value!r} ({type(value).__name__})')


def _check_values(config):
  if config.model.type not in registry.names():
    raise ConfigError(f'model.type={config.model.type!r} is not one of {registry.names()} (lm/models/registry.py)')
  for key, allowed in CHOICES.items():
    if _get(config, key) not in allowed:
      raise ConfigError(f'{key}={_get(config, key)!r} is not one of {allowed}')
  for key in POSITIVE:
    if _get(config, key) <= 0:
      raise ConfigError(f'{key}={_get(config, key)} must be > 0')
  for key in NON_NEGATIVE:
    if _get(config, key) < 0:
      raise ConfigError(f'{key}={_get(config, key)} must be >= 0')
  if not 0.0 <= config.model.dropout < 1.0:
    raise ConfigError(f'model.dropout={config.model.dropout} must be in [0, 1)')
  for key in ('data.mask_prob', 'data.nsp_random_prob', 'data.short_seq_prob'):
    if not 0.0 <= _get(config, key) <= 1.0:
      raise ConfigError(f'{key}={_get(config, key)} must be in [0, 1]')
  if not 0.0 < config.optimizer.adafactor_decay_rate <= 1.0:
    raise ConfigError(f'optimizer.adafactor_decay_rate={config.optimizer.adafactor_decay_rate} must be in (0, 1] '
                      '(t5x: 0.8)')
  if config.contrastive_temperature <= 0:
    raise ConfigError(f'contrastive_temperature={config.contrastive_temperature} must be > 0')
  if not 0.0 <= config.data.eval_fraction < 1.0:
    raise ConfigError(f'data.eval_fraction={config.data.eval_fraction} must be in [0, 1)')


def _check_model(config):
  m = config.model
  if m.d_model % m.num_heads and not m.head_dim:
    raise ConfigError(f'model.d_model={m.d_model} is not divisible by model.num_heads={m.num_heads}; make it so, '
                      'or set model.head_dim')
  if m.num_kv_heads and m.num_heads % m.num_kv_heads:
    raise ConfigError(f'model.num_kv_heads={m.num_kv_heads} must divide model.num_heads={m.num_heads} '
                      '(grouped-query attention; 0 = num_heads)')
  if m.position == 'rope' and (m.head_dim or m.d_model // m.num_heads) % 2:
    raise ConfigError(f'model.position=rope needs an even head size, got {m.head_dim or m.d_model // m.num_heads}')
  if m.position_offset < 0 or (m.position_offset and m.position != 'learned'):
    raise ConfigError(f'model.position_offset={m.position_offset} must be >= 0 and needs model.position=learned')
  if m.attention_impl == 'cudnn' and m.dtype != 'bfloat16':
    raise ConfigError("model.attention_impl='cudnn' needs model.dtype='bfloat16' (cuDNN attention is fp16/bf16)")
  if m.attention_impl == 'pallas_tpu' and (m.position == 'alibi' or not registry.get(m.type).causal):
    raise ConfigError("model.attention_impl='pallas_tpu' is the causal Pallas flash kernel without a score bias: it "
                      f"needs a decoder without ALiBi (model.type={m.type!r}, position={m.position!r}); use 'einsum'")
  if config.num_samples and config.sample_max_new_tokens >= m.max_len:
    raise ConfigError(f'sample_max_new_tokens={config.sample_max_new_tokens} must be < model.max_len={m.max_len}')
  registry.get(m.type).impl.check_config(config)
  if config.seq_len > m.max_len:
    raise ConfigError(f'seq_len={config.seq_len} exceeds model.max_len={m.max_len}; lower seq_len or raise max_len')


def _check_data_and_objectives(config):
  from lm import objectives  # local: objectives imports jax, which validation of plain fields does not need
  d = config.data
  if d.source in ('text', 'jsonl', 'csv', 'parquet') and not d.path:
    raise ConfigError(f'data.path is empty but data.source={d.source!r} needs it; set --config.data.path=FILES')
  if d.source == 'tfds' and not d.tfds_name:
    raise ConfigError("data.tfds_name is empty but data.source='tfds' needs it, e.g. --config.data.tfds_name=lm1b")
  if d.mixture:
    from lm.data import mixture
    if d.task != 'pretrain':
      raise ConfigError(f"data.mixture mixes pretraining sources; data.task={d.task!r} reads one record set")
    mixture.components(config)
  paths.check_usable(d.store, 'data.store', write=False)
  paths.check_usable(d.tokenizer, 'data.tokenizer', write=False)
  if d.tokenizer and not paths.path(d.tokenizer).is_file():
    raise ConfigError(f'data.tokenizer: no file at {d.tokenizer!r}; give a SentencePiece .model or leave it empty')
  if not config.objectives:
    raise ConfigError('objectives: empty; name at least one, e.g. --config.objectives.clm=1.0')
  for name, weight in config.objectives.items():
    if name not in objectives.OBJECTIVES:
      raise ConfigError(f'objectives.{name}: unknown objective; choose from {sorted(objectives.OBJECTIVES)}')
    if not isinstance(weight, (int, float)) or weight < 0:
      raise ConfigError(f'objectives.{name}={weight!r} must be a weight >= 0')
    family = registry.get(config.model.type)
    if name not in family.objectives:
      serving = tuple(f.name for f in registry.FAMILIES.values() if name in f.objectives)
      raise ConfigError(f'objectives.{name} needs model.type in {serving}, not {config.model.type!r}')
  if config.loss_chunk_size and 'clm' not in config.objectives:
    raise ConfigError(f'loss_chunk_size={config.loss_chunk_size} fuses the clm objective\'s LM head and loss, but '
                      f'objectives={dict(config.objectives)} has no clm; set --config.loss_chunk_size=0')


# data.task -> (the objectives it feeds, the sources it reads); the model families that take it: Family.tasks
TASKS = {
    'pretrain': (('clm', 'mlm', 'nsp', 'contrastive', 'seq2seq'), ('embedded', 'text', 'jsonl', 'parquet', 'tfds')),
    'classify': (('classify',), ('embedded', 'jsonl', 'csv', 'tfds')),
    'sft': (('clm',), ('embedded', 'jsonl')),
    'seq2seq': (('seq2seq',), ('embedded', 'jsonl', 'csv', 'tfds', 'gettext')),
    'qa': (('span',), ('embedded', 'jsonl', 'tfds')),
    'tag': (('tag',), ('embedded', 'jsonl', 'tfds')),
}
TASK_HEAD = {'qa': 'span', 'tag': 'token'}  # data.task -> the model.task_head it needs ('class' for the others)


def _check_task(config):
  """data.task fits the objectives, the source and the model; task-only keys are not set for other tasks."""
  task, d = config.data.task, config.data
  task_objectives, task_sources = TASKS[task]
  task_models = tuple(f.name for f in registry.FAMILIES.values() if task in f.tasks)
  for name in config.objectives:
    if name not in task_objectives:
      raise ConfigError(f'objectives.{name} does not go with data.task={task!r}, which feeds {task_objectives}')
  if d.source not in task_sources:
    raise ConfigError(f'data.source={d.source!r} does not go with data.task={task!r}; use one of {task_sources}')
  if config.model.type not in task_models:
    raise ConfigError(f'data.task={task!r} needs model.type in {task_models}, not {config.model.type!r}')
  head = TASK_HEAD.get(task, 'class')
  if config.model.task_head != head:
    raise ConfigError(f'model.task_head={config.model.task_head!r} does not go with data.task={task!r}; set '
                      f'--config.model.task_head={head} (configs: base.qa(c) / base.tag(c) set both)')
  if config.model.num_labels == 1 or (config.model.num_labels and task not in ('classify', 'tag')):
    raise ConfigError(f'model.num_labels={config.model.num_labels}: give >= 2 classes (tags) for data.task '
                      "'classify' or 'tag' (0 = from the data), and 0 for other tasks")
  if d.code_target != 'docstring' and (task, d.source) != ('seq2seq', 'embedded'):
    raise ConfigError(f'data.code_target={d.code_target!r} picks the targets of the embedded code demo; it needs '
                      "data.task='seq2seq' and data.source='embedded' (or leave it 'docstring')")
  if config.optimizer.freeze_all_but_head and task not in ('classify', 'qa', 'tag'):
    raise ConfigError("optimizer.freeze_all_but_head: only data.task classify, qa and tag have a new head to train")
  if task == 'qa':
    _check_qa(config)


def _check_qa(config):
  """Windows must leave room for context tokens beyond the overlap, and answers need a length."""
  d = config.data
  room = config.seq_len - d.max_query_len - 3
  if d.max_query_len < 1 or d.max_answer_len < 1 or d.n_best < 1:
    raise ConfigError('data.max_query_len, data.max_answer_len and data.n_best must be >= 1')
  if not 0 <= d.doc_stride < room:
    raise ConfigError(f'data.doc_stride={d.doc_stride} must be in [0, {room}): seq_len={config.seq_len} minus '
                      f'data.max_query_len={d.max_query_len} and 3 special tokens leaves {room} context tokens per '
                      'window; lower data.doc_stride or data.max_query_len, or raise seq_len')


def _check_finetune(config):
  """Freezing, layer decay, best checkpoint, early stopping and the forgetting monitor."""
  o = config.optimizer
  if not 0.0 < o.layer_decay <= 1.0:
    raise ConfigError(f'optimizer.layer_decay={o.layer_decay} must be in (0, 1] (1 = off)')
  if o.freeze_layers > config.model.num_layers:
    raise ConfigError(f'optimizer.freeze_layers={o.freeze_layers} exceeds model.num_layers={config.model.num_layers}')
  if o.freeze_layers and config.model.scan_layers:
    raise ConfigError('optimizer.freeze_layers needs model.scan_layers=False (scanned blocks share one array)')
  for pattern in filter(None, (p.strip() for p in o.freeze_patterns.split(','))):
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f'optimizer.freeze_patterns: {pattern!r} is not a regular expression ({e})') from e
  if config.best_metric and not config.best_metric.startswith('eval/'):
    raise ConfigError(f"best_metric={config.best_metric!r} must be an eval metric such as 'eval/accuracy'")
  if config.early_stopping_patience and not config.best_metric:
    raise ConfigError("early_stopping_patience needs best_metric, e.g. --config.best_metric=eval/accuracy")


def _check_init_from(config):
  """A fine-tune's architecture keys equal its init_from run's (lm.main adopts them first: config/inherit.py)."""
  if not config.init_from:
    return
  pretrained = resume.init_from_config(config.init_from)
  for dotted in inherit.architecture_keys(config):
    ours, theirs = inherit.value(config, dotted), inherit.value(pretrained, dotted)
    if ours != theirs:
      raise ConfigError(f'{dotted}={ours!r} here but {theirs!r} in init_from={config.init_from}; leave it out '
                        f'(lm.main takes it from that run) or set --config.{dotted}={theirs}')


def _check_lora(config):
  """LoRA's keys, and (on the model's shapes, traced) that its targets select kernels of at least its rank and
  leave something to train."""
  m = config.model
  if m.lora_rank < 0:
    raise ConfigError(f'model.lora_rank={m.lora_rank} must be >= 0 (0 = no LoRA)')
  if not m.lora_rank:
    return
  if not config.init_from:
    raise ConfigError(f'model.lora_rank={m.lora_rank} needs init_from: LoRA adapts a pretrained model; set '
                      '--config.init_from=DIR (a run or a converted Hugging Face workdir)')
  if m.lora_alpha <= 0 or not 0.0 <= m.lora_dropout < 1.0:
    raise ConfigError(f'model.lora_alpha={m.lora_alpha} must be > 0 and model.lora_dropout={m.lora_dropout} in [0, 1)')
  try:
    re.compile(m.lora_targets)
  except re.error as e:
    raise ConfigError(f'model.lora_targets={m.lora_targets!r} is not a regular expression ({e})') from e
  _check_lora_shapes(config)


def _check_lora_shapes(config):
  import flax.linen as nn
  import jax
  import numpy as np

  from lm.store import checkpoint
  from lm.training import optim
  m = config.model
  model = registry.build(m)
  params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))))
  leaves = checkpoint.flatten(params['params'])
  shapes = {k: v.shape for k, v in leaves.items()}
  adapted = [k.rsplit('/', 1)[0] for k in shapes if k.endswith('/lora_a')]
  if not adapted:
    kernels = [k for k in shapes if k.endswith('/kernel')]
    raise ConfigError(f'model.lora_targets={m.lora_targets!r} matches no kernel; kernel paths look like '
                      f'{", ".join(kernels[:3])} (the default targets the attention projections)')
  for module in adapted:
    stacked = int('blocks' in module.split('/'))  # scanned blocks: a leading layer axis
    fan_in = int(np.prod(shapes[f'{module}/lora_a'][stacked:-1]))
    fan_out = int(np.prod(shapes[f'{module}/lora_b'][stacked + 1:]))
    if m.lora_rank > min(fan_in, fan_out):
      raise ConfigError(f'model.lora_rank={m.lora_rank} exceeds the dimensions of {module}/kernel ({fan_in} in, '
                        f'{fan_out} out); use a rank <= {min(fan_in, fan_out)} or other model.lora_targets')
  if len(optim.frozen_paths(params['params'], config)) == len(shapes):
    raise ConfigError('model.lora_rank with optimizer.freeze_* freezes every adapter and head: nothing would '
                      'train; drop the freeze_* keys (LoRA freezes the base already)')


def _check_parallelism(config, num_devices: int, process_count: int, platform: str | None = None):
  import jax

  from lm.parallel import sharding
  shape = sharding.mesh_shape(config.mesh, num_devices)
  dp = shape[0] * shape[1]
  accum = config.grad_accum_steps
  if config.batch_size % accum:
    raise ConfigError(f'batch_size={config.batch_size} is not divisible by grad_accum_steps={accum}')
  if (config.batch_size // accum) % dp:
    raise ConfigError(f'batch_size={config.batch_size} (/ grad_accum_steps={accum}) is not divisible by the '
                      f'data-parallel size {dp} (mesh.data*mesh.fsdp); use a multiple of {dp * accum}')
  if config.batch_size % process_count:
    raise ConfigError(f'batch_size={config.batch_size} is not divisible by the process count {process_count}')
  if dp % process_count:
    raise ConfigError(f'mesh.data*mesh.fsdp={dp} must be a multiple of the process count {process_count}: each '
                      'process feeds its own batch rows, so the batch axes must span the processes')
  platform = platform or jax.default_backend()
  needs = {'cudnn': 'gpu', 'pallas_tpu': 'tpu'}.get(config.model.attention_impl)
  if needs and platform != needs:
    raise ConfigError(f"model.attention_impl={config.model.attention_impl!r} needs a {needs.upper()}, this is "
                      f"{platform} (lm.aot compiles for a TPU topology on any machine); use 'einsum', 'xla' or 'auto'")
  _check_shardable(config, dict(zip(sharding.MESH_AXES, shape)))


def _check_shardable(config, axis_sizes: dict):
  """Every parameter dimension and the sequence split evenly under config.mesh.rules (traced, not compiled)."""
  import jax

  from lm.parallel import sharding
  rules = sharding.logical_rules(config.mesh)
  length_axes = dict(rules)['length']
  length_axes = (length_axes,) if isinstance(length_axes, str) else (length_axes or ())
  shards = 1
  for axis in length_axes:
    shards *= axis_sizes[axis]
  if config.seq_len % shards:
    raise ConfigError(f'seq_len={config.seq_len} is not divisible by the {shards} shards of mesh.rules.length')
  model = registry.build(config.model)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config)))['params']
  sharding.check_divisible(boxed, axis_sizes, rules)


def validate(config, num_devices: int | None = None, process_count: int | None = None, platform: str | None = None):
  """Raises ConfigError (one line: key, value, fix) for any config that cannot run; returns None otherwise.
  `platform` is that of the devices the step compiles for (default: jax's backend; lm.aot: 'tpu')."""
  _check_keys_and_types(config, base.get_config())
  _check_values(config)
  _check_model(config)
  _check_data_and_objectives(config)
  _check_task(config)
  _check_finetune(config)
  _check_init_from(config)
  _check_lora(config)
  if num_devices is not None:
    _check_parallelism(config, num_devices, process_count or 1, platform)
