"""What lm.bench measures, each after a warm-up and in this process: the real train step, the real input pipeline,
the matmul peak, and decoding. Every function returns a flat dict of numbers (lm.bench prints them)."""
import statistics
import time

import jax
import numpy as np

from lm.data import pipeline
from lm.models import registry
from lm.parallel import sharding
from lm.perf import flops
from lm.training import optim, state as state_lib, step as step_lib


def timed(fn, repeats: int) -> tuple[float, list[float]]:
  """(seconds of the first, compiling call, seconds of each of `repeats` more calls) of fn(); fn blocks."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, times


def real_batches(config):
  """An iterator over this process's training batches from the real input pipeline, as training builds it."""
  _, train_rows, _ = pipeline.prepare(config)
  return pipeline.train_iterator(config, train_rows)


def data_pipeline(iterator, config, batches: int) -> dict:
  """Tokens/s of the input pipeline alone over `batches` batches of a started iterator: it must outrun the step."""
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  tokens = batches * config.batch_size // jax.process_count() * flops.tokens_per_example(config)
  return {'data_tokens_per_sec': tokens / seconds, 'data_batches': batches}


class TrainStep:
  """The training code path of lm/training (mesh, sharded init, the jitted step with donation) on one fixed batch."""

  def __init__(self, config, local_batch: dict):
    self.config = config
    self.mesh = sharding.make_mesh(config.mesh)
    model = registry.build(config.model)
    _, shardings, init_fn = state_lib.abstract_state(config, model, optim.build(config), self.mesh)
    with jax.set_mesh(self.mesh):
      self.state = init_fn(jax.random.PRNGKey(config.seed))
      self.batch = sharding.global_batch(local_batch, self.mesh)
      p_train, _ = step_lib.jit_steps(config, model, shardings, self.mesh)
      start = time.perf_counter()
      self.compiled = p_train.lower(self.state, self.batch).compile()
      self.compile_seconds = time.perf_counter() - start
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
    self.loss = None

  def __call__(self) -> None:
    """One optimizer update (blocks until it is done)."""
    with jax.set_mesh(self.mesh):
      self.state, out = self.compiled(self.state, self.batch)
      self.loss = float(out['train/loss'])  # a host read: the step is finished, and a NaN would show

  def memory(self) -> dict:
    """XLA's memory figures of the compiled step (GiB): temporaries, arguments (the state and the batch), and their
    sum, the step's peak beyond what the host holds anyway."""
    analysis = self.compiled.memory_analysis()
    if analysis is None:
      return {}
    temp, arguments = analysis.temp_size_in_bytes / 2**30, analysis.argument_size_in_bytes / 2**30
    return {'temp_gib': temp, 'argument_gib': arguments, 'peak_gib': temp + arguments}

  def flops_per_step(self) -> float:
    """Model FLOPs of one step (flops.flops_per_step: 6N + 12LdT per token; per stack for an encoder-decoder)."""
    return flops.flops_per_step(self.config, self.num_params)


def step_summary(times: list[float], tokens_per_step: int, prefix: str = '') -> dict:
  """Median / min / max step seconds and the tokens/s of the median."""
  median = statistics.median(times)
  return {f'{prefix}tokens_per_sec': tokens_per_step / median, f'{prefix}step_seconds': median,
          f'{prefix}step_seconds_min': min(times), f'{prefix}step_seconds_max': max(times)}


def peak(config) -> dict:
  """The measured matmul peak of this machine in the training dtype (all devices), and the datasheet peak."""
  device = jax.devices()[0]
  best = flops.best_matmul_flops(config.model.dtype, sizes=(1024, 2048, 4096) if device.platform != 'cpu'
                                   else (1024, 2048))
  # CPU "devices" share the host's cores: the machine's rate is one device's; accelerators add up
  count = 1 if device.platform == 'cpu' else jax.device_count()
  return {'peak_tflops': best['flops'] * count / 1e12, 'peak_matmul_n': best['n'],
          'datasheet_peak_tflops': flops.datasheet_peak_flops(device) * jax.device_count() / 1e12}


def utilisation(flops_per_step: float, step_seconds: float, peaks: dict) -> dict:
  """model TFLOP/s and MFU against the measured peak (and against the datasheet peak where one is known)."""
  achieved = flops_per_step / step_seconds / 1e12
  out = {'model_tflops_per_sec': achieved, 'mfu': achieved / peaks['peak_tflops']}
  if peaks['datasheet_peak_tflops']:
    out['mfu_datasheet'] = achieved / peaks['datasheet_peak_tflops']
  return out


def decode(config, new_tokens: int, batch: int, prompt_len: int, repeats: int) -> dict:
  """Decode tokens/s with and without the KV cache (freshly initialised parameters), and the ratio."""
  from lm.inference import sampling
  if prompt_len + new_tokens > config.model.max_len:  # fresh parameters: a longer position table costs nothing
    print(f'model.max_len raised from {config.model.max_len} to {prompt_len + new_tokens} to fit the prompt and '
          'the new tokens', flush=True)
    config = config.copy_and_resolve_references()
    config.model.max_len = prompt_len + new_tokens
  model = registry.build(config.model)
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), registry.example_batch(config))['params'])()
  params = jax.tree.map(lambda x: x.unbox() if hasattr(x, 'unbox') else x, params,
                        is_leaf=lambda x: hasattr(x, 'unbox'))
  prompts = np.random.default_rng(0).integers(7, config.model.vocab_size, (batch, prompt_len)).tolist()
  out = {'decode_batch': batch, 'decode_tokens': new_tokens, 'prompt_len': prompt_len}
  for use_cache, key in ((True, 'decode_tokens_per_sec'), (False, 'decode_tokens_per_sec_no_cache')):
    run = lambda: sampling.generate(model, params, prompts, max_new_tokens=new_tokens, eos_id=-1, pad_id=0,
                                    use_cache=use_cache)
    first, times = timed(run, repeats)
    out[key] = batch * new_tokens / statistics.median(times)
    out[key.replace('tokens_per_sec', 'first_call_seconds')] = first
  out['decode_speedup'] = out['decode_tokens_per_sec'] / out['decode_tokens_per_sec_no_cache']
  return out


def _interleaved(runners: dict, steps: int, warmup: int) -> dict:
  """{name: [seconds of each timed call]}: warm-up calls first, then the runners' calls alternate, so every runner
  sees the same machine (these VMs drift by +-20% within minutes)."""
  times = {name: [] for name in runners}
  for run in runners.values():
    timed(run, warmup)
  for _ in range(steps):
    for name, run in runners.items():
      times[name].extend(timed(run, 1)[1])
  return times


def _torch_runner(config, local_batch: dict, vs_torch: bool) -> dict:
  if not vs_torch:
    return {}
  from lm.perf import torch_gpt2
  return {'torch_': torch_gpt2.TorchGPT2Step(config, local_batch)}


def train(config, local_batch: dict, steps: int, warmup: int, vs_torch: bool) -> dict:
  """Train-step throughput, compile seconds, MFU; with vs_torch the torch step's, measured interleaved."""
  step = TrainStep(config, local_batch)
  runners = {'': step, **_torch_runner(config, local_batch, vs_torch)}
  times = _interleaved(runners, steps, warmup)
  tokens = config.batch_size * flops.tokens_per_example(config)
  peaks = peak(config)
  out = {'params': step.num_params, 'batch_tokens': tokens, 'flops_per_step': step.flops_per_step(),
         'compile_seconds': step.compile_seconds, 'loss_after': step.loss, **step.memory(), **peaks}
  for prefix in runners:
    summary = step_summary(times[prefix], tokens, prefix)
    out.update(summary)
    out.update({prefix + k: v for k, v in utilisation(out['flops_per_step'], summary[f'{prefix}step_seconds'],
                                                      peaks).items()})
  if vs_torch:
    torch_step = runners['torch_']
    out.update(torch_step.versions, torch_num_threads=torch_step.num_threads, torch_loss_after=torch_step.loss,
               speedup_vs_torch=out['tokens_per_sec'] / out['torch_tokens_per_sec'])
  return out


def compare(variants: dict, local_batches: dict, steps: int, warmup: int, vs_torch: bool) -> dict:
  """`lm.bench --compare`: the train steps of several configs ({label: config}, e.g. one key's values), compiled in
  this process and their timed steps interleaved (plus the torch step's with vs_torch, on the first variant's
  batch). Returns {'variants': {label: figures}, ...}: tokens/s, median step, ratio to the first variant, compile
  seconds, XLA's memory (temp, arguments) and the loss after the steps, so a lever's effect is one in-process
  ratio."""
  steps_by_label = {label: TrainStep(config, local_batches[label]) for label, config in variants.items()}
  first_label, first = next(iter(variants.items()))
  runners = {**steps_by_label, **_torch_runner(first, local_batches[first_label], vs_torch)}
  times = _interleaved(runners, steps, warmup)
  out = {}
  for label, step in steps_by_label.items():
    tokens = step.config.batch_size * flops.tokens_per_example(step.config)
    out[label] = {**step_summary(times[label], tokens), 'compile_seconds': step.compile_seconds,
                  'loss_after': step.loss, **step.memory()}
  base = out[first_label]['tokens_per_sec']
  for figures in out.values():
    figures['ratio'] = figures['tokens_per_sec'] / base
  result = {'variants': out}
  if vs_torch:
    tokens = first.batch_size * flops.tokens_per_example(first)
    result.update(step_summary(times['torch_'], tokens, 'torch_'))
    for figures in out.values():
      figures['speedup_vs_torch'] = figures['tokens_per_sec'] / result['torch_tokens_per_sec']
  return result


def measure_all(config, modes: list[str], *, steps: int = 10, warmup: int = 2, data_batches: int = 50,
                vs_torch: bool = False, decode_tokens: int = 128, decode_batch: int = 1, prompt_len: int = 16,
                repeats: int = 3) -> dict:
  """Runs the requested measurements ('train', 'data', 'decode') in order data (which also yields the train batch),
  train, decode; returns one flat dict."""
  out = {}
  if 'train' in modes or 'data' in modes:
    batches = real_batches(config)
    first = next(batches)  # starts the read threads
    if 'data' in modes:
      out.update(data_pipeline(batches, config, data_batches))
    if 'train' in modes:
      out.update(train(config, first, steps, warmup, vs_torch))
    if 'data' in modes and 'train' in modes:
      out['data_vs_step'] = out['data_tokens_per_sec'] / out['tokens_per_sec']
  if 'decode' in modes and registry.get(config.model.type).causal:
    out.update(decode(config, decode_tokens, decode_batch, prompt_len, repeats))
  return out
