"""Labels an image .npz with k-means clusters, for a cluster-conditional GAN.

    python tools/cluster_npz.py --data mnist5k.npz --clusters 50 \
        --out mnist5k_k50.npz
    python launch.py --config configs/mnist5k.py:conditional=clusters \
        --config.data.path=mnist5k_k50.npz

An unconditional GAN on a few thousand images draws many samples between
modes (half a 4, half a 9): G is a continuous map of z. Conditioning G and D
on a label lets G keep the modes apart, and the labels need not be classes:
k-means clusters of the images themselves do (the idea of Liu et al. 2020,
"Diverse Image Generation via Self-Conditioned GANs", and Sage et al. 2018,
"Logo Synthesis and Manipulation with Clustered GANs", who cluster learned
features; here the pixels, once, before training). No class label is read:
the run stays unconditional in what it uses, and a sample is drawn by picking
a cluster (config `conditional.labels=clusters`: gan_jax/labels.py) and z.

Writes `images` unchanged and `labels` int32 [N], the cluster of each image
(clusters numbered by size, largest first). Pixels are scaled to [0, 1] and
clustered by Lloyd's algorithm from k-means++ starts (numpy, seeded by
--seed; the best of --restarts by inertia), so the same data and seed give
the same file; where the input has `labels` (classes), how pure the
clusters are in them is printed. The clusters hold at most ceil(N/K) images
each (exactly N/K when K divides N; --unbalanced for plain k-means); in
training the fakes take the real batch's clusters, and the evaluation draws
each cluster as often as the file has it (gan_jax/labels.py). An existing
`labels` array (classes) is replaced, not used. Made for the few thousand to tens of thousands of images that such
small-data runs have: the equal-size assignment is a Python loop over
image-cluster pairs.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import cli
from gan_jax.data import own_images
from gan_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position


def kmeans_plus_plus(x, k, rng):
  """k starting centres, each drawn with probability ~ squared distance."""
  centres = [x[rng.integers(len(x))]]
  nearest = ((x - centres[0])**2).sum(1)
  for _ in range(1, k):
    total = nearest.sum()
    index = (rng.choice(len(x), p=nearest / total) if total > 0
             else rng.integers(len(x)))
    centres.append(x[index])
    nearest = np.minimum(nearest, ((x - x[index])**2).sum(1))
  return np.stack(centres)


def squared_distances(x, centres):
  """[N, k] squared distances of the rows of `x` to the centres (>= 0)."""
  return np.maximum((x**2).sum(1)[:, None] - 2 * x @ centres.T
                    + (centres**2).sum(1)[None], 0)


def assign(x, centres):
  """(cluster of each row, sum of squared distances to its centre)."""
  d = squared_distances(x, centres)
  labels = d.argmin(1)
  return labels, float(d[np.arange(len(x)), labels].sum())


def assign_balanced(x, centres):
  """`assign` with every cluster holding ceil(N/k) rows at most: the (row,
  centre) pairs are taken nearest first, each row to the first centre that
  still has room."""
  n, k = len(x), len(centres)
  d = squared_distances(x, centres)
  room = np.full(k, -(-n // k))
  labels = np.full(n, -1)
  left = n
  for pair in np.argsort(d, axis=None, kind='stable'):
    row, c = divmod(int(pair), k)
    if labels[row] < 0 and room[c]:
      labels[row], room[c] = c, room[c] - 1
      left -= 1
      if not left:
        break
  return labels, float(d[np.arange(n), labels].sum())


def kmeans(x, k, seed=0, restarts=4, iterations=100, balanced=True):
  """Cluster labels int32 [N] of the rows of `x` (the best of `restarts`);
  `balanced`: clusters of at most ceil(N/k) rows (`assign_balanced`)."""
  x = np.asarray(x, np.float64)
  rng = np.random.default_rng(seed)
  best = None
  for _ in range(restarts):
    centres = kmeans_plus_plus(x, k, rng)
    labels = None
    for _ in range(iterations):
      new, inertia = (assign_balanced if balanced else assign)(x, centres)
      if labels is not None and np.array_equal(new, labels):
        break
      labels = new
      for c in range(k):
        members = x[labels == c]
        # An empty cluster restarts at the point farthest from its centre.
        centres[c] = (members.mean(0) if len(members) else
                      x[((x - centres[labels])**2).sum(1).argmax()])
    if best is None or inertia < best[0]:
      best = (inertia, labels)
  return by_size(best[1], k)


def by_size(labels, k):
  """Renumbers clusters by size, largest first (ties by old number)."""
  order = np.argsort(-np.bincount(labels, minlength=k), kind='stable')
  rank = np.empty(k, np.int64)
  rank[order] = np.arange(k)
  return rank[labels].astype(np.int32)


def parse_args(argv=None):
  """The command line (`argv`, default sys.argv[1:]); a bad one exits with
  argparse's usage error."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='An .npz with `images`.')
  parser.add_argument('--clusters', type=int, required=True,
                      help='How many clusters (labels 0 .. clusters-1).')
  parser.add_argument('--out', required=True, help='The .npz to write.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--restarts', type=int, default=4)
  parser.add_argument('--unbalanced', action='store_true',
                      help='plain k-means: clusters of any size')
  args = parser.parse_args(argv)
  if args.restarts < 1:
    sys.exit(f'error: --restarts={args.restarts}: give 1 or more')
  return args


def main(argv=None):
  args = parse_args(argv)
  try:
    images, classes = own_images.read_npz(args.data, labels=None)
  except UserError as e:
    sys.exit(f'error: {e}')
  if images.ndim != 4:
    sys.exit(f"error: 'images' in {args.data} must be N x H x W x C, got "
             f'shape {images.shape}')
  if not 2 <= args.clusters <= len(images):
    sys.exit(f'error: --clusters must be 2 .. {len(images)} (the number of '
             f'images), got {args.clusters}')
  if os.path.abspath(args.out) == os.path.abspath(args.data):
    sys.exit('error: --out must differ from --data (the input is kept)')
  cli.check_out(args.out)
  x = images.reshape(len(images), -1).astype(np.float64)
  if images.dtype == np.uint8:
    x /= 255.
  else:  # Float images in [-1, 1] (gan_jax's own-images convention).
    x = (x + 1) / 2
  labels = kmeans(x, args.clusters, args.seed, args.restarts,
                  balanced=not args.unbalanced)
  np.savez_compressed(args.out, images=images, labels=labels)
  sizes = np.bincount(labels, minlength=args.clusters)
  print(f'wrote {args.out}: {len(images)} images in {args.clusters} clusters '
        f'of {sizes.min()} to {sizes.max()} images')
  if classes is not None and classes.shape == labels.shape:
    print(f'purity against the old labels (not used): '
          f'{purity(labels, classes):.3f}')


def purity(clusters, classes):
  """The fraction of images in their cluster's most common class."""
  classes = np.asarray(classes).astype(np.int64) - np.min(classes)
  return sum(np.bincount(classes[clusters == c]).max()
             for c in np.unique(clusters)) / len(clusters)


if __name__ == '__main__':
  main()
