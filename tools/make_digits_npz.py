"""Writes an MNIST-format .npz of handwritten digits that needs no download.

    pip install scikit-learn
    python tools/make_digits_npz.py --out digits.npz
    python launch.py --config configs/mnist_dcgan.py:data=images \
        --config.data.path=digits.npz --workdir runs/digits

The source is scikit-learn's bundled copy of the UCI optical digits (1,797
scans of 8x8 pixels, 16 grey levels, 10 classes, about 180 each), which ships
inside the scikit-learn wheel. Each output image is one of those digits,
upsampled (PIL bicubic) to a random 16-20 pixel box, rotated by up to +-10
degrees and placed near the centre of a 28x28 black canvas with a random
+-2 pixel shift: MNIST's layout (a ~20 pixel digit centred in 28x28, white on
black, uint8). The variants add pose, not new handwriting: the 5,000 default
images hold 1,797 distinct digits, so this is a stand-in for MNIST, smaller
and blurrier, not a replacement.

The file has `images` uint8 [N, 28, 28, 1] and `labels` int32 [N] (0-9), the
keys that gan_jax's own-images reader takes.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import cli
# pylint: enable=g-import-not-at-top,wrong-import-position

SIZE = 28


def make_digits(num, seed=0):
  """(images uint8 [num, 28, 28, 1], labels int32 [num])."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  sources = (digits.images * (255 / 16)).round().astype(np.uint8)
  rng = np.random.default_rng(seed)
  # Every source digit once per round, in a new random order each round.
  order = np.concatenate([rng.permutation(len(sources))
                          for _ in range(-(-num // len(sources)))])[:num]
  images = np.zeros((num, SIZE, SIZE, 1), np.uint8)
  for n, i in enumerate(order):
    box = int(rng.integers(16, 21))
    digit = Image.fromarray(sources[i]).resize((box, box), Image.BICUBIC)
    digit = digit.rotate(float(rng.uniform(-10, 10)), Image.BILINEAR)
    canvas = Image.new('L', (SIZE, SIZE))
    top, left = ((SIZE - box) // 2 + rng.integers(-2, 3, size=2)).tolist()
    canvas.paste(digit, (left, top))
    images[n, :, :, 0] = np.asarray(canvas)
  return images, digits.target[order].astype(np.int32)


def parse_args(argv=None):
  """The command line (`argv`, default sys.argv[1:]); a bad one exits with
  argparse's usage error."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='the .npz to write')
  parser.add_argument('--num', type=int, default=5000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.num < 1:
    sys.exit(f'error: --num={args.num}: ask for 1 or more images')
  return args


def main():
  args = parse_args()
  cli.check_out(args.out)
  images, labels = make_digits(args.num, args.seed)
  np.savez_compressed(args.out, images=images, labels=labels)
  print(f'wrote {args.out}: {len(images)} images 28x28, labels '
        f'{np.bincount(labels, minlength=10).tolist()} per class')


if __name__ == '__main__':
  main()
