"""Hyper-parameter sweeps: run every point of a config's sweep in its own workdir, then compare them.

  python -m launch.sweep --config=configs/gpt_tiny.py [--root=workdirs/gpt_tiny_sweep] [--dry_run] [-- FLAGS]
  python -m launch.sweep --config=configs/gpt_1b.py --tpu_name=lm-1b --zone=us-east5-a     # each point on the slice
  python -m launch.sweep report --root=workdirs/gpt_tiny_sweep     # or --workdirs=DIR1,DIR2

A config defines its sweep with `get_sweep(arg)`, a list of override dicts ({'optimizer.learning_rate': 1e-3, ...});
`lm.config.base.sweep_product` and `sweep_zip` build them big_vision style. Points run one after another, locally
(`python -m lm.main ...`) or on a TPU slice through launch.tpu run; a point whose workdir already finished is resumed,
i.e. skipped. Flags after `--` go to every point (e.g. `-- --config.num_train_steps=100`). --dry_run prints one
command per point. `report` writes report.md and report.csv (final metrics of
each point) and loss.png (train and eval loss curves from each metrics.jsonl) into --out (default: --root).
"""
import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys

from absl import app, flags

_CONFIG = flags.DEFINE_string('config', None, 'Config file with get_sweep(arg), e.g. configs/gpt_tiny.py[:arg].')
_ROOT = flags.DEFINE_string('root', None, 'Parent of the points\' workdirs (default: workdirs/<config>_sweep).')
_WORKDIRS = flags.DEFINE_list('workdirs', [], 'report: the workdirs to compare (default: every run under --root).')
_OUT = flags.DEFINE_string('out', None, 'report: output directory (default: --root, or the first workdir\'s parent).')
_TPU_NAME = flags.DEFINE_string('tpu_name', '', 'Run the points on this TPU slice (launch.tpu run) instead.')
_ZONE = flags.DEFINE_string('zone', '', 'Zone of --tpu_name.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')

REPORT_KEYS = ('train/loss', 'eval/loss', 'eval/perplexity', 'eval/accuracy', 'train/tokens_per_sec')


def load_sweep(config_arg: str) -> list[dict]:
  """The override dicts of `get_sweep(arg)` in the config file `path[:arg]`."""
  path, _, arg = config_arg.partition(':')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise app.UsageError(f'--config={config_arg}: {path} defines no get_sweep(arg)')
  return list(module.get_sweep(arg or None))


def point_name(overrides: dict) -> str:
  """'learning_rate=0.001,seed=1' from {'optimizer.learning_rate': 0.001, 'seed': 1}: a readable directory name."""
  return ','.join(f'{key.split(".")[-1]}={value}' for key, value in overrides.items()) or 'default'


def commands(config_arg: str, points: list[dict], root: str, extra: list[str] = ()) -> list[list[str]]:
  """One lm.main command line (or launch.tpu run line) per point; `extra` flags go to every point."""
  out = []
  for overrides in points:
    args = [f'--config={config_arg}', f'--workdir={os.path.join(root, point_name(overrides))}', *extra]
    args += [f'--config.{key}={value}' for key, value in overrides.items()]
    if _TPU_NAME.value:
      out.append(['python', '-m', 'launch.tpu', 'run', f'--name={_TPU_NAME.value}', f'--zone={_ZONE.value}',
                  '--', *args])
    else:
      out.append(['python', '-m', 'lm.main', *args])
  return out


def _rows(workdir: str) -> list[dict]:
  """The records of a run's metrics.jsonl (a torn last line of a running or killed run is left out)."""
  rows = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue
  return rows


def summarize(workdir: str) -> dict:
  """{'point', 'step', and the last value of each REPORT_KEYS metric} of one run."""
  rows = _rows(workdir)
  out = {'point': os.path.basename(os.path.normpath(workdir)), 'step': max((r['step'] for r in rows), default=0)}
  for key in REPORT_KEYS:
    values = [r[key] for r in rows if key in r]
    if values:
      out[key] = values[-1]
  return out


def write_report(workdirs: list[str], out_dir: str) -> list[str]:
  """report.md, report.csv and loss.png for the runs; returns the paths written."""
  summaries = [summarize(w) for w in workdirs]
  columns = ['point', 'step'] + [k for k in REPORT_KEYS if any(k in s for s in summaries)]
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, name) for name in ('report.md', 'report.csv', 'loss.png')]
  with open(paths[1], 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(summaries)
  cell = lambda v: f'{v:.4g}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(cell(s.get(c, '')) for c in columns) + ' |' for s in summaries]
  with open(paths[0], 'w') as f:
    f.write('\n'.join(lines) + '\n')
  _plot(workdirs, paths[2])
  return paths


def _plot(workdirs: list[str], path: str) -> None:
  """Train loss (solid) and eval loss (dashed, markers) against the step, one colour per run."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5))
  for index, workdir in enumerate(workdirs):
    rows, colour, name = _rows(workdir), f'C{index % 10}', os.path.basename(os.path.normpath(workdir))
    for key, style in (('train/loss', '-'), ('eval/loss', '--o')):
      points = [(r['step'], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), style, color=colour, label=f'{name} {key}', markersize=3)
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _report(root: str | None) -> None:
  workdirs = list(_WORKDIRS.value)
  if not workdirs and root:
    workdirs = sorted(os.path.join(root, d) for d in os.listdir(root)
                      if os.path.isfile(os.path.join(root, d, 'metrics.jsonl')))
  if not workdirs:
    raise app.UsageError('report: give --workdirs=DIR1,DIR2 or --root with finished runs under it')
  out = _OUT.value or root or os.path.dirname(os.path.normpath(workdirs[0]))
  for path in write_report(workdirs, out):
    print(path, flush=True)
  with open(os.path.join(out, 'report.md')) as f:
    print(f.read(), end='')


def main(argv):
  if len(argv) > 1 and argv[1] == 'report':
    return _report(_ROOT.value)
  if not _CONFIG.value:
    raise app.UsageError('usage: launch.sweep --config=FILE[:arg] [--dry_run] [-- lm.main flags for every point] | '
                         'launch.sweep report --root=DIR')
  stem = os.path.splitext(os.path.basename(_CONFIG.value.split(':')[0]))[0]
  root = _ROOT.value or os.path.join('workdirs', f'{stem}_sweep')
  for command in commands(_CONFIG.value, load_sweep(_CONFIG.value), root, argv[1:]):
    print(shlex.join(command), flush=True)
    if not _DRY_RUN.value:
      status = subprocess.call([sys.executable, *command[1:]])  # this interpreter for 'python'
      if status:
        sys.exit(status)
  if not _DRY_RUN.value:
    print(f'done; compare with: python -m launch.sweep report --root={root}', flush=True)


if __name__ == '__main__':
  app.run(main)
