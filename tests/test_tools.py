"""The data tools: tools/mnist5k_npz.py, tools/make_digits_npz.py and
tools/cluster_npz.py write npz files that the own-images reader takes."""
import gzip
import sys

import numpy as np
import pytest

from configs import mnist_dcgan
from gan_jax import data
from tests.conftest import importorskip_extra
from tools import cluster_npz
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


def _blobs(sizes, dim=16, seed=0):
  """uint8 images [sum(sizes), 4, 4, 1]: one tight blob of pixels per size,
  the blobs far apart; and each image's blob."""
  rng = np.random.default_rng(seed)
  centres = rng.integers(30, 226, (len(sizes), dim))
  blob = np.repeat(np.arange(len(sizes)), sizes)
  pixels = centres[blob] + rng.integers(-3, 4, (len(blob), dim))
  order = rng.permutation(len(blob))
  return pixels[order].reshape(-1, 4, 4, 1).astype(np.uint8), blob[order]


def _same_partition(a, b):
  """Whether labels `a` and `b` group the rows alike (up to renaming)."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_cluster_npz_finds_the_blobs_and_numbers_them_by_size(tmp_path,
                                                              capsys):
  images, blob = _blobs([30, 50, 40])
  np.savez(tmp_path / 'in.npz', images=images, labels=blob + 7)
  out = tmp_path / 'out.npz'
  cluster_npz.main(['--data', str(tmp_path / 'in.npz'), '--clusters', '3',
                    '--out', str(out)])
  printed = capsys.readouterr().out
  assert "in 3 clusters of 40 to 40 images" in printed
  assert "purity against the old labels (not used): 0.917" in printed  # 110/120
  saved = np.load(out)
  np.testing.assert_array_equal(saved['images'], images)
  assert saved['labels'].dtype == np.int32
  # Balanced (the default): three clusters of 40, the blobs of 30 and 40
  # whole; unbalanced: exactly the blobs, the largest (50) cluster 0.
  x = images.reshape(120, -1) / 255.
  balanced = saved['labels']
  assert np.bincount(balanced).tolist() == [40, 40, 40]
  for b in (0, 2):
    assert len(set(balanced[blob == b].tolist())) == 1
  free = cluster_npz.kmeans(x, 3, balanced=False)
  assert _same_partition(free, blob)
  assert np.bincount(free).tolist() == [50, 40, 30]
  # Same data and seed, same labels; the file reads back as labelled data.
  np.testing.assert_array_equal(cluster_npz.kmeans(x, 3), balanced)
  config = mnist_dcgan.get_config('data=images')
  config.data.path, config.data.image_size = str(out), 4
  config.num_classes = 3
  _, labels = next(iter(data.build(config, 8)))
  assert labels.dtype == np.int32 and labels.max() < 3


def test_cluster_npz_sizes_when_clusters_do_not_divide_the_images():
  x = np.random.default_rng(1).normal(size=(10, 3))
  for k in (3, 4, 7):
    labels = cluster_npz.kmeans(x, k, restarts=1)
    sizes = np.bincount(labels, minlength=k)
    assert sizes.sum() == 10 and sizes.max() <= -(-10 // k), (k, sizes)


@pytest.mark.parametrize('case, message', [
    ('no_images', "has no array named 'images'"),
    ('clusters', '--clusters must be 2 .. 120'),
    ('same_out', '--out must differ from --data'),
    ('not_npz', 'is not an .npz file'),
    ('single_array', 'holds a single array (np.save)'),
])
def test_cluster_npz_errors(tmp_path, case, message):
  images, _ = _blobs([60, 60])
  path = tmp_path / 'in.npz'
  if case == 'no_images':
    np.savez(path, pictures=images)
  elif case == 'not_npz':
    path.write_text('not a zip')
  elif case == 'single_array':
    with open(path, 'wb') as f:
      np.save(f, images)
  else:
    np.savez(path, images=images)
  out = path if case == 'same_out' else tmp_path / 'out.npz'
  clusters = '121' if case == 'clusters' else '2'
  with pytest.raises(SystemExit) as e:
    cluster_npz.main(['--data', str(path), '--clusters', clusters,
                      '--out', str(out)])
  assert str(e.value).startswith('error: ') and message in str(e.value)
  assert case == 'same_out' or not out.exists()


@pytest.mark.extras
def test_cluster_npz_kmeans_matches_scikit_learn():
  """Plain k-means (--unbalanced) finds clusters as tight as scikit-learn's
  KMeans on overlapping data (inertia within 1 %), and the equal-size ones
  are only a little looser."""
  cluster = importorskip_extra('sklearn.cluster', 'scikit-learn')
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 3, (8, 5))
  x = centres[rng.integers(0, 8, 600)] + rng.normal(0, 1, (600, 5))

  def inertia(labels):
    return sum(((x[labels == c] - x[labels == c].mean(0))**2).sum()
               for c in np.unique(labels))

  ours = inertia(cluster_npz.kmeans(x, 8, balanced=False))
  theirs = inertia(cluster.KMeans(8, n_init=4, random_state=0).fit_predict(x))
  assert ours <= 1.01 * theirs, (ours, theirs)
  balanced = cluster_npz.kmeans(x, 8)
  assert np.bincount(balanced).tolist() == [75] * 8
  assert theirs <= inertia(balanced) <= 1.5 * theirs

