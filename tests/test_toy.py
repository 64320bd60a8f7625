"""The embedded Gaussian mixtures and the mode-coverage metrics."""
import math

import numpy as np

from configs import default
from gan_jax.data import toy
from gan_jax.metrics.toy import mode_metrics


def test_ring8_and_grid25_modes():
  modes, std = toy.mixture(default.get_config('data=ring8'))
  assert modes.shape == (8, 2) and std == 0.02
  np.testing.assert_allclose(np.linalg.norm(modes, axis=1), 2.0, rtol=1e-6)
  np.testing.assert_allclose(modes[2], [0.0, 2.0], atol=1e-6)
  modes, std = toy.mixture(default.get_config('data=grid25'))
  assert modes.shape == (25, 2) and std == 0.05
  assert sorted(set(modes[:, 0].round(6))) == [-4, -2, 0, 2, 4]


def test_mixture_is_configurable():
  config = default.get_config()
  config.data.num_modes, config.data.radius, config.data.std = 5, 3.0, 0.1
  modes, std = toy.mixture(config)
  assert modes.shape == (5, 2) and std == 0.1
  np.testing.assert_allclose(np.linalg.norm(modes, axis=1), 3.0, rtol=1e-6)


def test_iterator_is_reproducible_and_host_sharded():
  config = default.get_config()
  whole = toy.build(config, 8, 0, 1)
  halves = [toy.build(config, 4, i, 2) for i in range(2)]
  for _ in range(3):
    batch = next(whole)
    np.testing.assert_array_equal(batch, np.concatenate([next(h) for h in halves]))
  state = whole.get_state()
  after = next(whole)
  fresh = toy.build(config, 8, 0, 1)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh), after)


def test_metrics_of_perfect_samples():
  modes, std = toy.mixture(default.get_config())
  samples = toy.sample(modes, std, 8000, np.random.default_rng(0))
  m = mode_metrics(samples, modes, std)
  assert m['modes'] == 8
  assert m['hq'] > 0.98  # 3-sigma disc in 2D holds 1 - exp(-4.5) = 98.9%.
  assert m['kl'] < 0.01


def test_metrics_of_a_collapsed_generator():
  modes, std = toy.mixture(default.get_config())
  samples = np.tile(modes[3], (100, 1))
  samples[:10] += 1.0  # Ten samples far from every mode.
  m = mode_metrics(samples, modes, std)
  assert m == {'modes': 1, 'hq': 0.9, 'kl': math.log(8)}


def test_metrics_hand_example():
  modes = np.array([[0.0, 0.0], [10.0, 0.0]])
  samples = np.array([[0.1, 0.0], [0.0, 0.2], [10.0, 0.1], [5.0, 0.0]])
  m = mode_metrics(samples, modes, std=0.1)  # HQ radius 0.3.
  p = np.array([2 / 3, 1 / 3])
  assert m['modes'] == 2 and m['hq'] == 0.75
  np.testing.assert_allclose(m['kl'], np.sum(p * np.log(p * 2)))
