"""The scripts beside launch.py (tools/, benchmarks/) end a wrong command line
in one `error:` line and a non-zero exit, as launch.py does (gan_jax/cli.py
for the absl ones; each script's own checks for the argparse ones): never a
traceback, never a hang, never a quiet exit 0 after nothing was done."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

DEFAULT = 'configs/default.py'
# (script, arguments, what the error line says). DATA: a tiny .npz.
CASES = [
    ('tools/eval_real_images.py', [f'--config={DEFAULT}', '--config.bogus=1'],
     "unknown config field 'bogus'"),
    ('tools/eval_real_images.py', ['--config=nope.py'],
     'cannot load the config'),
    ('tools/train_classifier.py', ['--config=configs/mnist_classifier.py',
                                   '--workdir=W', '--config.lr=x'],
     "flag --config.lr=x: could not convert string to float: 'x'"),
    ('benchmarks/train_step.py', [f'--config={DEFAULT}', '--config.g.bogus=1'],
     "unknown config field 'g.bogus'"),
    ('benchmarks/train_step.py', [f'--config={DEFAULT}', '--batch_sizes=0'],
     '--batch_sizes=0: give sizes of 1 or more'),
    ('benchmarks/train_step.py', [f'--config={DEFAULT}', '--batch_sizes=x'],
     '--batch_sizes and --example_shape take whole numbers'),
    ('benchmarks/check_dtypes.py', ['--config=nope.py'],
     'cannot load the config'),
    ('benchmarks/conv_transpose.py', ['--batch=x'], 'flag --batch=x'),
    ('benchmarks/grid25_table.py', ['--seeds=a'], '--seeds=a: give whole'),
    ('benchmarks/grid25_table.py', ['--curve_points=0'],
     '--curve_points=0: give 1 or more'),
    ('benchmarks/grid25_table.py', ['--merge', 'nope.json'],
     '--merge nope.json: not an output file of this script'),
    ('benchmarks/mnist5k_ablation.py', ['--jobs=0'],
     '--jobs and --num_steps must be 1 or more'),
    ('benchmarks/mnist5k_ablation.py', ['--variants='],
     '--variants: name one or more'),
    ('benchmarks/mnist5k_ablation.py', ['--collect', '--variants=base',
                                        '--workdir=W'],
     'error: no run of base in'),
    # Its runs fail (no classifier): it says so, not a table of nothing.
    ('benchmarks/mnist5k_ablation.py', ['--data=DATA', '--classifier=nope',
                                        '--variants=base', '--num_steps=2',
                                        '--workdir=W'],
     'error: 1 of 1 runs failed: base: no classifier checkpoint at'),
    ('tools/cluster_npz.py', ['--data=DATA', '--clusters=2', '--restarts=0',
                              '--out=W/o.npz'], '--restarts=0: give 1 or more'),
    ('tools/make_digits_npz.py', ['--num=0', '--out=W/o.npz'],
     '--num=0: ask for 1 or more'),
    ('tools/mnist5k_npz.py', ['--csv=nope.csv.gz', '--out=W/o.npz'],
     "cannot read nope.csv.gz as the digits' CSV"),
]


@pytest.mark.parametrize('script,args,message', CASES,
                         ids=[f'{c[0]}-{i}' for i, c in enumerate(CASES)])
def test_wrong_command_line_is_one_error_line(script, args, message, tmp_path):
  data = tmp_path / 'data.npz'
  np.savez(data, images=np.zeros((4, 2, 2, 1), np.uint8))
  args = [a.replace('DATA', str(data)).replace('W', str(tmp_path / 'w'))
          if a.startswith(('--data', '--out', '--workdir')) else a
          for a in args]
  proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode != 0, proc.stdout[-1000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert 'error: ' in last and message in last, proc.stderr[-2000:]
