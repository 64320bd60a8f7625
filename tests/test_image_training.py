"""Image GANs end to end: configs, BatchNorm and spectral-norm state, sample grids.

Tiny widths and a handful of steps: these check the plumbing (the real
launch.py, data pipeline, models and step), not sample quality.
"""
import importlib
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax import train
from gan_jax.errors import UserError
from tests.conftest import run_launch
from tests.test_multidevice import restore_final


def _digits_npz(path, n=64):
  rng = np.random.default_rng(0)
  np.savez(path, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
  return str(path)


TINY = ['--config.batch_size=8', '--config.num_steps=2',
        '--config.steps_per_call=1', '--config.log_every=1',
        '--config.eval_every=2', '--config.checkpoint.every=2',
        '--config.eval.grid_rows=3']


def test_mnist_dcgan_on_own_npz_writes_grid_and_updates_batchnorm(tmp_path):
  workdir = tmp_path / 'run'
  r = run_launch(['--config=configs/mnist_dcgan.py:data=images',
                  f'--config.data.path={_digits_npz(tmp_path / "d.npz")}',
                  # Same shapes and parameters as the tutorial's transposed
                  # convolutions; they compile far faster on CPU.
                  '--config.g.upsample=resize_conv', *TINY,
                  f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr[-3000:]
  grid = np.asarray(Image.open(workdir / 'samples' / 'step_0000002.png'))
  assert grid.shape == (3 * 30 + 2, 3 * 30 + 2, 3)  # 3x3 images of 28 + 2 pad.
  assert grid.std() > 0
  state, data_state, config = restore_final(workdir)
  assert config.model == 'dcgan_mnist' and int(state.step) == 2
  assert data_state['batch_index'] == 2
  # BatchNorm's running statistics moved away from their initial (0, 1).
  means = [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(
      state.g.model_state)[0] if 'mean' in str(p[-1])]
  assert len(means) == 3 and all(np.abs(m).max() > 0 for m in means)


@pytest.mark.parametrize('name', ['cifar10_sngan', 'cifar10_dcgan',
                                  'celeba64_dcgan', 'mnist_dcgan',
                                  'mnist_cgan'])
def test_tfds_configs_train_on_mocked_tfds(name, tmp_path):
  """Each TFDS config end to end, shrunk, with TFDS's reader mocked (in-process)."""
  config = importlib.import_module(f'configs.{name}').get_config()
  # Tiny widths where the model reads them; mnist_dcgan's resize-conv
  # upsampling: same shapes, fast on CPU.
  tiny = dict(channels=4, upsample='resize_conv')
  for net in (config.g, config.d):
    for field, value in tiny.items():
      if field in net:
        net[field] = value
  config.d_steps = min(config.d_steps, 2)
  config.batch_size = 4
  config.num_steps = 2
  config.steps_per_call = 2
  config.eval.grid_rows = 2
  config.checkpoint.use_async = False
  with tfds.testing.mock_data(num_examples=16):
    state = train.train_and_evaluate(config, str(tmp_path))
    initial = train._data_and_state(config)[1]  # pylint: disable=protected-access
  assert int(state.step) == 2
  grid = np.asarray(Image.open(tmp_path / 'samples' / 'step_0000002.png'))
  size = {'mnist_dcgan': 28, 'mnist_cgan': 28, 'celeba64_dcgan': 64}.get(
      name, 32)
  rows = 10 if name == 'mnist_cgan' else 2  # Conditional: a row per class.
  assert grid.shape == (rows * (size + 2) + 2, 2 * (size + 2) + 2, 3)
  if name == 'cifar10_sngan':
    # Spectral norm's power-iteration vectors are in the state, updated.
    def vectors(s):
      return [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(
          s.d.model_state)[0] if str(p[-1]).endswith("/u']")]
    us, us0 = vectors(state), vectors(initial)
    assert len(us) == len(us0) == 11 and all(np.isfinite(u).all() for u in us)
    assert all(not np.allclose(u, u0) for u, u0 in zip(us, us0))


def test_own_images_folder_of_pngs_trains(tmp_path):
  folder = tmp_path / 'pngs'
  folder.mkdir()
  rng = np.random.default_rng(2)
  for i in range(24):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
        folder / f'{i}.png')
  (folder / 'broken.png').write_bytes(b'not a png')
  workdir = tmp_path / 'run'
  r = run_launch(['--config=configs/own_images.py:size=32',
                  f'--config.data.path={folder}', '--config.g.channels=4',
                  '--config.d.channels=4', *TINY, f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Skipping 1 unreadable image file' in r.stderr
  grid = np.asarray(Image.open(workdir / 'samples' / 'step_0000002.png'))
  assert grid.shape == (3 * 34 + 2, 3 * 34 + 2, 3)


def test_batchnorm_is_cross_replica_two_devices_equal_one(tmp_path):
  """DCGAN has BatchNorm in G and D: the statistics are over the global batch."""
  npz = tmp_path / 'rgb.npz'
  rng = np.random.default_rng(1)
  np.savez(npz, images=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
  results = []
  for n in (1, 2):
    workdir = tmp_path / f'run{n}'
    r = run_launch(['--config=configs/own_images.py:size=32',
                    f'--config.data.path={npz}', '--config.g.channels=4',
                    '--config.d.channels=4', *TINY,
                    '--config.g.optimizer.eps=1.0',
                    '--config.d.optimizer.eps=1.0', f'--workdir={workdir}'],
                   devices=n)
    assert r.returncode == 0, r.stderr[-3000:]
    results.append(restore_final(workdir)[0])
  one, two = results
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-5)


def test_metrics_without_inception_weights_fail_at_start(tmp_path):
  from configs import own_images  # pylint: disable=g-import-not-at-top
  config = own_images.get_config('size=32')
  config.data.path = _digits_npz(tmp_path / 'd.npz')
  config.eval.metrics = 'fid_10k_train'
  with pytest.raises(UserError, match='inception_weights is empty'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  config.eval.metrics = 'fid_3k_train'
  with pytest.raises(UserError, match='unknown image metric'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')  # Nothing written.
