"""The data tools: tools/mnist5k_npz.py and tools/make_digits_npz.py write
npz files that the own-images reader takes."""
import gzip
import sys

import numpy as np
import pytest

from configs import mnist_dcgan
from gan_jax import data
from tests.conftest import importorskip_extra
from tools import make_digits_npz
from tools import mnist5k_npz


def _read_back(path, batch=8):
  """One batch of `path` through gan_jax's own-images pipeline."""
  config = mnist_dcgan.get_config('data=images')
  config.data.path = str(path)
  config.num_classes = 10
  return next(iter(data.build(config, batch)))


def test_mnist5k_csv_to_npz(tmp_path, monkeypatch, capsys):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (20, 784))
  labels = np.arange(20) % 10
  csv = tmp_path / 'mnist_5k.csv.gz'
  with gzip.open(csv, 'wt') as f:
    for row, label in zip(pixels, labels):
      f.write(','.join(map(str, [*row, label])) + '\n')
  out = tmp_path / 'm.npz'
  monkeypatch.setattr(sys, 'argv', ['mnist5k_npz', '--csv', str(csv),
                                    '--out', str(out)])
  mnist5k_npz.main()
  assert '[2, 2, 2, 2, 2, 2, 2, 2, 2, 2] per class' in capsys.readouterr().out
  saved = np.load(out)
  assert saved['images'].dtype == np.uint8 and saved['labels'].dtype == np.int32
  np.testing.assert_array_equal(saved['images'].reshape(20, 784), pixels)
  np.testing.assert_array_equal(saved['labels'], labels)
  images, batch_labels = _read_back(out)
  assert images.shape[-3:] == (28, 28, 1) and batch_labels.shape[-1] == 8
  assert -1 <= images.min() < images.max() <= 1


def test_mnist5k_rejects_other_tables(tmp_path):
  csv = tmp_path / 'bad.csv'
  csv.write_text('1,2,3\n4,5,6\n')
  with pytest.raises(SystemExit, match='785 columns'):
    mnist5k_npz.read(str(csv))


@pytest.mark.extras
def test_make_digits_npz_writes_mnist_layout():
  importorskip_extra('sklearn', 'scikit-learn')  # The digits' source.
  images, labels = make_digits_npz.make_digits(40, seed=0)
  assert images.shape == (40, 28, 28, 1) and images.dtype == np.uint8
  assert sorted(set(labels.tolist())) == list(range(10))
  # A digit near the centre on a black border, as in MNIST.
  assert images[:, :2].max() == 0 and images[:, 10:18, 10:18].mean() > 40
