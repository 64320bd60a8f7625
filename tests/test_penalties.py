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
