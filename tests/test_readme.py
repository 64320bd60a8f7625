"""The README stays a quickstart whose code works, and the docs' links resolve.

Every ```python block of README.md runs as written, in a fresh process from
the repository root on CPU, with its workdir (the string 'runs/...') moved to
a temporary folder; every `python launch.py` line of a ```bash block runs the
same way with a few tiny-run overrides appended. A `--mode=eval` or
`--mode=sample` command runs, as written, after the commands before it with
the same --workdir (the run it reads), in the same temporary folder. So a
recipe that stops working fails here.
"""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
MAX_README_BYTES = 12 * 1024

# Appended to a README launch.py command: the same run, a few steps long.
TINY_LAUNCH = ['--config.num_steps=4', '--config.log_every=2',
               '--config.eval_every=4', '--config.checkpoint.every=4',
               '--config.checkpoint.use_async=false',
               '--config.eval.num_samples=200']

_FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```', re.M | re.S)
_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
_WORKDIR = re.compile(r"(['\"])runs/")


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def code_blocks(text, language):
  """The bodies of the fenced blocks of `language` in markdown `text`."""
  return [body for lang, body in _FENCE.findall(text) if lang == language]


def launch_commands(text):
  """The `python launch.py ...` commands of the ```bash blocks, as argv
  lists (backslash continuations joined, trailing comments dropped)."""
  commands = []
  for block in code_blocks(text, 'bash'):
    for line in block.replace('\\\n', ' ').splitlines():
      argv = shlex.split(line, comments=True)
      if argv[:2] == ['python', 'launch.py']:
        commands.append(argv[2:])
  return commands


def _env():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # One CPU device, as a user's first run.
  return env


def run_python_block(code, tmp_path, timeout=240):
  """Runs a README python block in a fresh process; returns its workdirs."""
  assert _WORKDIR.search(code), (
      "a README python block must write to a workdir 'runs/...' (the test "
      'moves it to a temporary folder):\n' + code)
  code = _WORKDIR.sub(lambda m: m.group(1) + str(tmp_path) + '/', code)
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, (
      f'README block failed (exit {result.returncode}):\n{code}\n'
      f'--- stderr (end) ---\n{result.stderr[-4000:]}')
  return [p for p in glob.glob(os.path.join(tmp_path, '*')) if os.path.isdir(p)]


def _check_trained(workdir):
  """The run wrote its config and metrics up to the last step."""
  with open(os.path.join(workdir, 'config.json')) as f:
    num_steps = json.load(f)['num_steps']
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps and steps[-1] == num_steps, (workdir, steps[-3:])
  assert glob.glob(os.path.join(workdir, 'samples', '*.png')), workdir
  assert os.listdir(os.path.join(workdir, 'checkpoints')), workdir


def _flag(argv, name):
  """The value of `--name V` / `--name=V` in `argv`, or None."""
  for i, a in enumerate(argv):
    if a.startswith(f'--{name}='):
      return a.split('=', 1)[1]
    if a == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def launch_runs(commands):
  """`commands` grouped by their --workdir, in README order: a run's
  training, then the commands that read it (--mode=eval/sample)."""
  runs = {}
  for i, argv in enumerate(commands):
    runs.setdefault(_flag(argv, 'workdir') or i, []).append(argv)
  return list(runs.values())


README_TEXT = _read(README)
PYTHON_BLOCKS = code_blocks(README_TEXT, 'python')
LAUNCH_COMMANDS = launch_commands(README_TEXT)
LAUNCH_RUNS = launch_runs(LAUNCH_COMMANDS)


def test_readme_is_a_quickstart():
  size = os.path.getsize(README)
  assert size <= MAX_README_BYTES, (
      f'README.md is {size} bytes, over {MAX_README_BYTES}: move depth to '
      'docs/')
  # The four "How to extend" recipes, and the quickstart's run command.
  assert len(PYTHON_BLOCKS) >= 4
  assert LAUNCH_COMMANDS


def test_ci_runs_the_readme_test_command():
  """.ci/run runs exactly the README's test command (and its extras run)."""
  readme = [line for block in code_blocks(README_TEXT, 'bash')
            for line in block.splitlines() if 'pytest' in line]
  ci = _read(os.path.join(ROOT, '.ci', 'run')).splitlines()
  assert len(readme) == 1, readme
  assert readme[0] in ci
  assert readme[0].replace(' tests', ' -m extras tests') in ci


def _slug(heading):
  """GitHub's anchor for a markdown heading."""
  heading = re.sub(r'[`*]', '', heading.strip().lower())
  heading = re.sub(r'[^\w\- ]', '', heading)
  return heading.replace(' ', '-')


def _anchors(path):
  text = re.sub(r'^```.*?^```', '', _read(path), flags=re.M | re.S)
  return {_slug(h) for h in re.findall(r'^#+\s+(.*)$', text, re.M)}


@pytest.mark.parametrize('page', ['README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))))
def test_relative_links_resolve(page):
  path = os.path.join(ROOT, page)
  text = re.sub(r'^```.*?^```', '', _read(path), flags=re.M | re.S)
  broken = []
  for target in _LINK.findall(text):
    if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, mailto:, ...
      continue
    file_part, _, anchor = target.partition('#')
    linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)
                              ) if file_part else path
    if not os.path.exists(linked):
      broken.append(f'{target} (no {os.path.relpath(linked, ROOT)})')
    elif anchor and linked.endswith('.md') and anchor not in _anchors(linked):
      broken.append(f'{target} (no heading #{anchor})')
  assert not broken, f'{page}: broken links: ' + ', '.join(broken)


@pytest.mark.parametrize('index', range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
  workdirs = run_python_block(PYTHON_BLOCKS[index], tmp_path)
  assert workdirs, 'the block trained nothing'
  for workdir in workdirs:
    _check_trained(workdir)


def test_broken_recipe_fails(tmp_path):
  """The harness reports a recipe that no longer works (here: a registry
  function renamed away)."""
  block = next((b for b in PYTHON_BLOCKS if '@losses.register(' in b), None)
  assert block, 'no README python block registers a loss with @losses.register'
  broken = block.replace('@losses.register(', '@losses.no_such_register(')
  with pytest.raises(AssertionError, match='README block failed'):
    run_python_block(broken, tmp_path)


def _without_workdir(argv):
  """`argv` less its `--workdir DIR` / `--workdir=DIR`."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a == '--workdir':
      skip = True
    elif not a.startswith('--workdir='):
      out.append(a)
  return out


def _check_read(workdir, mode):
  """An eval or sample command wrote its file."""
  pattern = 'eval_step_*.json' if mode == 'eval' else 'samples_step_*.npz'
  assert glob.glob(os.path.join(workdir, pattern)), (workdir, pattern)


@pytest.mark.parametrize('index', range(len(LAUNCH_RUNS)))
def test_readme_launch_command_runs(index, tmp_path):
  workdir = str(tmp_path / 'run')
  for argv in LAUNCH_RUNS[index]:
    mode = _flag(argv, 'mode') or 'train'
    argv = _without_workdir(argv)
    tiny = TINY_LAUNCH if mode == 'train' else []
    result = subprocess.run(
        [sys.executable, 'launch.py', *argv, '--workdir', workdir, *tiny],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (
        f'README command failed: python launch.py {" ".join(argv)}\n'
        f'{result.stderr[-4000:]}')
    if mode == 'train':
      _check_trained(workdir)
    else:
      _check_read(workdir, mode)
