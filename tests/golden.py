"""Reference runs for structural changes: the same commands must log the same per-step losses, bitwise.

  python tests/golden.py save /tmp/golden_before     # on the commit BEFORE the change (e.g. in a `git worktree`)
  python tests/golden.py check /tmp/golden_before    # on the changed tree: rerun, compare every train/* and eval/*

Each reference run writes a fresh workdir under the output folder and a private data cache (so the tokenizer is
trained again too); `save` keeps each run's metrics.jsonl as `<name>.jsonl`. `check` reruns them in a new folder
and compares step by step: the same steps, the same keys, and equal float values for every key except the timing
fields (tokens/steps per second, MFU). It prints one line per run and exits 1 on any difference.

The runs: gpt_tiny:test, bert_tiny:test, bert_tiny_finetune:test from that bert run, a shortened gpt_tiny_sft from
scratch with the gpt_tiny:test tokenizer (eval, best checkpoint and samples included), and a 2-process
launch.local gpt_tiny:test (2 x 4 CPU devices).
About 6 minutes on 2 cores. Run it from the repository root (or anywhere: it changes to the root itself).
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ('tokens_per_sec', 'steps_per_sec', 'mfu', 'seconds')


def runs(root: str) -> list[tuple[str, list[str]]]:
  """(name, argv after `python -m`) of every reference run, with workdirs under root."""
  wd = lambda name: f'--workdir={os.path.join(root, name)}'  # noqa: E731
  return [
      ('gpt_tiny_test', ['lm.main', '--config=configs/gpt_tiny.py:test', wd('gpt_tiny_test')]),
      ('bert_tiny_test', ['lm.main', '--config=configs/bert_tiny.py:test', wd('bert_tiny_test')]),
      ('bert_tiny_finetune', ['lm.main', '--config=configs/bert_tiny_finetune.py:test', wd('bert_tiny_finetune'),
                              f'--config.init_from={os.path.join(root, "bert_tiny_test")}']),
      ('gpt_tiny_sft', ['lm.main', '--config=configs/gpt_tiny_sft.py:tiny', wd('gpt_tiny_sft'),
                        f'--config.data.tokenizer={os.path.join(root, "gpt_tiny_test", "tokenizer.model")}',
                        '--config.model.vocab_size=1024', '--config.model.num_layers=2', '--config.model.d_model=64',
                        '--config.model.d_ff=256', '--config.batch_size=8', '--config.num_train_steps=12',
                        '--config.eval_every_steps=6', '--config.log_every_steps=2',
                        '--config.checkpoint_every_steps=6',
                        '--config.num_samples=1', '--config.sample_max_new_tokens=8',
                        '--config.forgetting_every_steps=0']),
      ('multiprocess', ['launch.local', '--num_processes=2', '--devices_per_process=4', '--',
                        '--config=configs/gpt_tiny.py:test', wd('multiprocess')]),
  ]


def run_all(root: str) -> dict[str, list[dict]]:
  """Runs every reference run (in order: the fine-tune needs the bert run) and returns their metrics records."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['LM_CACHE_DIR'] = os.path.join(root, 'cache')
  out = {}
  for name, argv in runs(root):
    result = subprocess.run([sys.executable, '-m', *argv], cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
      sys.exit(f'{name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}')
    with open(os.path.join(root, name, 'metrics.jsonl')) as f:
      out[name] = [json.loads(line) for line in f]
    print(f'{name}: {len(out[name])} records', flush=True)
  return out


def differences(before: list[dict], after: list[dict]) -> list[str]:
  """Every step/key whose value differs (timing fields excluded); empty when the runs agree bitwise."""
  strip = lambda rec: {k: v for k, v in rec.items() if not k.endswith(TIMING)}  # noqa: E731
  old, new = [strip(r) for r in before], [strip(r) for r in after]
  if [r['step'] for r in old] != [r['step'] for r in new]:
    return [f'steps differ: {[r["step"] for r in old]} vs {[r["step"] for r in new]}']
  diffs = []
  for a, b in zip(old, new):
    if a.keys() != b.keys():
      diffs.append(f'step {a["step"]}: keys {sorted(a.keys() ^ b.keys())} in one run only')
    diffs += [f'step {a["step"]} {k}: {a[k]!r} vs {b[k]!r}' for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
  return diffs


def main(argv: list[str]) -> int:
  """`save DIR` or `check DIR`."""
  if len(argv) != 3 or argv[1] not in ('save', 'check'):
    sys.exit('usage: python tests/golden.py save|check DIR')
  folder = os.path.abspath(argv[2])
  if argv[1] == 'save':
    os.makedirs(folder, exist_ok=False)
    for name, records in run_all(os.path.join(folder, 'runs')).items():
      with open(os.path.join(folder, f'{name}.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    return 0
  import tempfile
  after = run_all(tempfile.mkdtemp(prefix='golden-check-'))
  failed = False
  for name, records in after.items():
    with open(os.path.join(folder, f'{name}.jsonl')) as f:
      diffs = differences([json.loads(line) for line in f], records)
    print(f'{name}: ' + ('bitwise equal' if not diffs else f'{len(diffs)} differences, e.g. ' + '; '.join(diffs[:3])))
    failed |= bool(diffs)
  return int(failed)


if __name__ == '__main__':
  sys.exit(main(sys.argv))
