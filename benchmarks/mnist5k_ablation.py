"""The ablation behind configs/mnist5k.py: digits from 5,000 real MNIST digits.

    python tools/mnist5k_npz.py --out mnist5k.npz
    python tools/train_classifier.py --config configs/mnist_classifier.py:data=images \\
        --config.data.path=mnist5k.npz --workdir runs/mnist5k_classifier
    python benchmarks/mnist5k_ablation.py --data=mnist5k.npz \\
        --classifier=runs/mnist5k_classifier --num_steps=10000 --jobs=4 \\
        --out=benchmarks/results/mnist5k_ablation.json

Each variant is `python launch.py --config configs/mnist5k.py` with the
overrides in VARIANTS (`seedsnet`: the seeds' network, configs/mnist_dcgan.py,
with the same optimizer, batch, EMA and standing statistics), evaluated every
1,000 steps on 5,000 samples in the space of a classifier trained on the same
digits: classes covered (at least half their even share), the rarest class's
share over the even share, the fraction of samples the classifier gives a
class with probability >= 0.9 ('confident'), FID and IS on its features
(and FID of 1,000 samples, to set beside the real images' floor: 1,000 real
digits against all 5,000).
`dcgan` is the seeds' recipe unchanged (configs/mnist_dcgan.py), evaluated
every 500 steps; `dcgan_adam2e4` the same with the DCGAN paper's Adam.
The `projection*` variants are class-conditional (configs/mnist5k.py:
conditional=projection), and so is `cgan` (configs/mnist_cgan.py, the seeds'
recipe with labels, unchanged but for evaluating every 500 steps;
`cgan_adam2e4` with the DCGAN paper's Adam); their
table adds label accuracy (the share of samples the classifier puts in the
class they were asked for) and a table of it per class. The `clusters_*`
variants condition on k-means clusters of the digits (configs/mnist5k.py:
conditional=clusters), written first by tools/cluster_npz.py into --workdir
(`unbalanced`: plain k-means).
`--collect` only reads the workdirs of an earlier call (or another machine's)
and writes the table. `--jobs` runs variants side by side (each a process).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import bench_util  # pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from tools import cluster_npz  # pylint: disable=g-import-not-at-top,wrong-import-position

METRICS = ('classes_clf_5k', 'classes_clf_5k/min_share',
           'classes_clf_5k/confident', 'fid_clf_5k_train', 'is_clf_5k',
           'fid_clf_1k_train')
OPT = ('--config.g.optimizer.lr={lr} --config.d.optimizer.lr={lr} '
       '--config.g.optimizer.b1={b1} --config.d.optimizer.b1={b1}')

EVERY_500 = '--config.eval_every=500 --config.checkpoint.every=500'


def seed_flags(seed):
  """The overrides that train seed `seed` (none for the config's own, 0)."""
  return f'--config.seed={seed} --config.data.seed={seed}' if seed else ''


# name -> (config, overrides) on top of configs/mnist5k.py's settings.
VARIANTS = {
    'base': ('configs/mnist5k.py', ''),
    'seed1': ('configs/mnist5k.py', seed_flags(1)),
    'seed2': ('configs/mnist5k.py', seed_flags(2)),
    'noema': ('configs/mnist5k.py',
              '--config.ema.decay=0.0 --config.eval.standing_stats=0'),
    'ema_nostanding': ('configs/mnist5k.py', '--config.eval.standing_stats=0'),
    'adam1e4': ('configs/mnist5k.py', OPT.format(lr=1e-4, b1=0.9)),
    'b256': ('configs/mnist5k.py', '--config.batch_size=256'),
    'ch32': ('configs/mnist5k.py', '--config.g.channels=32 --config.d.channels=32'),
    'diffaug': ('configs/mnist5k.py', '--config.augment.policy=translation,cutout'),
    'simultaneous': ('configs/mnist5k.py', '--config.updates=simultaneous'),
    'r1': ('configs/mnist5k.py', '--config.d.norm=none --config.penalty.name=r1 '
           '--config.penalty.weight=1.0'),
    'seedsnet': ('configs/mnist_dcgan.py:data=images',
                 OPT.format(lr=2e-4, b1=0.5) + ' --config.batch_size=64 '
                 '--config.updates=alternating --config.ema.decay=0.999 '
                 '--config.ema.start_step=1000 --config.eval.standing_stats=16 '
                 '--config.eval_every=1000 --config.checkpoint.every=1000'),
    # The seeds' recipe as it stands (batch 256, Adam 1e-4, simultaneous
    # updates, no EMA): configs/mnist_dcgan.py on the digits.
    'dcgan': ('configs/mnist_dcgan.py:data=images', EVERY_500),
    # ... with the DCGAN paper's Adam (2e-4, beta1 0.5) for both networks.
    'dcgan_adam2e4': ('configs/mnist_dcgan.py:data=images',
                      OPT.format(lr=2e-4, b1=0.5) + ' ' + EVERY_500),
    # The seeds' recipe with labels, as it stands (batch 256, Adam 1e-4,
    # simultaneous updates, no EMA): configs/mnist_cgan.py on the digits.
    'cgan': ('configs/mnist_cgan.py:data=images', EVERY_500),
    'cgan_seed1': ('configs/mnist_cgan.py:data=images',
                   f'{EVERY_500} {seed_flags(1)}'),
    'cgan_adam2e4': ('configs/mnist_cgan.py:data=images',
                     OPT.format(lr=2e-4, b1=0.5) + ' ' + EVERY_500),
}
# Cluster-conditional variants: name -> (clusters, equal sizes, seed).
CLUSTERS = {'clusters_20': (20, True, 0), 'clusters_50': (50, True, 0),
            'clusters_50_seed1': (50, True, 1),
            'clusters_50_seed2': (50, True, 2),
            'clusters_100': (100, True, 0),
            'clusters_100_seed1': (100, True, 1),
            'clusters_100_seed2': (100, True, 2),
            'clusters_50_unbalanced': (50, False, 0),
            'clusters_50_unbalanced_seed1': (50, False, 1),
            'clusters_50_unbalanced_seed2': (50, False, 2),
            'clusters_100_unbalanced': (100, False, 0)}
VARIANTS.update({
    name: (f'configs/mnist5k.py:conditional=clusters,clusters={k}',
           seed_flags(seed))
    for name, (k, _, seed) in CLUSTERS.items()})
# Class-conditional (labels given): the same network and budget, 3 seeds.
VARIANTS.update({
    name: ('configs/mnist5k.py:conditional=projection', seed_flags(seed))
    for name, seed in (('projection', 0), ('projection_seed1', 1),
                       ('projection_seed2', 2), ('projection_seed3', 3),
                       ('projection_seed4', 4))})
LABEL_ACC = 'classes_clf_5k/label_acc'  # Conditional runs: asked-for class.


def data_path(name, args):
  """The npz variant `name` trains on: a cluster variant's is in --workdir
  (the seeds of a variant share it)."""
  if name not in CLUSTERS:
    return args.data
  k, balanced, _ = CLUSTERS[name]
  return os.path.join(args.workdir,
                      f'clusters_{k}{"" if balanced else "_unbalanced"}.npz')


def clustered_data(name, args):
  """Writes a cluster variant's npz from --data, once; returns its path."""
  k, balanced, _ = CLUSTERS[name]
  path = data_path(name, args)
  if not os.path.exists(path):
    os.makedirs(args.workdir, exist_ok=True)
    cluster_npz.main(['--data', args.data, '--clusters', str(k), '--out',
                      path] + ([] if balanced else ['--unbalanced']))
  return path


def command(name, args):
  config, overrides = VARIANTS[name]
  data = data_path(name, args)
  return (f'{sys.executable} {os.path.join(ROOT, "launch.py")} --config '
          f'{os.path.join(ROOT, config)} --config.data.path={data} '
          f'--config.num_steps={args.num_steps} --config.checkpoint.keep=1 '
          f'--config.eval.metrics={",".join(m for m in METRICS if "/" not in m)} '
          f'--config.eval.classifier_checkpoint={args.classifier} {overrides} '
          f'--workdir {os.path.join(args.workdir, name)}')


def collect(workdir, names):
  """{name: [{step, metric: value}, ...]} from each run's metrics.jsonl."""
  runs = {}
  for name in names:
    path = os.path.join(workdir, name, 'metrics.jsonl')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      evals = [json.loads(l) for l in f if METRICS[0] in l]
    # Runs made before fid_clf_1k_train was added have no such entry.
    runs[name] = [{'step': e['step'], **{m: v for m, v in e.items()
                                         if m in METRICS or
                                         m.startswith(LABEL_ACC)}}
                  for e in evals]
  return runs


def markdown(runs, step):
  """The table at `step`; with conditional runs, label accuracy overall and
  per class too."""
  at = {name: next((e for e in evals if e['step'] == step), None)
        for name, evals in runs.items()}
  at = {name: e for name, e in at.items() if e is not None}
  labelled = any(LABEL_ACC in e for e in at.values())
  lines = ['| variant | classes | rarest / even share | confident % | '
           'fid_clf_5k | is_clf_5k | fid_clf_1k |' +
           (' label acc. % |' if labelled else ''),
           '|---|---:|---:|---:|---:|---:|---:|' + ('---:|' if labelled else '')]
  for name, e in at.items():
    lines.append(f"| {name} | {e[METRICS[0]]:.0f} | {e[METRICS[1]]:.2f} | "
                 f"{100 * e[METRICS[2]]:.1f} | {e[METRICS[3]]:.1f} | "
                 f"{e[METRICS[4]]:.2f} | "
                 f"{e.get(METRICS[5], float('nan')):.1f} |" +
                 (f" {100 * e.get(LABEL_ACC, float('nan')):.1f} |"
                  if labelled else ''))
  classes = sorted({int(m[len(LABEL_ACC) + 1:]) for e in at.values()
                    for m in e if m.startswith(LABEL_ACC + '_')})
  if classes:
    lines += ['', '| variant: label acc. % of class | ' +
              ' | '.join(map(str, classes)) + ' |',
              '|---|' + '---:|' * len(classes)]
    for name, e in at.items():
      if LABEL_ACC in e:
        lines.append(f'| {name} | ' + ' | '.join(
            f"{100 * e[f'{LABEL_ACC}_{c}']:.1f}" for c in classes) + ' |')
  return '\n'.join(lines)


def last_line(path):
  """The last line of the log `path` (a failed run's `error:` line)."""
  with open(path, errors='replace') as f:
    lines = f.read().strip().splitlines()
  return lines[-1].removeprefix('error: ') if lines else '(empty log)'


def parse_args(argv=None):
  """The command line (`argv`, default sys.argv[1:]), checked: a bad one
  exits with argparse's usage error. Nothing is written."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', default='mnist5k.npz')
  parser.add_argument('--classifier', default='runs/mnist5k_classifier')
  parser.add_argument('--num_steps', type=int, default=10_000)
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--workdir', default='runs/mnist5k_ablation')
  parser.add_argument('--jobs', type=int, default=1)
  parser.add_argument('--collect', action='store_true',
                      help='only read the runs in --workdir')
  parser.add_argument('--note', default='', help='the machine, for the JSON')
  parser.add_argument('--commit', default=None,
                      help='with --collect: the commit the runs were made at '
                      '(default: this checkout\'s)')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  args.variants = [v for v in args.variants.split(',') if v]
  unknown = set(args.variants) - set(VARIANTS)
  if unknown or not args.variants:
    parser.error(f'unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}'
                 if args.variants else
                 '--variants: name one or more, comma-separated')
  if args.jobs < 1 or args.num_steps < 1:
    parser.error('--jobs and --num_steps must be 1 or more')
  return args


def main():
  args = parse_args()
  commit = args.commit or bench_util.git_commit()  # Before any edit.
  names = args.variants
  if args.out:
    cli.check_out(args.out)
  seconds, failed = {}, {}
  if not args.collect:
    todo, running = list(names), {}
    while todo or running:
      while todo and len(running) < args.jobs:
        name = todo.pop(0)
        if name in CLUSTERS:
          clustered_data(name, args)
        os.makedirs(os.path.join(args.workdir, name), exist_ok=True)
        log = open(os.path.join(args.workdir, f'{name}.log'), 'w')
        running[name] = (subprocess.Popen(command(name, args), shell=True,
                                          stdout=log, stderr=subprocess.STDOUT),
                         time.time())
      for name, (proc, t0) in list(running.items()):
        if proc.poll() is not None:
          seconds[name] = time.time() - t0
          print(f'{name}: rc {proc.returncode}, {seconds[name]:.0f} s',
                flush=True)
          if proc.returncode:
            failed[name] = last_line(os.path.join(args.workdir, f'{name}.log'))
          del running[name]
      time.sleep(1)
  runs = collect(args.workdir, names)
  if args.collect and not runs:
    sys.exit(f'error: no run of {", ".join(names)} in {args.workdir} (each '
             'has WORKDIR/VARIANT/metrics.jsonl); pass the --workdir of the '
             'runs')
  table = markdown(runs, args.num_steps)
  print(table)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'command': ' '.join(['python'] + sys.argv), 'note': args.note,
                 'commit': commit,
                 'commands': {n: command(n, args) for n in names},
                 'seconds': seconds, 'runs': runs, 'table': table}, f, indent=1)
    print(f'wrote {args.out}')
  if failed:
    sys.exit(f'error: {len(failed)} of {len(names)} runs failed: ' + '; '.join(
        f'{n}: {line}' for n, line in failed.items()))


if __name__ == '__main__':
  main()
