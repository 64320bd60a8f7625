"""The scripts beside launch.py (tools/, benchmarks/) end a wrong command line
in one `error:` line and a non-zero exit, as launch.py does (gan_jax/cli.py
for the absl ones; each script's own checks for the argparse ones): never a
traceback, never a hang, never a quiet exit 0 after nothing was done. A
script's output file is checked before its work."""
import os
import subprocess
import sys

import numpy as np
import pytest

from gan_jax import workdir
from gan_jax.errors import UserError
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
    ('benchmarks/grid25_table.py', ['--last_evals=3', '--curve_points=2'],
     '--last_evals=3: give 1 to --curve_points (2)'),
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


# Every script that writes a file, with what it needs but a good --out: the
# file is checked before the work (a k-means, a training, hours of benchmark
# runs), so a bad path ends in one line, not a traceback after the work.
OUT_SCRIPTS = {
    'mnist5k_npz': ['tools/mnist5k_npz.py', '--csv=unused.csv.gz'],
    'make_digits_npz': ['tools/make_digits_npz.py'],
    'cluster_npz': ['tools/cluster_npz.py', '--data=DATA', '--clusters=2'],
    'convert_inception_weights': ['tools/convert_inception_weights.py',
                                  'unused.pth'],
    'eval_real_images': ['tools/eval_real_images.py',
                         '--config=configs/default.py'],
    'grid25_table': ['benchmarks/grid25_table.py'],
    'mnist5k_ablation': ['benchmarks/mnist5k_ablation.py', '--data=DATA',
                         '--classifier=unused', '--variants=base'],
    'train_step': ['benchmarks/train_step.py', '--config=configs/default.py'],
    'conv_transpose': ['benchmarks/conv_transpose.py'],
}


@pytest.mark.parametrize('script', sorted(OUT_SCRIPTS))
def test_unwritable_out_is_one_line_before_the_work(script, tmp_path):
  path, *args = OUT_SCRIPTS[script]
  data = tmp_path / 'data.npz'
  np.savez(data, images=np.zeros((4, 2, 2, 1), np.uint8))
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  out = str(blocker / 'x.npz')  # Its folder is a file: nobody can write it.
  args = [a.replace('DATA', str(data)) for a in args]
  args += [out] if script == 'convert_inception_weights' else [f'--out={out}']
  proc = subprocess.run([sys.executable, os.path.join(ROOT, path), *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: cannot write ') and repr(out) in last, (
      proc.stderr[-2000:])
  assert 'Traceback' not in proc.stderr


def test_check_out_file(tmp_path):
  workdir.check_out_file(tmp_path / 'new' / 'deeper' / 'x.json')
  assert (tmp_path / 'new' / 'deeper').is_dir()  # Made, and left empty.
  assert not list((tmp_path / 'new' / 'deeper').iterdir())
  with pytest.raises(UserError, match='a folder of that name is in the way'):
    workdir.check_out_file(tmp_path / 'new')
  (tmp_path / 'f').write_text('')
  with pytest.raises(UserError, match="cannot write --out .*a file of that "
                     'name is in the way'):
    workdir.check_out_file(tmp_path / 'f' / 'x.json')
  with pytest.raises(UserError, match='writes local files only'):
    workdir.check_out_file('gs://bucket/x.json')
