"""The PyTorch reference for `lm.bench --vs_torch`: a Hugging Face transformers GPT2LMHeadModel training step of the
config's shape, in eager mode, on the same batch and machine (torch and transformers come with requirements-test)."""
from lm.errors import ConfigError
from lm.models import registry

# What GPT2LMHeadModel can mirror: a decoder in lm's GPT-2 layout (learned positions, pre-LN LayerNorm, tanh-GELU
# MLP, biases).
_GPT2_LAYOUT = {'position': 'learned', 'norm': 'pre', 'norm_type': 'layernorm',
                'activation': 'gelu_tanh', 'use_bias': True, 'num_kv_heads': 0}


def check_comparable(config) -> None:
  """ConfigError naming the first model key that GPT2LMHeadModel cannot mirror, or torch/transformers missing."""
  if not registry.get(config.model.type).causal:
    raise ConfigError(f'--vs_torch runs a GPT2LMHeadModel of the same shape: model.type={config.model.type!r} is '
                      'not a decoder')
  for key, value in _GPT2_LAYOUT.items():
    if config.model[key] != value:
      raise ConfigError(f'--vs_torch runs a GPT2LMHeadModel of the same shape: it needs model.{key}={value!r}, '
                        f'got {config.model[key]!r}')
  if config.data.task != 'pretrain' or dict(config.objectives) != {'clm': 1.0}:
    raise ConfigError('--vs_torch times next-token pretraining: it needs data.task=pretrain and objectives={clm: 1.0}, '
                      f'got data.task={config.data.task!r}, objectives={dict(config.objectives)}')
  if config.model.dtype != 'float32':
    raise ConfigError(f'--vs_torch compares float32 steps: set --config.model.dtype=float32 (got '
                      f'{config.model.dtype!r})')
  try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError as e:
    raise ConfigError(f'--vs_torch needs torch and transformers: pip install -r requirements-test.txt ({e})') from e


class TorchGPT2Step:
  """One AdamW update of an eager GPT2LMHeadModel on the batch's inputs/targets/weights (the same weighted
  next-token loss as lm's clm objective, gradient clipping and decay as the config says)."""

  def __init__(self, config, local_batch: dict):
    import torch
    import transformers
    m, o = config.model, config.optimizer
    torch.manual_seed(config.seed)
    gpt2 = transformers.GPT2Config(
        vocab_size=m.vocab_size, n_positions=m.max_len, n_embd=m.d_model, n_layer=m.num_layers, n_head=m.num_heads,
        n_inner=m.d_ff, activation_function='gelu_new', resid_pdrop=m.dropout, embd_pdrop=m.dropout,
        attn_pdrop=0.0, layer_norm_epsilon=m.layer_norm_eps, tie_word_embeddings=m.tie_embeddings,
        bos_token_id=None, eos_token_id=None)
    self.model = transformers.GPT2LMHeadModel(gpt2).train()
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                                       weight_decay=o.weight_decay)
    self.clip = o.grad_clip_norm
    self.inputs = torch.from_numpy(local_batch['inputs']).long()
    self.targets = torch.from_numpy(local_batch['targets']).long().reshape(-1)
    self.weights = torch.from_numpy(local_batch['weights']).float().reshape(-1)
    self.num_threads = torch.get_num_threads()
    self.versions = {'torch_version': torch.__version__, 'transformers_version': transformers.__version__,
                     'torch_attention': self.model.config._attn_implementation}
    self.loss = None

  def __call__(self) -> None:
    import torch
    logits = self.model(input_ids=self.inputs).logits
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets, reduction='none')
    loss = (nll * self.weights).sum() / self.weights.sum()
    loss.backward()
    if self.clip:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.loss = loss.item()
