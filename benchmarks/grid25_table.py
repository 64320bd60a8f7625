"""Mode coverage on grid25 (25 Gaussians, configs/default.py:data=grid25) for
several losses and toolbox options, over several seeds.

    python benchmarks/grid25_table.py                       # 3 seeds, 4000 steps
    python benchmarks/grid25_table.py --num_steps=1500 --seeds=0,1,2 \\
        --out=benchmarks/grid25_table.json

Each run is `gan_jax.train.train_and_evaluate` on the default grid25 config
(MLP 3 x 256, batch 256, Adam, linear decay of the learning rate to 0 at
`--num_steps`) with `config.seed = config.data.seed = seed`, changed only as
listed in VARIANTS. The metrics are those of `gan_jax.metrics.toy` on
`config.eval.num_samples` (2500) samples at the end (VEEGAN, Srivastava et al.
2017; PacGAN, Lin et al. 2018): modes covered (of 25), the percentage of
high-quality samples (within 3 std of a mode) and the reverse KL of the
high-quality samples' mode histogram to uniform. The table gives mean ± std
over seeds (sample std, ddof=1); a KL is NaN when a run has no high-quality
sample, and the mean is then over the other seeds (n says how many) and the
worst seed's KL is NaN. With `--last_evals=K` a run's numbers are the mean of
its last K evaluations (of `--curve_points`), not the last one alone: GAN
numbers move from one evaluation to the next.

Prints a markdown table and writes every run's numbers to `--out` (JSON).
Run from the repository root (or anywhere: the root is put on sys.path).
"""
import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import workdir  # pylint: disable=g-import-not-at-top,wrong-import-position

# name -> (configs/default.py argument, or 'module:argument' of another
# config in configs/, {dotted field: value}).
VARIANTS = {
    'non_saturating': ('data=grid25', {}),
    'minimax': ('data=grid25,loss=minimax', {}),
    'least_squares': ('data=grid25,loss=least_squares', {}),
    'wasserstein': ('data=grid25,loss=wasserstein', {}),
    'hinge': ('data=grid25,loss=hinge', {}),
    'wgan_gp': ('data=grid25,loss=wgan_gp', {}),
    # The penalty weight of WGAN-GP's toy code (gan_toy.py), not its paper's 10.
    'wgan_gp weight 0.1': ('data=grid25,loss=wgan_gp', {'penalty.weight': 0.1}),
    'non_saturating + R1': ('data=grid25', {'penalty.name': 'r1',
                                            'penalty.weight': 1.0}),
    'pack m=2': ('data=grid25', {'d.pack': 2}),
    'pack m=4': ('data=grid25', {'d.pack': 4}),
    # Both gradients at the same point (gan_jax/step.py, config.updates).
    'simultaneous': ('data=grid25', {'updates': 'simultaneous'}),
    # Matrix products in bfloat16, parameters and losses in float32.
    'bfloat16': ('data=grid25', {'dtype': 'bfloat16'}),
    # Class-conditional on the mode index (25 classes): label_acc is the
    # fraction of samples at the mode they were asked for.
    'conditional projection': ('data=grid25', {'num_classes': 25,
                                               'conditional.d': 'projection'}),
    'conditional acgan': ('data=grid25', {'num_classes': 25,
                                          'conditional.d': 'acgan'}),
    # The best recipe measured (configs/mode_coverage.py), on the grid and on
    # PacGAN's ring (8 modes, radius 1, std 0.01); its own num_steps, 20k.
    'mode_coverage': ('mode_coverage:data=grid25', {}),
    'mode_coverage ring_pacgan': ('mode_coverage:data=ring_pacgan', {}),
    'mode_coverage R1 every step': ('mode_coverage:data=grid25',
                                    {'penalty.every': 1}),
    'mode_coverage width 128': ('mode_coverage:data=grid25',
                                {'g.width': 128, 'd.width': 128}),
    # PacGAN's grid networks and optimizer (configs/pacgan_grid.py): D judges
    # 100 packs of m samples a step.
    'pacgan m=1': ('pacgan_grid:pack=1', {}),
    'pacgan m=2': ('pacgan_grid:pack=2', {}),
    'pacgan m=4': ('pacgan_grid:pack=4', {}),
}
DATASETS = ('grid25', 'ring_pacgan', 'ring8')


def _with_data(spec, data):
  """`spec` with its data=grid25 replaced by data=`data`."""
  if data is None or data == 'grid25':
    return spec
  if 'data=grid25' not in spec:
    raise ValueError(f'{spec!r} has no data=grid25 to replace by {data}')
  return spec.replace('data=grid25', f'data={data}')


def make_config(variant, seed, num_steps, data=None, curve_points=1):
  spec, overrides = VARIANTS[variant]
  spec = _with_data(spec, data)
  module, _, arg = spec.rpartition(':') if ':' in spec else ('', '', spec)
  module = importlib.import_module(f'configs.{module}') if module else default
  config = module.get_config(arg)
  config.seed = config.data.seed = seed
  config.num_steps = num_steps = num_steps or config.num_steps
  config.eval_every = config.checkpoint.every = num_steps // curve_points
  config.log_every = min(config.log_every, num_steps)
  config.checkpoint.use_async = False
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def kept_step(workdir):
  """The latest checkpoint's step in `workdir` (0 for a new run)."""
  folder = os.path.join(workdir, 'checkpoints')
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return max((int(n) for n in names if n.isdigit()), default=0)


def run_one(variant, seed, num_steps, workdir, data=None, curve_points=1):
  config = make_config(variant, seed, num_steps, data, curve_points)
  start_step = kept_step(workdir)
  t0 = time.time()
  step = int(train.train_and_evaluate(config, workdir).step)
  seconds = time.time() - t0
  if step < config.num_steps:  # Stopped (SIGTERM, Ctrl-C): not a result.
    raise SystemExit(
        f'error: {variant} seed {seed} stopped at step {step} of '
        f'{config.num_steps}; no table is written. Its checkpoint is in '
        f'{workdir}: with --workdir, the same command goes on from it')
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"modes"' in line]
  last = evals[-1]
  return {'variant': variant, 'data': config.data.name, 'seed': seed,
          'num_steps': config.num_steps,
          'modes': int(last['modes']), 'hq': float(last['hq']),
          'kl': float(last['kl']),
          'label_acc': float(last.get('label_acc', 'nan')),
          # The time of this call: from start_step, the checkpoint it resumed.
          'seconds': seconds, 'start_step': start_step,
          # Modes / HQ / KL at each evaluation: where the numbers stop moving.
          'curve': [[int(e['step']), int(e['modes']), float(e['hq']),
                     float(e['kl'])] for e in evals]}


def mean_std(values):
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return float('nan'), float('nan'), 0
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.
  return float(np.mean(values)), std, len(values)


def tail(run, last_evals):
  """A run's modes, HQ and KL: at its last evaluation, or with `last_evals`
  K > 1 the mean of its last K (a GAN's numbers move from one evaluation to
  the next; the KL mean is over those with a KL)."""
  if last_evals == 1:
    return run['modes'], run['hq'], run['kl']
  curve = run.get('curve', [])
  if len(curve) < last_evals:
    raise SystemExit(
        f"error: --last_evals={last_evals}: {run['variant']} seed "
        f"{run['seed']} has {len(curve)} evaluations; give at most that, or "
        'train with more --curve_points')
  modes, hq, kl = np.array([c[1:4] for c in curve[-last_evals:]], float).T
  kl = kl[~np.isnan(kl)]
  return (float(modes.mean()), float(hq.mean()),
          float(kl.mean()) if kl.size else float('nan'))


def summarise(runs, last_evals=1):
  rows = []
  keys = dict.fromkeys((r['variant'], r.get('data', 'grid25')) for r in runs)
  for variant, data in sorted(keys, key=lambda k: (DATASETS.index(k[1])
                                                   if k[1] in DATASETS else 9,
                                                   list(VARIANTS).index(k[0]))):
    mine = [r for r in runs
            if r['variant'] == variant and r.get('data', 'grid25') == data]
    numbers = [tail(r, last_evals) for r in mine]
    modes = mean_std([n[0] for n in numbers])
    hq = mean_std([100 * n[1] for n in numbers])
    kl = mean_std([n[2] for n in numbers])
    acc = mean_std([100 * r.get('label_acc', float('nan')) for r in mine])
    rows.append({'variant': variant, 'data': data, 'seeds': len(mine),
                 'num_steps': sorted({r['num_steps'] for r in mine}),
                 'modes': modes[:2], 'hq_percent': hq[:2], 'kl': kl[:2],
                 'kl_n': kl[2], 'label_acc_percent': acc[:2],
                 # The worst seed on each number; a seed without a KL (no
                 # high-quality sample) is the worst KL, NaN.
                 'worst': (min(n[0] for n in numbers),
                           100 * min(n[1] for n in numbers),
                           float('nan') if kl[2] < len(mine)
                           else max(n[2] for n in numbers)),
                 'last_evals': last_evals,
                 'seconds_per_run': float(np.mean([r['seconds'] for r in mine]))})
  return rows


def markdown(rows):
  lines = ['| data | variant | steps | modes | HQ % | KL '
           '| worst seed: modes / HQ % / KL | label acc. % | seeds | s/run |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    kl = f"{r['kl'][0]:.3f} ± {r['kl'][1]:.3f}"
    if r['kl_n'] < r['seeds']:
      kl += f" (n={r['kl_n']})"
    acc = r.get('label_acc_percent', (float('nan'),) * 2)
    acc = '' if math.isnan(acc[0]) else f'{acc[0]:.1f} ± {acc[1]:.1f}'
    steps = ','.join(str(n) for n in r.get('num_steps', []))
    worst_modes = r['worst'][0]
    if r.get('last_evals', 1) > 1:
      steps += f" (mean of the last {r['last_evals']} evaluations)"
      worst_modes = f'{worst_modes:.1f}'
    lines.append(
        f"| {r.get('data', 'grid25')} | {r['variant']} | {steps} | "
        f"{r['modes'][0]:.1f} ± {r['modes'][1]:.1f} | "
        f"{r['hq_percent'][0]:.1f} ± {r['hq_percent'][1]:.1f} | {kl} | "
        f"{worst_modes} / {r['worst'][1]:.1f} / {r['worst'][2]:.3f} | {acc} | "
        f"{r['seeds']} | {r['seconds_per_run']:.0f} |")
  return '\n'.join(lines)


def parse_args(argv=None):
  """The command line (`argv`, default sys.argv[1:]), checked: a bad one
  exits with argparse's usage error. Nothing is written."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--seeds', default='0,1,2',
                      help='comma-separated seeds (config.seed = data.seed)')
  parser.add_argument('--num_steps', type=int, default=4000,
                      help="GAN steps per run (the default config's: 4000; "
                      "0: each config's own)")
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help='comma-separated subset of: ' + ', '.join(VARIANTS))
  parser.add_argument('--data', default=None, choices=DATASETS,
                      help="replaces each variant's data=grid25 (default: "
                      'as the variant says)')
  parser.add_argument('--curve_points', type=int, default=1,
                      help='evaluations per run, evenly spaced (the last at '
                      'num_steps): the curve of modes / HQ / KL')
  parser.add_argument('--last_evals', type=int, default=1,
                      help="the table's numbers for a run: the mean of its "
                      'last K evaluations (default 1: the last one)')
  parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                      help='make one table of the runs in these output files '
                      '(of several invocations) instead of training')
  parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks',
                                                    'grid25_table.json'))
  parser.add_argument('--workdir', default=None,
                      help='where the runs go and stay (default: a temporary '
                      'folder, removed at the end)')
  args = parser.parse_args(argv)
  if args.num_steps < 0:
    parser.error(f"--num_steps={args.num_steps}: give 1 or more (0: each "
                 "config's own)")
  if args.curve_points < 1:
    parser.error(f'--curve_points={args.curve_points}: give 1 or more')
  if args.last_evals < 1 or (not args.merge and
                             args.last_evals > args.curve_points):
    parser.error(f'--last_evals={args.last_evals}: give 1 to --curve_points '
                 f'({args.curve_points})')
  if args.merge:
    return args
  try:
    args.seeds = [int(s) for s in args.seeds.split(',')]
  except ValueError:
    parser.error(f'--seeds={args.seeds}: give whole numbers separated by '
                 'commas, e.g. 0,1,2')
  args.variants = [v.strip() for v in args.variants.split(',')]
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    parser.error(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
  for variant in args.variants:
    try:
      _with_data(VARIANTS[variant][0], args.data)
    except ValueError as e:
      parser.error(str(e))
  return args


def main():
  args = parse_args()
  cli.check_out(args.out)
  if args.merge:
    runs = merged(args.merge)
    return write(args, runs, sum(r['seconds'] for r in runs))
  seeds, variants = args.seeds, args.variants
  logging.set_verbosity(logging.WARNING)
  commit = bench_util.git_commit()  # The code the runs use: it is imported now.
  # Without --workdir the runs go to a temporary folder, removed at the end.
  with (contextlib.nullcontext(args.workdir) if args.workdir else
        tempfile.TemporaryDirectory(prefix='grid25_table_')) as base:
    runs = []
    t0 = time.time()
    for variant in variants:
      for seed in seeds:
        name = variant.replace(' ', '').replace('+', '_').replace('=', '')
        r = run_one(variant, seed, args.num_steps,
                    os.path.join(base, f'{name}_{args.data}_seed{seed}'),
                    args.data, args.curve_points)
        r['commit'] = commit
        runs.append(r)
        print(f"{variant:22s} {r['data']:12s} seed {seed}: modes "
              f"{r['modes']:2d}  hq {100 * r['hq']:5.1f}%  kl {r['kl']:.3f}  "
              f"({r['seconds']:.0f} s)", flush=True)
  return write(args, runs, time.time() - t0)


def merged(paths):
  """The runs of several output files, each run keeping its commit."""
  runs = []
  for path in paths:
    try:
      with open(path) as f:
        content = json.load(f)
      content['runs']  # pylint: disable=pointless-statement
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise SystemExit(f'error: --merge {path}: not an output file of this '
                       f'script ({workdir.reason(e, path)})') from None
    for r in content['runs']:
      r.setdefault('commit', content.get('commit', 'unknown'))
      runs.append(r)
  return runs


def write(args, runs, seconds):
  rows = summarise(runs, args.last_evals)
  table = markdown(rows)
  commits = sorted({r.get('commit', 'unknown') for r in runs})
  print()
  print(f'{len(runs)} runs ({seconds:.0f} s in all), at {", ".join(commits)}:')
  print(table)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'command': ' '.join(['python'] + sys.argv),
               'commit': commits[0] if len(commits) == 1 else commits,
               'num_steps': sorted({r['num_steps'] for r in runs}),
               'variants': {r['variant']: VARIANTS.get(r['variant'])
                            for r in runs},
               'runs': runs, 'summary': rows, 'table': table}, f, indent=2)
  print(f'\nwrote {args.out}')


if __name__ == '__main__':
  main()
