"""Will it fit on the pod? Compile the train step ahead of time for a Cloud TPU topology on any machine.

  pip install -r requirements-tpu.txt          # jax[tpu]: libtpu compiles for TPUs without one attached
  python -m lm.aot --config=configs/gpt_7b.py --topology=v5p-128 [--config.mesh.fsdp=64 ...]

The real train step (lm/training, the config's mesh, rules, remat and dtypes) is lowered against abstract state and
batch shapes on the topology's compile-only devices and compiled by XLA's TPU compiler. Printed: per-chip memory
(arguments, outputs, temporaries, XLA's peak; the total is the larger of that peak and all buffers at once, vs the
chip's HBM), FLOPs per step (the 6N + 12LdT model count; XLA's own count sees a scanned layer stack once), the step
time at 50% MFU, and whether it fits; the last line is one JSON object. Topology names: v5p-N and v4-N count
TensorCores (2 per chip: v5p-128 is 64 chips, 4x4x4), v5e-N and v6e-N count chips (v6e-256 is 16x16); a physical
form such as 'v5p:4x4x4' is taken as is. --num_slices=K compiles for K such slices joined by DCN (mesh.dcn_data=K).
--topology=cpu compiles for this machine's CPU devices instead (no libtpu): the same memory report against host
memory, e.g. to compare a LoRA fine-tune's state and step memory with full fine-tuning's.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from lm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/gpt_1b.py.',
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string('topology', None, 'TPU topology: v5p-128, v5e-256, v6e-256, v4-32, v5p:4x4x4 ...')
_NUM_SLICES = flags.DEFINE_integer('num_slices', 1, 'Slices of that topology joined by DCN (mesh.dcn_data).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_logs()
  import jax

  from lm.config import validation
  from lm.errors import LmError
  from lm.perf import aot
  config, _ = cli.loaded_config(_CONFIG)
  try:
    devices = aot.topology_devices(_TOPOLOGY.value, _NUM_SLICES.value)
    validation.validate(config, num_devices=len(devices), process_count=len({d.process_index for d in devices}),
                        platform=devices[0].platform)
    compiled, num_params, mesh = aot.compile_train_step(config, devices)
  except LmError as e:
    cli.fail(e)
  except jax.errors.JaxRuntimeError as e:  # e.g. RESOURCE_EXHAUSTED: the program does not fit at all
    cli.fail(f'{_TOPOLOGY.value}: XLA could not compile the step: {" ".join(str(e).split())[:400]}')
  out = aot.report(config, devices, compiled, num_params, mesh, _TOPOLOGY.value, _NUM_SLICES.value)
  for key, value in out.items():
    print(f'  {key:22} {value:,.3f}' if isinstance(value, float) else f'  {key:22} {value}', flush=True)
  print(f'{"FITS" if out["fits"] else "DOES NOT FIT"}: {out["total_gib"]:.2f} GiB of {out["hbm_gib"]:.2f} GiB HBM '
        'per chip', flush=True)
  print(json.dumps(out), flush=True)


def run():
  """Console entry point."""
  flags.mark_flags_as_required(['config', 'topology'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
