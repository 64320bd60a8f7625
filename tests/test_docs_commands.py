"""The commands in the docs and docstrings are the programs' own: they parse.

Every `python launch.py|tools/X.py|benchmarks/X.py ...` line of a ```bash
block of README.md and docs/*.md (shell loops expanded: `for V in a b; do ...
$V ... done` gives a command per value), and every such line of the module
docstrings of launch.py, configs/, tools/ and benchmarks/, is parsed by its
program's own parser, without running it:
absl flags and `--config` files with their `:argument` and `--config.a.b=`
overrides (and gan_jax.checks.validate on a GAN config), or a script's
`parse_args`, which checks its benchmark variants and seeds. A renamed flag,
config field or variant in the docs fails here. README's launch commands also
run (tests/test_readme.py); the docs' long runs are too long for that.
"""
import ast
import collections
import glob
import importlib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs',
                                                             '*.md')))
SOURCES = ['launch.py'] + sorted(
    os.path.relpath(p, ROOT) for d in ('configs', 'tools', 'benchmarks')
    for p in glob.glob(os.path.join(ROOT, d, '*.py')))
# Programs with a module-level parse_args(argv) that exits on a bad line.
ARGPARSE = {'benchmarks/grid25_table.py', 'benchmarks/mnist5k_ablation.py',
            'tools/cluster_npz.py', 'tools/make_digits_npz.py',
            'tools/mnist5k_npz.py'}
# Programs that parse absl flags in app.run(main, flags_parser=...).
ABSL = {'launch.py', 'tools/train_classifier.py', 'tools/eval_real_images.py',
        'benchmarks/train_step.py', 'benchmarks/conv_transpose.py',
        'benchmarks/check_dtypes.py'}
# Positional arguments only: how many it takes.
POSITIONAL = {'tools/convert_inception_weights.py': (1, 2)}

_FENCE = re.compile(r'^```(?:bash|sh)\n(.*?)^```', re.M | re.S)
_LOOP = re.compile(r'for (\w+) in (.*?); do')
_DONE = re.compile(r'(?:^|;)\s*done\b')
_PROGRAM = re.compile(r'python3? ((?:tools/|benchmarks/)?[\w]+\.py)\b(.*)')


def _expanded(line, loops):
  """`line` once for each combination of the enclosing loops' values."""
  names = list(loops)
  for values in itertools.product(*(loops[n] for n in names)):
    out = line
    for name, value in sorted(zip(names, values), key=lambda x: -len(x[0])):
      out = out.replace('${%s}' % name, value).replace(f'${name}', value)
    yield out


def commands_in(text, docstring=False):
  """[(program, argv)] of the ```bash blocks of a page's `text`; of the lines
  that start with `python` in a `docstring`."""
  found = []
  for block in [text] if docstring else _FENCE.findall(text):
    block = re.sub(r'\\\n\s*', ' ', block)  # Continuation lines.
    loops = collections.OrderedDict()
    for line in block.splitlines():
      if docstring and not line.strip().startswith('python'):
        continue  # Prose.
      for name, values in _LOOP.findall(line):
        loops[name] = shlex.split(values)
      for part in line.split('&&'):
        match = _PROGRAM.search(part)
        if match and not part.strip().startswith('#'):
          program, rest = match.groups()
          if rest.count('"') % 2:  # The end of an ssh --command="...".
            rest = rest.rstrip().removesuffix('"')
          for expanded in _expanded(rest.split('; done')[0], loops):
            found.append((program, shlex.split(expanded, comments=True)))
      for _ in _DONE.findall(line):
        loops.popitem()
  return found


def docs_commands():
  """{program: [(page, argv)]} over README.md, docs/*.md and the docstrings
  of SOURCES."""
  by_program = collections.defaultdict(list)
  for page in PAGES + SOURCES:
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
      text = f.read()
    if page.endswith('.py'):
      text = ast.get_docstring(ast.parse(text), clean=False) or ''
    for program, argv in commands_in(text, docstring=page.endswith('.py')):
      by_program[program].append((page, argv))
  return by_program


def test_loops_are_expanded():
  text = ('```bash\nfor V in a "b c"; do for S in 0 1; do\n'
          '  python benchmarks/grid25_table.py --variants="$V" --seeds=$S \\\n'
          '    --out="$V-${S}.json"   # note\ndone; done\n'
          'pip install x && python tools/mnist5k_npz.py --out done.npz\n```\n')
  assert commands_in(text) == [
      ('benchmarks/grid25_table.py', ['--variants=a', '--seeds=0',
                                      '--out=a-0.json']),
      ('benchmarks/grid25_table.py', ['--variants=a', '--seeds=1',
                                      '--out=a-1.json']),
      ('benchmarks/grid25_table.py', ['--variants=b c', '--seeds=0',
                                      '--out=b c-0.json']),
      ('benchmarks/grid25_table.py', ['--variants=b c', '--seeds=1',
                                      '--out=b c-1.json']),
      ('tools/mnist5k_npz.py', ['--out', 'done.npz'])]


def test_every_program_in_the_docs_is_checked():
  programs = set(docs_commands())
  assert 'launch.py' in programs and 'benchmarks/grid25_table.py' in programs
  unknown = programs - ARGPARSE - ABSL - set(POSITIONAL)
  assert not unknown, f'add a way to parse {unknown} to this test'


def _argparse_failures(program, commands):
  module = importlib.import_module(program[:-len('.py')].replace('/', '.'))
  failures = []
  for page, argv in commands:
    try:
      module.parse_args(argv)
    except SystemExit as e:
      failures.append(f'{page}: python {program} {shlex.join(argv)}: {e}')
  return failures


@pytest.mark.parametrize('program', sorted(ARGPARSE))
def test_argparse_commands_parse(program, capsys):
  commands = docs_commands()[program]
  assert commands, f'no command of {program} in the docs: drop it here'
  failures = _argparse_failures(program, commands)
  assert not failures, '\n'.join(failures) + capsys.readouterr().err


def test_a_bad_benchmark_line_fails(capsys):
  failures = _argparse_failures('benchmarks/grid25_table.py', [
      ('x.md', ['--variants=pacgan m=5']), ('x.md', ['--seeds=0,a']),
      ('x.md', ['--variants=pacgan m=4', '--nope=1']),
      ('x.md', ['--variants=pacgan m=4'])])
  assert len(failures) == 3, failures
  assert "unknown variants ['pacgan m=5']" in capsys.readouterr().err


# Each command in a child process of its own (absl defines a config's
# override flags once a process), forked after the imports: the program runs
# as __main__ with absl's app.run replaced, so the command is parsed by the
# program's own flags_parser and a GAN config validated, and nothing runs.
# One line per command (argv[2] on, JSON lists): 'ok' or the error.
CHECKER = r'''
import json, os, runpy, sys
from absl import app, flags
from gan_jax import checks, cli
from gan_jax.errors import UserError

class Failed(Exception):
  pass

def fail(message):
  raise Failed(message)

def check(program, argv, flags_parser):
  try:
    rest = (flags_parser or flags.FLAGS)([program, *argv])
    if rest[1:]:
      raise Failed(f'unexpected arguments {rest[1:]}')
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      config = cli.config(flags.FLAGS['config'])
      if 'loss' in config:  # A GAN config.
        checks.validate(config)
    return 'ok'
  except (Failed, UserError, flags.Error, SystemExit) as e:
    return f'error: {" ".join(str(e).split())[:300]}'

cli.fail = fail
program = sys.argv[1]
for command in sys.argv[2:]:
  sys.stdout.flush()
  if os.fork() == 0:
    def run(main, argv=None, flags_parser=None):
      print(check(program, json.loads(command), flags_parser), flush=True)
      os._exit(0)
    app.run = run
    sys.argv = [program, *json.loads(command)]  # config_flags reads it.
    try:
      runpy.run_path(program, run_name='__main__')
    finally:
      print('error: the program did not call app.run', flush=True)
      os._exit(0)
  os.wait()
'''


def _absl_results(program, commands, tmp_path):
  """The checker's line for each argv of `commands`."""
  argvs = []
  for argv in commands:
    mode = next((a.split('=', 1)[1] for a in argv
                 if a.startswith('--mode=')), None)
    if mode in ('eval', 'sample') and not any(
        a == '--config' or a.startswith('--config=') for a in argv):
      # The run's own config.json: here that of configs/mnist5k.py (an image
      # config: it has every eval field) in a folder of its own that stands
      # in for the command's --workdir.
      argv = _with_run(argv, tmp_path / f'run{len(argvs)}')
    argvs.append(argv)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-c', CHECKER, program,
       *(json.dumps(a) for a in argvs)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  lines = result.stdout.splitlines()
  assert result.returncode == 0 and len(lines) == len(argvs), (
      result.stdout + result.stderr[-3000:])
  return lines


def _with_run(argv, workdir):
  from configs import mnist5k  # pylint: disable=g-import-not-at-top
  workdir.mkdir()
  (workdir / 'config.json').write_text(mnist5k.get_config().to_json())
  out, skip = [], False
  for i, a in enumerate(argv):
    if skip:
      skip = False
    elif a == '--workdir' and i + 1 < len(argv):
      out.append(f'--workdir={workdir}')
      skip = True
    elif a.startswith('--workdir='):
      out.append(f'--workdir={workdir}')
    else:
      out.append(a)
  return out


@pytest.mark.parametrize('program', sorted(ABSL))
def test_absl_commands_parse(program, tmp_path):
  commands = docs_commands()[program]
  assert commands, f'no command of {program} in the docs: drop it here'
  results = _absl_results(program, [argv for _, argv in commands], tmp_path)
  failures = [f'{page}: python {program} {shlex.join(argv)}: {line}'
              for (page, argv), line in zip(commands, results) if line != 'ok']
  assert not failures, '\n'.join(failures)


def test_a_bad_launch_line_fails(tmp_path):
  results = _absl_results('launch.py', [
      ['--config=configs/default.py', '--config.loss.nam=hinge'],
      ['--config=configs/default.py', '--config.loss.name=nope'],
      ['--config=configs/pacgan_grid.py:pack=0'],
      ['--config=configs/default.py', '--num_sample=3'],
      ['--mode=sample', '--workdir', 'W', '--config.nope=1'],
      ['--config=configs/default.py', 'extra'],
      ['--config=configs/mnist5k.py:conditional=clusters',
       '--config.eval.metrics=classes_clf_5k'],
  ], tmp_path)
  assert [line.startswith('error: ') for line in results] == [True] * 6 + [
      False], results
  assert "unknown config field 'loss.nam'" in results[0]
  assert 'nope' in results[1]


@pytest.mark.parametrize('program,counts', sorted(POSITIONAL.items()))
def test_positional_commands_have_their_arguments(program, counts):
  commands = docs_commands()[program]
  assert commands and os.path.exists(os.path.join(ROOT, program))
  for page, argv in commands:
    assert not any(a.startswith('-') for a in argv), (page, argv)
    assert counts[0] <= len(argv) <= counts[1], (page, argv)
