"""benchmarks/train_step.py end to end on a tiny config, and its FLOP counting.

No timing is asserted: only that the benchmark runs the real step and writes
every field.
"""
import collections
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import bench_util
from tests.conftest import ROOT

RESULT_FIELDS = {
    'batch', 'dtype', 'd_steps', 'steps_per_call', 'example_shape',
    'replicate', 'ms_per_iter', 'ms_per_iter_min', 'ms_per_iter_max',
    'timed_iterations', 'images_per_s', 'real_images_per_s', 'compile_s',
    'compile2_s', 'flops_per_iter', 'tflops', 'xla_flops_per_call',
    'jaxpr_conv_dot_dtypes', 'state_dtypes', 'hlo_dtypes', 'xla_compiles_s',
    'finite', 'd_loss', 'g_loss', 'loadavg_after'}


def test_train_step_benchmark_writes_every_field(tmp_path):
  out = tmp_path / 'bench.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # One device.
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'train_step.py'),
       '--config', os.path.join(ROOT, 'configs', 'default.py'),
       '--config.g.width=16', '--config.d.width=16', '--config.g.depth=1',
       '--config.d.depth=1', '--config.steps_per_call=2',
       '--config.dtype=bfloat16', '--batch_sizes=16', '--iterations=2',
       '--repeats=1', '--warmup_calls=0', f'--out={out}'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| batch | dtype |' in proc.stdout  # The markdown table.
  report = json.loads(out.read_text())
  assert report['config'].endswith('default.py')
  assert report['model'] == 'mlp'
  assert {'jax', 'jaxlib', 'flax', 'optax', 'backend', 'device_kind',
          'num_devices'} <= set(report['environment'])
  (r,) = report['results']
  assert RESULT_FIELDS <= set(r), RESULT_FIELDS - set(r)
  assert r['batch'] == 16 and r['steps_per_call'] == 2 and r['d_steps'] == 1
  assert r['dtype'] == 'bfloat16'
  assert r['timed_iterations'] == 2
  assert r['ms_per_iter'] > 0 and r['images_per_s'] > 0 and r['finite']
  assert r['flops_per_iter'] > 0
  # Compiled once ahead of time (reused by the first call), never while timed.
  assert len(r['xla_compiles_s']['ahead']) >= 1
  assert r['xla_compiles_s']['first_call'] == []
  assert r['xla_compiles_s']['timed'] == []
  # The --config.dtype override reached the model: its matmuls are bf16, and
  # the parameters, optimizer state and statistics stayed float32.
  assert r['jaxpr_conv_dot_dtypes'].get('dot bfloat16xbfloat16', 0) > 0
  for field, dtypes in r['state_dtypes'].items():
    assert set(dtypes) <= {'float32', 'int32'}, (field, dtypes)


def _conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('stride', [1, 2])
def test_conv_flops_match_xla(stride):
  """Forward, input-gradient (input-dilated) and weight-gradient convolutions
  are counted as XLA's cost analysis counts them."""
  x = jnp.ones((2, 14, 14, 3))
  w = jnp.ones((5, 5, 3, 8))
  for fn in (lambda x, w: _conv(x, w, stride),
             jax.grad(lambda x, w: jnp.sum(_conv(x, w, stride) ** 2),
                      argnums=(0, 1))):
    jaxpr = jax.make_jaxpr(fn)(x, w).jaxpr
    ours = bench_util.jaxpr_flops(jaxpr)
    convs = [e for e in jaxpr.eqns
             if e.primitive.name == 'conv_general_dilated']
    xla = sum(jax.jit(lambda a, b, e=e: lax.conv_general_dilated_p.bind(
        a, b, **e.params)).lower(*(jnp.ones(v.aval.shape) for v in e.invars))
              .compile().cost_analysis()['flops'] for e in convs)
    assert ours == xla


def test_scans_are_multiplied_and_dtypes_counted():
  def body(c, _):
    return jnp.tanh(c @ c), None
  x = jnp.ones((8, 8), jnp.bfloat16)
  jaxpr = jax.make_jaxpr(lambda x: lax.scan(body, x, None, length=5)[0])(x)
  dtypes = collections.Counter()
  assert bench_util.jaxpr_flops(jaxpr.jaxpr, dtypes) == 5 * 2 * 8 * 8 * 8
  assert dtypes == {'dot bfloat16xbfloat16': 5}


def test_hlo_dtypes_reads_operands():
  text = jax.jit(lambda a, b: a @ b).lower(
      np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)).compile(
          ).as_text()
  assert bench_util.hlo_dtypes(text) == {'dot f32xf32': 1}


def test_conv_transpose_benchmark_times_every_layer(tmp_path):
  out = tmp_path / 'ct.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'conv_transpose.py'),
       '--batch=1', '--repeats=1', f'--out={out}'],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json.loads(out.read_text())['rows']
  assert [r['model'] for r in rows] == ['dcgan_mnist'] * 3 + ['dcgan 32'] * 3
  for row in rows:
    for impl in ('xla', 'phases'):
      assert row[f'{impl}_fwd_ms'] > 0 and row[f'{impl}_grad_ms'] > 0
  assert '| dcgan_mnist | 7x7x128 -> 64, 5x5 stride 2 |' in proc.stdout


def test_grid25_table_curves_data_and_merge(tmp_path):
  """benchmarks/grid25_table.py: a run per variant x seed on the chosen data,
  a curve point per evaluation, the commit, and --merge of two outputs."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  script = os.path.join(ROOT, 'benchmarks', 'grid25_table.py')

  tmp = tmp_path / 'tmp'  # The script's temporary folders go here.
  tmp.mkdir()
  env['TMPDIR'] = str(tmp)

  def table(*args):
    proc = subprocess.run([sys.executable, script, *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout

  table('--num_steps=200', '--seeds=3', '--variants=non_saturating',
        '--data=ring_pacgan', '--curve_points=2', f'--workdir={tmp_path}/a',
        f'--out={tmp_path}/a.json')
  table('--num_steps=200', '--seeds=3', '--variants=pacgan m=2',
        '--curve_points=1', f'--out={tmp_path}/b.json')
  # A --workdir keeps its runs; without one, the temporary folder is removed.
  assert (tmp_path / 'a' / 'non_saturating_ring_pacgan_seed3').is_dir()
  # Called again, a kept run trains nothing: its seconds are from step 200.
  table('--num_steps=200', '--seeds=3', '--variants=non_saturating',
        '--data=ring_pacgan', '--curve_points=2', f'--workdir={tmp_path}/a',
        f'--out={tmp_path}/again.json')
  first, again = (json.loads((tmp_path / f).read_text())['runs'][0]
                  for f in ('a.json', 'again.json'))
  assert (first['start_step'], again['start_step']) == (0, 200)
  assert again['curve'] == first['curve']
  assert not [p for p in tmp.iterdir() if p.name.startswith('grid25_table_')]
  out = table('--merge', f'{tmp_path}/a.json', f'{tmp_path}/b.json',
              f'--out={tmp_path}/m.json')
  merged = json.loads((tmp_path / 'm.json').read_text())
  runs = {r['variant']: r for r in merged['runs']}
  ring, pac = runs['non_saturating'], runs['pacgan m=2']
  assert ring['data'] == 'ring_pacgan' and pac['data'] == 'grid25'
  assert [c[0] for c in ring['curve']] == [100, 200]
  assert [c[0] for c in pac['curve']] == [200]
  # The table's last numbers are the curve's last point.
  assert ring['curve'][-1][1:] == [ring['modes'], ring['hq'], ring['kl']]
  assert ring['seed'] == 3 and all(r['commit'] for r in merged['runs'])
  # The runs' own budget and time, not the merge call's defaults.
  assert merged['num_steps'] == [200]
  assert f"({round(ring['seconds'] + pac['seconds'])} s in all)" in out
  assert '| ring_pacgan | non_saturating | 200 |' in out
  assert '| grid25 | pacgan m=2 | 200 |' in out
  # A variant whose data cannot be replaced is refused before any training.
  proc = subprocess.run([sys.executable, script, '--variants=pacgan m=1',
                         '--data=ring8'], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and 'no data=grid25' in proc.stderr


def test_grid25_table_stopped_run_writes_no_table(tmp_path, monkeypatch):
  """A run stopped early (SIGTERM, Ctrl-C: train's StopSignal) is no result:
  an error line and no JSON, its checkpoint kept; the same command then goes
  on from it. (Before, the table showed the last evaluation as the result at
  --num_steps.)"""
  from benchmarks import grid25_table  # pylint: disable=g-import-not-at-top
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  requested = train.StopSignal.requested
  monkeypatch.setattr(train.StopSignal, 'requested',
                      lambda self, ckpt, step: step >= 100 or requested(
                          self, ckpt, step))
  out = tmp_path / 't.json'
  monkeypatch.setattr(sys, 'argv', [
      'grid25_table.py', '--num_steps=200', '--seeds=0',
      '--variants=non_saturating', '--curve_points=2',
      f'--workdir={tmp_path}/w', f'--out={out}'])
  with pytest.raises(SystemExit, match='stopped at step 100 of 200'):
    grid25_table.main()
  assert not out.exists()
  run = tmp_path / 'w' / 'non_saturating_None_seed0'
  assert grid25_table.kept_step(str(run)) == 100
  monkeypatch.setattr(train.StopSignal, 'requested', requested)
  grid25_table.main()
  result, = json.loads(out.read_text())['runs']
  assert result['start_step'] == 100
  assert [c[0] for c in result['curve']] == [100, 200]


def test_mnist5k_ablation_cluster_variants_train_on_their_clusters(tmp_path):
  """A clusters_* variant of benchmarks/mnist5k_ablation.py writes its
  clustered npz first and its command trains on it, with that many
  clusters; the others train on --data."""
  from benchmarks import mnist5k_ablation as ablation  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  data = tmp_path / 'digits.npz'
  np.savez(data, images=rng.integers(0, 256, (120, 28, 28, 1), np.uint8))
  args = ablation.argparse.Namespace(
      data=str(data), workdir=str(tmp_path / 'runs'), num_steps=10,
      classifier='clf')
  for name, balanced in (('clusters_20', True),
                         ('clusters_50_unbalanced', False)):
    assert not os.path.exists(ablation.data_path(name, args))
    path = ablation.clustered_data(name, args)
    assert path == ablation.data_path(name, args)
    labels = np.load(path)['labels']
    assert labels.max() < int(name.split('_')[1]) and labels.min() == 0
    assert (len(set(np.bincount(labels).tolist())) == 1) == balanced
    cmd = ablation.command(name, args)
    assert f'--config.data.path={path} ' in cmd
    assert f'conditional=clusters,clusters={name.split("_")[1]} ' in cmd
  assert f'--config.data.path={data} ' in ablation.command('base', args)
  seed1 = ablation.command('clusters_50_seed1', args)  # Same clusters.
  assert ablation.data_path('clusters_50', args) in seed1
  seed2 = ablation.command('clusters_100_seed2', args)
  assert ablation.data_path('clusters_100', args) in seed2
  assert '--config.seed=2 --config.data.seed=2' in seed2
  assert '--config.seed=1 ' in seed1
  assert ablation.command('base', args).split(' ')[3].endswith('mnist5k.py')
  # The seeds' recipe, and with labels, on the same digits.
  for name in ('dcgan', 'cgan'):
    cmd = ablation.command(name, args)
    assert cmd.split(' ')[3].endswith(f'configs/mnist_{name}.py:data=images')
    assert f'--config.data.path={data} ' in cmd
    assert '--config.eval_every=500 ' in cmd
  for name in ('dcgan_adam2e4', 'cgan_adam2e4'):
    cmd = ablation.command(name, args)
    assert f'configs/mnist_{name.split("_")[0]}.py:data=images ' in cmd
    assert '--config.d.optimizer.b1=0.5 ' in cmd and '--config.eval_every=500 ' in cmd


def test_mnist5k_ablation_table_of_conditional_runs(tmp_path):
  """--collect of a class-conditional and an unconditional run: the table
  adds label accuracy (blank for the unconditional run) and a per-class
  table for the conditional one, from each run's metrics.jsonl at the
  last step."""
  from benchmarks import mnist5k_ablation as ablation  # pylint: disable=g-import-not-at-top
  acc = ablation.LABEL_ACC
  base = {'classes_clf_5k': 10, 'classes_clf_5k/min_share': 0.9,
          'classes_clf_5k/confident': 0.95, 'fid_clf_5k_train': 15.0,
          'is_clf_5k': 9.5, 'fid_clf_1k_train': 20.0}
  runs = {'projection_seed1': {acc: 0.99, acc + '_0': 1.0, acc + '_1': 0.98,
                               acc + '_2': 0.985},
          'base': {}}
  for name, extra in runs.items():
    (tmp_path / name).mkdir()
    with open(tmp_path / name / 'metrics.jsonl', 'w') as f:
      for step in (5, 10):
        f.write(json.dumps({'step': step, **base, **extra,
                            'classes_clf_5k': step}) + '\n')
  assert 'projection_seed1' in ablation.VARIANTS
  assert 'conditional=projection' in ablation.VARIANTS['projection_seed1'][0]
  table = ablation.markdown(ablation.collect(str(tmp_path), list(runs)), 10)
  lines = table.splitlines()
  assert lines[0].endswith('| label acc. % |')
  assert lines[2] == ('| projection_seed1 | 10 | 0.90 | 95.0 | 15.0 | 9.50 | '
                      '20.0 | 99.0 |')
  assert lines[3].endswith('| nan |')
  assert '| variant: label acc. % of class | 0 | 1 | 2 |' in lines
  assert lines[-1] == '| projection_seed1 | 100.0 | 98.0 | 98.5 |'
  # Without conditional runs the table is as before.
  plain = ablation.markdown(ablation.collect(str(tmp_path), ['base']), 10)
  assert 'label acc' not in plain and len(plain.splitlines()) == 3


def test_grid25_table_seed_without_sharp_samples():
  """A seed with no high-quality sample has no KL (NaN): the mean KL is over
  the other seeds, with n, and the worst seed's KL is NaN, not whichever
  KL max() meets first."""
  from benchmarks import grid25_table  # pylint: disable=g-import-not-at-top
  runs = [{'variant': 'wgan_gp', 'data': 'ring8', 'seed': s, 'num_steps': 40,
           'modes': m, 'hq': hq, 'kl': kl, 'seconds': 1.0}
          for s, (m, hq, kl) in enumerate([(0, 0.0, float('nan')),
                                           (2, 0.001, 1.4), (4, 0.005, 1.0)])]
  for order in (runs, runs[::-1]):
    row, = grid25_table.summarise(order)
    assert row['kl'][0] == pytest.approx(1.2) and row['kl_n'] == 2
    assert row['worst'][:2] == (0, 0.0) and np.isnan(row['worst'][2])
    line = grid25_table.markdown([row]).splitlines()[-1]
    assert '| 1.200 ± 0.283 (n=2) | 0 / 0.0 / nan |' in line
  row, = grid25_table.summarise(runs[1:])
  assert row['worst'][2] == 1.4


def test_grid25_table_last_evals():
  """--last_evals=K: each run's numbers are the mean of its last K curve
  points (KL over those with one), the worst seed's too; too few points is
  one error line."""
  from benchmarks import grid25_table  # pylint: disable=g-import-not-at-top
  nan = float('nan')
  curves = [[[1, 5, 0.1, 9.0], [2, 20, 0.8, 0.4], [3, 24, 0.9, nan]],
            [[1, 25, 0.5, 0.2], [2, 22, 0.7, 0.6], [3, 25, 1.0, 0.2]]]
  runs = [{'variant': 'pacgan m=4', 'data': 'grid25', 'seed': s,
           'num_steps': 3, 'modes': c[-1][1], 'hq': c[-1][2], 'kl': c[-1][3],
           'seconds': 1.0, 'curve': c} for s, c in enumerate(curves)]
  row, = grid25_table.summarise(runs, last_evals=2)
  assert row['modes'] == pytest.approx((22.75, np.std([22, 23.5], ddof=1)))
  assert row['hq_percent'][0] == pytest.approx((85 + 85) / 2)
  assert row['kl'][0] == pytest.approx((0.4 + 0.4) / 2) and row['kl_n'] == 2
  assert row['worst'] == pytest.approx((22.0, 85.0, 0.4))
  line = grid25_table.markdown([row]).splitlines()[-1]
  assert '| 3 (mean of the last 2 evaluations) | 22.8 ± 1.1 |' in line
  assert '| 22.0 / 85.0 / 0.400 |' in line
  # K=1 is the last evaluation, as without the flag.
  row, = grid25_table.summarise(runs)
  assert row['modes'][0] == 24.5 and row['kl_n'] == 1
  with pytest.raises(SystemExit, match='error: --last_evals=4: pacgan m=4 '
                     'seed 0 has 3 evaluations'):
    grid25_table.summarise(runs, last_evals=4)
