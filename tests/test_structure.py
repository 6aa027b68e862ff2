"""The shape of the codebase: import layering without cycles, commands apart from the library, family names only in
the families' modules, and requirements.txt in step with pyproject.toml. Static checks (ast), no jax needed."""
import ast
import os
import re
import tomllib

from runs import REPO

LM = os.path.join(REPO, 'lm')
COMMANDS = {'lm.main', 'lm.generate', 'lm.evaluate', 'lm.fill_mask', 'lm.answer', 'lm.tag', 'lm.convert', 'lm.bench',
            'lm.aot', 'lm.prepare', 'lm.cli'}
# Families' own modules (model side and Hugging Face side) and the registry: the only places that name a family.
FAMILY_MODULES = {'lm/models/registry.py', 'lm/models/decoder.py', 'lm/models/encoder.py', 'lm/models/t5.py',
                  'lm/hf/bert.py', 'lm/hf/gpt2.py', 'lm/hf/llama.py', 'lm/hf/t5.py'}


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every module under lm/."""
  out = {}
  for root, _, files in os.walk(LM):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        out[dotted.removesuffix('.__init__')] = path
  return out


def _imports(path: str, modules: dict) -> set[str]:
  """The lm modules (and 'configs') that `path` imports anywhere in it (module level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f'{node.module}.{alias.name}' for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      if name.split('.')[0] == 'configs':
        found.add('configs')
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name and name != 'lm':
        found.add(name)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict) -> list[str] | None:
  """One import cycle of the graph (package __init__ edges included), or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycle_in_lm():
  graph = _graph()
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']  # the check itself finds one


def test_layers_import_one_way():
  """The library never imports configs/ or a command; models import no data/training/store; data no model code
  (the registry's plain records only; lm/models/__init__.py is a docstring); the library reads no absl flag."""
  graph = _graph()
  for module, imported in graph.items():
    assert 'configs' not in imported, f'{module} imports configs/'
    if module not in COMMANDS:
      assert not imported & COMMANDS, f'library module {module} imports a command: {imported & COMMANDS}'
      source = open(_modules()[module]).read()
      assert not re.search(r'from absl import (.*\b)?flags\b|\bflags\.FLAGS\b', source), f'{module} reads flags'
    if module.startswith('lm.models'):
      assert not {m for m in imported if m.startswith(('lm.data', 'lm.training', 'lm.store'))}, module
    if module.startswith('lm.data'):
      assert {m for m in imported if m.startswith('lm.models')} <= {'lm.models', 'lm.models.registry'}, module


def test_family_names_only_in_family_modules_and_registry():
  offenders = []
  for path in _modules().values():
    rel = os.path.relpath(path, REPO)
    if rel in FAMILY_MODULES:
      continue
    for number, line in enumerate(open(path), 1):
      if re.search(r"""['"](gpt|bert|t5)['"]""", line):
        offenders.append(f'{rel}:{number}: {line.strip()}')
  assert not offenders, '\n'.join(offenders)


def test_requirements_txt_matches_pyproject_dependencies():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  normalize = lambda line: re.sub(r'\s+', '', line.split('#')[0]).replace('"', "'")  # noqa: E731
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    listed = [normalize(line) for line in f if normalize(line)]
  assert listed == [normalize(dep) for dep in project['dependencies']]
