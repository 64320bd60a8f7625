"""Gradient penalty against closed-form values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import penalties
from gan_jax import rng
from gan_jax.errors import UserError


def test_gradient_penalty_of_a_linear_critic():
  # D(x) = w.x has gradient w everywhere, so the penalty is (|w| - 1)^2.
  w = jnp.array([3.0, 4.0])
  d_fn = lambda x: x @ w
  real = jnp.ones((4, 2))
  fake = jnp.zeros((4, 2))
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 4)
  pen = penalties.get('gradient_penalty')(d_fn, real, fake, keys)
  np.testing.assert_allclose(float(pen), (5.0 - 1.0) ** 2, rtol=1e-5)


def test_gradient_penalty_uses_interpolates():
  # D(x) = |x|^2 / 2 has gradient x; on interpolates eps*real with fake=0 the
  # norm is eps*|real|, so the penalty depends on the drawn eps.
  d_fn = lambda x: 0.5 * jnp.sum(x ** 2, axis=-1)
  real = jnp.full((64, 3), 2.0)
  fake = jnp.zeros((64, 3))
  keys = rng.example_keys(jax.random.PRNGKey(1), 0, 64)
  eps = rng.uniform(keys, (1,))
  want = np.mean((np.asarray(eps[:, 0]) * np.sqrt(12.0) - 1.0) ** 2)
  pen = penalties.get('gradient_penalty')(d_fn, real, fake, keys)
  np.testing.assert_allclose(float(pen), want, rtol=1e-5)


def test_gradient_of_the_penalty_is_finite_at_zero_gradient():
  # A constant critic has zero input gradient; sqrt(0) would give NaN grads.
  def pen_of(scale):
    d_fn = lambda x: scale * 0.0 * jnp.sum(x, axis=-1)
    keys = rng.example_keys(jax.random.PRNGKey(0), 0, 2)
    return penalties.gradient_penalty(d_fn, jnp.ones((2, 2)), jnp.zeros((2, 2)), keys)
  assert np.isfinite(float(jax.grad(pen_of)(1.0)))


def test_unknown_penalty():
  with pytest.raises(UserError, match='gradient_penalty'):
    penalties.get('nope')


def quadratic_critic(x):
  # D(x) = |x|^2 / 2 has input gradient x.
  return 0.5 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)


def test_r1_and_r2_of_a_quadratic_critic():
  # grad D(x) = x, so R1 = mean(|real|^2) / 2 and R2 = mean(|fake|^2) / 2.
  real = jnp.array([[1.0, 2.0], [3.0, 0.0]])  # |x|^2: 5, 9 -> R1 = 3.5
  fake = jnp.array([[0.0, 1.0], [2.0, 2.0]])  # |x|^2: 1, 8 -> R2 = 2.25
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 2)
  np.testing.assert_allclose(
      float(penalties.get('r1')(quadratic_critic, real, fake, keys)), 3.5,
      rtol=1e-6)
  np.testing.assert_allclose(
      float(penalties.get('r2')(quadratic_critic, real, fake, keys)), 2.25,
      rtol=1e-6)


def test_r1_of_a_linear_critic_is_half_the_squared_weight_norm():
  w = jnp.array([3.0, 4.0])
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 4)
  pen = penalties.r1(lambda x: x @ w, jnp.ones((4, 2)), jnp.zeros((4, 2)), keys)
  np.testing.assert_allclose(float(pen), 12.5, rtol=1e-6)


def test_dragan_of_a_linear_critic():
  # The gradient is w wherever the perturbed point is: (|w| - 1)^2.
  w = jnp.array([3.0, 4.0])
  real = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 8)
  pen = jax.jit(lambda r, k: penalties.dragan(lambda x: x @ w, r, r, k))(
      real, keys)
  np.testing.assert_allclose(float(pen), 16.0, rtol=1e-5)


def test_dragan_perturbs_reals_by_half_their_std():
  # With the quadratic critic the gradient norm is |x_hat|, x_hat = x +
  # alpha * 0.5 * std(x) * u; recompute alpha and u from the same keys.
  real = jnp.array([[1.0, -1.0, 2.0], [0.0, 3.0, -2.0], [1.5, 0.5, 0.0],
                    [-1.0, -1.0, 1.0]])
  keys = rng.example_keys(jax.random.PRNGKey(7), 0, 4)
  split = jax.jit(jax.vmap(jax.random.split))(keys)
  alpha = np.asarray(rng.uniform(split[:, 0], (1,)))
  u = np.asarray(rng.uniform(split[:, 1], (3,)))
  x = np.asarray(real, np.float64)
  x_hat = x + alpha * 0.5 * x.std() * u
  want = np.mean((np.linalg.norm(x_hat, axis=-1) - 1.) ** 2)
  pen = jax.jit(lambda r, k: penalties.dragan(quadratic_critic, r, r, k))(
      real, keys)
  np.testing.assert_allclose(float(pen), want, rtol=1e-5)


def test_batch_std_over_devices_equals_the_whole_batch():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 2)) * 3 + 1
  whole = penalties.batch_std(x)
  # vmap with a named axis stands in for pmap over 4 devices.
  per_device = jax.vmap(lambda s: penalties.batch_std(s, 'i'), axis_name='i')(x)
  np.testing.assert_allclose(np.asarray(per_device), float(whole), rtol=1e-5)
  np.testing.assert_allclose(float(whole), np.asarray(x).std(), rtol=1e-5)


@pytest.mark.parametrize('name', ['r1', 'r2', 'dragan'])
def test_new_penalties_have_finite_gradients_at_zero_input_gradient(name):
  def pen_of(scale):
    d_fn = lambda x: scale * 0.0 * jnp.sum(x, axis=-1)
    keys = rng.example_keys(jax.random.PRNGKey(0), 0, 2)
    return penalties.get(name)(d_fn, jnp.ones((2, 2)), jnp.zeros((2, 2)), keys)
  assert np.isfinite(float(jax.grad(pen_of)(1.0)))


def test_lazy_penalty_applies_every_k_updates_scaled_by_k():
  thunk = lambda: jnp.float32(2.0)
  for d_updates, want_term, want_pen in ((0, 3 * 10. * 2., 2.), (1, 0., 0.),
                                         (2, 0., 0.), (3, 60., 2.)):
    term, pen = jax.jit(lambda n: penalties.lazy(thunk, n, 3, 10.))(d_updates)
    assert float(term) == want_term and float(pen) == want_pen
  term, pen = penalties.lazy(thunk, jnp.int32(5), 1, 10.)
  assert float(term) == 20. and float(pen) == 2.


def test_every_registered_penalty_takes_input_gradients():
  assert penalties.INPUT_GRADIENT == set(penalties.PENALTIES)
  assert {'gradient_penalty', 'r1', 'r2', 'dragan'} <= set(penalties.PENALTIES)
