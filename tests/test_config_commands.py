"""The launch commands in the docstrings of the results configs run.

Each `python launch.py ...` command of configs/mode_coverage.py,
configs/pacgan_grid.py and configs/mnist5k.py is run as written, with only a
tiny budget (and small widths) appended, so a renamed argument or field in a
docstring fails here. Plumbing only: a few steps, no quality.
"""
import json
import re
import shlex

import numpy as np
import pytest

from tests.conftest import run_launch
from tools import cluster_npz

BUDGET = ['--config.num_steps=4', '--config.steps_per_call=1',
          '--config.log_every=2', '--config.eval_every=4',
          '--config.checkpoint.every=4']
SMALL = {
    'mode_coverage': ['--config.g.width=16', '--config.d.width=16',
                      '--config.eval.num_samples=100'],
    'pacgan_grid': ['--config.g.width=16', '--config.d.width=16',
                    '--config.eval.num_samples=100'],
    # EMA and standing statistics on from the start, so they run too.
    'mnist5k': ['--config.g.channels=4', '--config.d.channels=4',
                '--config.batch_size=8', '--config.ema.start_step=1',
                '--config.eval.standing_stats=2', '--config.eval.grid_rows=2'],
}


def commands(name, program='launch.py'):
  """The `python PROGRAM` commands in configs/NAME.py's docstring, as argv
  lists (without `python PROGRAM`)."""
  with open(f'configs/{name}.py') as f:
    doc = f.read().split('"""')[1]
  doc = re.sub(r'\\\n\s*', ' ', doc)  # Continuation lines.
  return [shlex.split(line.strip())[2:] for line in doc.splitlines()
          if line.strip().startswith(f'python {program}')]


def test_the_commands_are_found():
  assert len(commands('mode_coverage')) == 2
  assert len(commands('pacgan_grid')) == 2
  assert len(commands('mnist5k')) == 3


@pytest.mark.parametrize('name,index', [('mode_coverage', 0),
                                        ('mode_coverage', 1),
                                        ('pacgan_grid', 0), ('pacgan_grid', 1),
                                        ('mnist5k', 0),
                                        ('mnist5k', 1), ('mnist5k', 2)])
def test_docstring_command_trains(name, index, tmp_path, monkeypatch):
  argv = commands(name)[index]
  if name == 'mnist5k':  # The command's mnist5k.npz: 64 random 28x28 digits.
    rng = np.random.default_rng(0)
    npz = tmp_path / 'mnist5k.npz'
    np.savez(npz, images=rng.integers(0, 256, (64, 28, 28, 1), np.uint8),
             labels=np.arange(64) % 10)
    # The docstring's tools/cluster_npz.py command, on those digits.
    clustered = tmp_path / 'mnist5k_k50.npz'
    [tool] = commands(name, 'tools/cluster_npz.py')
    cluster_npz.main([{'mnist5k.npz': str(npz), 'mnist5k_k50.npz':
                       str(clustered)}.get(a, a) for a in tool])
    argv = [a.replace('=mnist5k.npz', f'={npz}')
            .replace('=mnist5k_k50.npz', f'={clustered}') for a in argv]
  workdir = tmp_path / 'run'
  r = run_launch([*argv, *BUDGET, *SMALL[name], f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr[-3000:]
  config = json.loads((workdir / 'config.json').read_text())
  assert (workdir / 'checkpoints' / '4').is_dir()
  if name != 'mnist5k':  # The toy metrics at step 4.
    evals = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text()
             .splitlines() if '"modes"' in l]
    assert [e['step'] for e in evals] == [4]
  if name == 'mode_coverage':
    assert config['penalty']['name'] == 'r1'
    assert config['data']['name'] == ('grid25', 'ring_pacgan')[index]
  elif name == 'pacgan_grid':  # 100 packs of m (none; :pack=4: 4).
    m = (1, 4)[index]
    assert config['d']['pack'] == m and config['batch_size'] == 100 * m
  else:
    assert config['model'] == 'dcgan' and config['ema']['decay'] == 0.999
    # :conditional=projection, then =clusters (50 of them).
    assert config['num_classes'] == (0, 10, 50)[index]
    assert config['conditional']['labels'] == ('classes', 'classes',
                                               'clusters')[index]
    assert (workdir / 'samples' / 'step_0000004.png').is_file()
