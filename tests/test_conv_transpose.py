"""The transposed convolution by phases is Flax's/lax's, with the same parameters."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import cifar10_dcgan
from configs import mnist_dcgan
from gan_jax import models
from gan_jax.errors import UserError
from gan_jax.models import conv_transpose


@pytest.mark.parametrize('k', [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize('s', [1, 2, 3])
def test_phases_equal_lax_conv_transpose(k, s):
  x = jax.random.normal(jax.random.PRNGKey(k * 10 + s), (2, 5, 4, 3))
  w = jax.random.normal(jax.random.PRNGKey(7), (k, k, 3, 4))
  want = lax.conv_transpose(x, w, (s, s), 'SAME')
  got = conv_transpose.conv_transpose_phases(x, w, s)
  assert got.shape == want.shape == (2, 5 * s, 4 * s, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_phase_taps_of_dcgan_mnist_kernel():
  # 5x5 stride 2, 'SAME': even outputs 2p take taps 1, 3 at inputs p-1, p;
  # odd outputs 2p+1 take taps 0, 2, 4 at inputs p-1, p, p+1 (5: no tap).
  taps, lo = conv_transpose.phase_taps(5, 2)
  assert lo == -1
  np.testing.assert_array_equal(taps, [[1, 3, 5], [0, 2, 4]])


def test_gradients_equal():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 7, 6))
  w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 6, 4))

  def loss(f):
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

  want = jax.grad(loss(lambda x, w: lax.conv_transpose(x, w, (2, 2), 'SAME')),
                  (0, 1))(x, w)
  got = jax.grad(loss(lambda x, w: conv_transpose.conv_transpose_phases(
      x, w, 2)), (0, 1))(x, w)
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('use_bias', [False, True])
def test_module_matches_flax_conv_transpose(use_bias):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 8))
  flax_layer = nn.ConvTranspose(5, (5, 5), (2, 2), padding='SAME',
                                use_bias=use_bias,
                                bias_init=nn.initializers.normal(1.))
  variables = flax_layer.init(jax.random.PRNGKey(1), x)
  want = flax_layer.apply(variables, x)
  for impl in ('xla', 'phases'):
    layer = conv_transpose.ConvTranspose(5, (5, 5), (2, 2), use_bias=use_bias,
                                         impl=impl)
    mine = layer.init(jax.random.PRNGKey(1), x)
    assert (jax.tree.map(jnp.shape, mine)
            == jax.tree.map(jnp.shape, variables))
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-5,
                               atol=1e-5)


def _generator_outputs(config, shape, z_dim):
  out = {}
  for impl in ('xla', 'phases'):
    config.g.conv_transpose = impl
    g, _ = models.build(config, shape)
    z = jax.random.normal(jax.random.PRNGKey(0), (4, z_dim))
    variables = g.init(jax.random.PRNGKey(1), z, train=False)
    out[impl] = variables, g.apply(variables, z, train=False)
  return out


@pytest.mark.parametrize('norm', ['batch', 'spectral'])
def test_dcgan_generators_same_by_either_impl(norm):
  """The same parameter tree and samples: checkpoints do not depend on it."""
  mnist = mnist_dcgan.get_config('data=images')
  cifar = cifar10_dcgan.get_config()
  cifar.g.channels = 8
  cases = [(cifar, (32, 32, 3), cifar.z_dim)]
  if norm == 'batch':  # dcgan_mnist's G has no spectral norm.
    cases.append((mnist, (28, 28, 1), 100))
  for config, shape, z_dim in cases:
    config.g.norm = norm
    out = _generator_outputs(config, shape, z_dim)
    (v_xla, x_xla), (v_ph, x_ph) = out['xla'], out['phases']
    assert jax.tree.map(jnp.shape, v_xla) == jax.tree.map(jnp.shape, v_ph)
    for a, b in zip(jax.tree.leaves(v_xla), jax.tree.leaves(v_ph)):
      np.testing.assert_array_equal(a, b)  # Same init: same parameters.
    np.testing.assert_allclose(x_ph, x_xla, atol=1e-5)


@pytest.mark.parametrize('backend,want', [('cpu', 'phases'), ('gpu', 'xla'),
                                          ('tpu', 'xla')])
def test_auto_is_phases_on_cpu_only(monkeypatch, backend, want):
  config = mnist_dcgan.get_config('data=images')
  assert config.g.conv_transpose == 'auto'
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert conv_transpose.impl(config) == want


def test_named_impl_kept_and_unknown_name_refused():
  config = mnist_dcgan.get_config('data=images')
  for name in ('xla', 'phases'):  # On any backend.
    config.g.conv_transpose = name
    assert conv_transpose.impl(config) == name
  config.g.conv_transpose = 'fast'
  with pytest.raises(UserError, match="conv_transpose 'fast'.*auto, xla"):
    conv_transpose.impl(config)
