"""dcgan_mnist keeps the Keras defaults that the TensorFlow DCGAN tutorial uses.

gan_jax/models/dcgan_mnist.py copies the tutorial's network, and with it Keras'
defaults: Glorot-uniform kernels, zero biases, BatchNorm momentum 0.99 and
epsilon 1e-3, LeakyReLU slope 0.3, Dropout 0.3. Each test pins one of them by
what the network does, not by reading a module constant: the forward passes
are compared with a reference written here with plain jax.lax / jnp from the
same parameters; BatchNorm's outputs and running averages are checked against
its inputs; the initial kernels against the Glorot limit.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import mnist_dcgan
from gan_jax import models
from gan_jax.axis import AXIS

SHAPE = (28, 28, 1)
Z_DIM, BATCH = 100, 8
# Keras' defaults, as the tutorial has them.
SLOPE = 0.3
MOMENTUM, EPSILON = 0.99, 1e-3
DROPOUT = 0.3
HIGHEST = lax.Precision.HIGHEST
TOL = dict(rtol=1e-4, atol=5e-5)
# How far the references with another slope, epsilon or rate are at least.
FAR = 1e-2
G_KERNELS = ('Dense_0', 'ConvTranspose_0', 'ConvTranspose_1',
             'ConvTranspose_2')
G_NORMS = ('BatchNorm_0', 'BatchNorm_1', 'BatchNorm_2')
D_LAYERS = ('Conv_0', 'Conv_1', 'Dense_0')


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


@pytest.fixture(scope='module')
def nets():
  """G and D of configs/mnist_dcgan.py, their initial variables and inputs."""
  g, d = models.build(mnist_dcgan.get_config(), SHAPE)
  kz, kx, kg, kd = jax.random.split(jax.random.PRNGKey(0), 4)
  z = jax.random.normal(kz, (BATCH, Z_DIM))
  x = jax.random.uniform(kx, (BATCH, *SHAPE), minval=-1.0, maxval=1.0)
  g_vars = g.init(kg, z, train=False)
  d_vars = d.init(kd, x, train=False)
  return g, d, g_vars, d_vars, z, x


def _perturbed(variables, key, names, scale=0.5):
  """`variables` with every parameter of the layers `names` other than the
  kernels (biases, BatchNorm's scale and shift) random, so that the reference
  comparisons see them."""
  params = jax.tree.map(lambda x: x, variables['params'])  # A copy.
  for i, name in enumerate(names):
    for leaf in params[name]:
      if leaf != 'kernel':
        old = params[name][leaf]
        noise = scale * jax.random.normal(jax.random.fold_in(key, i),
                                          old.shape)
        params[name][leaf] = old + noise
  return {**variables, 'params': params}


# The reference networks, from the layers' definitions.


def _leaky(x, slope=SLOPE):
  return jnp.where(x >= 0, x, slope * x)


def _conv(x, kernel, bias):
  """A 5x5 stride-2 'SAME' convolution (TensorFlow's padding: 1 before and 2
  after for 28 -> 14 and 14 -> 7)."""
  y = lax.conv_general_dilated(
      x, kernel, (2, 2), ((1, 2), (1, 2)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=HIGHEST)
  return y + bias


def _up_conv(x, kernel, stride):
  """A 5x5 'SAME' transposed convolution by `stride`, as Flax computes it: the
  input dilated with stride - 1 zeros, padded, and convolved (not flipped)."""
  padding = {1: (2, 2), 2: (3, 2)}[stride]
  return lax.conv_general_dilated(
      x, kernel, (1, 1), (padding, padding), lhs_dilation=(stride, stride),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=HIGHEST)


def _ref_generator(params, z, stats=None, slope=SLOPE, eps=EPSILON):
  """G's output: BatchNorm with the batch's statistics (training), or with the
  running averages `stats` (evaluation)."""
  def bn_act(h, name):
    axes = tuple(range(h.ndim - 1))
    if stats is None:
      mean, var = h.mean(axes), h.var(axes)
    else:
      mean, var = stats[name]['mean'], stats[name]['var']
    p = params[name]
    return _leaky((h - mean) / jnp.sqrt(var + eps) * p['scale'] + p['bias'],
                  slope)

  h = jnp.dot(z, params['Dense_0']['kernel'], precision=HIGHEST)
  h = bn_act(h, 'BatchNorm_0').reshape(z.shape[0], 7, 7, 256)
  h = bn_act(_up_conv(h, params['ConvTranspose_0']['kernel'], 1),
             'BatchNorm_1')
  h = bn_act(_up_conv(h, params['ConvTranspose_1']['kernel'], 2),
             'BatchNorm_2')
  return jnp.tanh(_up_conv(h, params['ConvTranspose_2']['kernel'], 2))


def _ref_discriminator(params, x, masks=None, slope=SLOPE, rate=DROPOUT):
  """D's logits; `masks` (the kept units of each Dropout): training."""
  h = x
  for i in range(2):
    p = params[f'Conv_{i}']
    h = _leaky(_conv(h, p['kernel'], p['bias']), slope)
    if masks is not None:
      h = jnp.where(masks[i], h / (1 - rate), 0.0)
  h = h.reshape(x.shape[0], -1)
  p = params['Dense_0']
  return (jnp.dot(h, p['kernel'], precision=HIGHEST) + p['bias'])[:, 0]


def _g_train(g, variables, z, capture=False):
  """A training-mode call of G inside the named axis BatchNorm averages over,
  as in the step's pmap: (output, updated variables)."""
  def apply(v, z):
    return g.apply(v, z, train=True,
                   mutable=['batch_stats'] + (['intermediates'] if capture
                                              else []),
                   capture_intermediates=capture)
  add = lambda t: jax.tree.map(lambda a: a[None], t)
  out, state = jax.vmap(apply, axis_name=AXIS)(add(variables), add(z))
  return out[0], jax.tree.map(lambda a: a[0], state)


def _bn_inputs_outputs(intermediates):
  """{BatchNorm name: (its input, its output)} from G's intermediates."""
  inputs = dict(zip(G_NORMS, ('Dense_0', 'ConvTranspose_0',
                              'ConvTranspose_1')))
  return {bn: (intermediates[inp]['__call__'][0],
               intermediates[bn]['__call__'][0])
          for bn, inp in inputs.items()}


# The tests.


def test_parameter_counts(nets):
  """The tutorial's model.summary(): 2,305,472 parameters in G (z_dim 100,
  one channel) plus 25,472 BatchNorm statistics, 212,865 in D."""
  _, _, g_vars, d_vars, _, _ = nets
  assert set(g_vars) == {'params', 'batch_stats'}
  assert set(d_vars) == {'params'}
  assert _count(g_vars['params']) == 2_305_472
  assert _count(g_vars['batch_stats']) == 25_472
  assert _count(d_vars['params']) == 212_865


def test_which_layers_have_biases(nets):
  """G's Dense and up-convs have no bias (BatchNorm's shift, or none for the
  last up-conv, as in the tutorial); D's convolutions and Dense have one."""
  _, _, g_vars, d_vars, _, _ = nets
  assert _shapes(g_vars['params']) == {
      'Dense_0': {'kernel': (Z_DIM, 7 * 7 * 256)},
      'BatchNorm_0': {'scale': (7 * 7 * 256,), 'bias': (7 * 7 * 256,)},
      'ConvTranspose_0': {'kernel': (5, 5, 256, 128)},
      'BatchNorm_1': {'scale': (128,), 'bias': (128,)},
      'ConvTranspose_1': {'kernel': (5, 5, 128, 64)},
      'BatchNorm_2': {'scale': (64,), 'bias': (64,)},
      'ConvTranspose_2': {'kernel': (5, 5, 64, 1)},
  }
  assert _shapes(g_vars['batch_stats']) == {
      name: {'mean': s['scale'], 'var': s['scale']}
      for name, s in _shapes(g_vars['params']).items() if 'BatchNorm' in name}
  assert _shapes(d_vars['params']) == {
      'Conv_0': {'kernel': (5, 5, 1, 64), 'bias': (64,)},
      'Conv_1': {'kernel': (5, 5, 64, 128), 'bias': (128,)},
      'Dense_0': {'kernel': (7 * 7 * 128, 1), 'bias': (1,)},
  }


def test_initial_biases_and_batch_norm(nets):
  """Keras' zeros for biases and beta, ones for gamma, moving mean 0 and
  moving variance 1."""
  _, _, g_vars, d_vars, _, _ = nets
  for name in D_LAYERS:
    np.testing.assert_array_equal(d_vars['params'][name]['bias'], 0.0)
  for name in G_NORMS:
    np.testing.assert_array_equal(g_vars['params'][name]['scale'], 1.0)
    np.testing.assert_array_equal(g_vars['params'][name]['bias'], 0.0)
    np.testing.assert_array_equal(g_vars['batch_stats'][name]['mean'], 0.0)
    np.testing.assert_array_equal(g_vars['batch_stats'][name]['var'], 1.0)


@pytest.mark.parametrize('net,name', [('g', n) for n in G_KERNELS]
                         + [('d', n) for n in D_LAYERS])
def test_kernels_are_glorot_uniform(nets, net, name):
  """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)), the
  fans counted as Keras does (receptive field x input / output channels).
  lecun_normal (Flax's default) and glorot_normal overshoot the limit or
  miss the spread."""
  _, _, g_vars, d_vars, _, _ = nets
  kernel = np.asarray((g_vars if net == 'g' else d_vars)['params'][name]
                      ['kernel'], np.float64)
  receptive = int(np.prod(kernel.shape[:-2]))
  fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
  limit = np.sqrt(6.0 / (fan_in + fan_out))
  a = np.abs(kernel.ravel()) / limit
  assert a.size >= 1600
  assert a.max() <= 1.0 + 1e-6, (name, a.max())
  assert a.max() > 0.9, (name, a.max())
  # |w| / limit is uniform on [0, 1]: its mean 1/2, its root mean square
  # 1/sqrt(3), its quantiles on the diagonal (Kolmogorov-Smirnov distance).
  assert abs(a.mean() - 0.5) < 0.03, (name, a.mean())
  assert abs(np.sqrt(np.mean(a ** 2)) - 3 ** -0.5) < 0.03, name
  quantiles = (np.arange(a.size) + 0.5) / a.size
  assert np.max(np.abs(np.sort(a) - quantiles)) < 0.05, name
  assert abs(kernel.mean()) < 0.05 * limit, name


def test_generator_matches_the_reference_in_evaluation(nets):
  """Evaluation: BatchNorm with running averages (var + 1e-3), LeakyReLU 0.3."""
  g, _, g_vars, _, z, _ = nets
  key = jax.random.PRNGKey(1)
  variables = _perturbed(g_vars, key, G_NORMS)
  stats = {name: {'mean': 0.1 * jax.random.normal(jax.random.fold_in(key, i),
                                                  s['mean'].shape),
                  'var': jax.random.uniform(jax.random.fold_in(key, 10 + i),
                                            s['var'].shape, minval=0.01,
                                            maxval=0.05)}
           for i, (name, s) in enumerate(g_vars['batch_stats'].items())}
  variables['batch_stats'] = stats
  out = g.apply(variables, z, train=False)
  assert out.shape == (BATCH, *SHAPE)
  ref = _ref_generator(variables['params'], z, stats)
  np.testing.assert_allclose(out, ref, **TOL)
  # The comparison sees the slope and the epsilon.
  for other in (_ref_generator(variables['params'], z, stats, slope=0.2),
                _ref_generator(variables['params'], z, stats, eps=1e-5)):
    assert np.max(np.abs(other - ref)) > FAR


def test_generator_matches_the_reference_in_training(nets):
  """Training: BatchNorm with the batch's statistics (var + 1e-3), LeakyReLU
  0.3."""
  g, _, g_vars, _, z, _ = nets
  variables = _perturbed(g_vars, jax.random.PRNGKey(2), G_NORMS)
  out, _ = _g_train(g, variables, z)
  ref = _ref_generator(variables['params'], z)
  np.testing.assert_allclose(out, ref, **TOL)
  for other in (_ref_generator(variables['params'], z, slope=0.2),
                _ref_generator(variables['params'], z, eps=1e-5)):
    assert np.max(np.abs(other - ref)) > FAR


def test_batch_norm_epsilon_in_evaluation(nets):
  """With running mean 0 and variance 0 every BatchNorm of G multiplies its
  input by exactly 1 / sqrt(epsilon)."""
  g, _, g_vars, _, z, _ = nets
  variables = {**g_vars, 'batch_stats': jax.tree.map(
      jnp.zeros_like, g_vars['batch_stats'])}
  _, state = g.apply(variables, z, train=False, capture_intermediates=True,
                     mutable=['intermediates'])
  for name, (inp, out) in _bn_inputs_outputs(state['intermediates']).items():
    assert np.max(np.abs(inp)) > 1e-3, name
    np.testing.assert_allclose(out, inp / np.sqrt(EPSILON), rtol=1e-5,
                               atol=1e-6, err_msg=name)


def test_batch_norm_epsilon_and_momentum_in_training(nets):
  """Training: each BatchNorm of G normalises by sqrt(batch var + 1e-3),
  which for a tiny-variance input (z scaled by 1e-2) keeps the output small,
  and moves its running averages to 0.99 * old + 0.01 * the batch's (biased)
  mean and variance."""
  g, _, g_vars, _, z, _ = nets
  key = jax.random.PRNGKey(3)
  old = {name: {'mean': jax.random.normal(jax.random.fold_in(key, i),
                                          s['mean'].shape),
                'var': jax.random.uniform(jax.random.fold_in(key, 10 + i),
                                          s['var'].shape, minval=0.5,
                                          maxval=2.0)}
         for i, (name, s) in enumerate(g_vars['batch_stats'].items())}
  variables = {**g_vars, 'batch_stats': old}
  for scale in (1.0, 1e-2):
    _, state = _g_train(g, variables, scale * z, capture=True)
    pairs = _bn_inputs_outputs(state['intermediates'])
    for name, (inp, out) in pairs.items():
      axes = tuple(range(inp.ndim - 1))
      mean = np.mean(np.asarray(inp, np.float64), axes)
      var = np.var(np.asarray(inp, np.float64), axes)
      expected = (inp - mean) / np.sqrt(var + EPSILON)
      np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-5,
                                 err_msg=f'{name} at scale {scale}')
      new = state['batch_stats'][name]
      np.testing.assert_allclose(
          new['mean'], MOMENTUM * old[name]['mean'] + (1 - MOMENTUM) * mean,
          rtol=1e-5, atol=1e-6, err_msg=name)
      np.testing.assert_allclose(
          new['var'], MOMENTUM * old[name]['var'] + (1 - MOMENTUM) * var,
          rtol=1e-5, atol=1e-6, err_msg=name)
    if scale < 1:
      # The dense output's variance is ~1e-6, far under epsilon: normalised,
      # its spread is sqrt(var / (var + 1e-3)) ~ 0.04, not ~1.
      inp, out = pairs['BatchNorm_0']
      var = np.var(inp, 0)
      assert np.max(var) < 1e-4
      np.testing.assert_allclose(np.std(out, 0),
                                 np.sqrt(var / (var + EPSILON)), rtol=1e-3,
                                 atol=1e-5)
      assert np.mean(np.std(out, 0)) < 0.2


def test_discriminator_matches_the_reference_in_evaluation(nets):
  """Evaluation (no dropout): convolutions and Dense with biases, LeakyReLU
  0.3."""
  _, d, _, d_vars, _, x = nets
  variables = _perturbed(d_vars, jax.random.PRNGKey(4), D_LAYERS, scale=0.1)
  logits = d.apply(variables, x, train=False)
  assert logits.shape == (BATCH,)
  ref = _ref_discriminator(variables['params'], x)
  np.testing.assert_allclose(logits, ref, **TOL)
  other = _ref_discriminator(variables['params'], x, slope=0.2)
  assert np.max(np.abs(other - ref)) > FAR


def test_discriminator_dropout_in_training(nets):
  """Training: Dropout 0.3 after each LeakyReLU, zeroing ~30% of the units and
  scaling the others by 1 / 0.7; the logits are the reference's with the same
  masks."""
  _, d, _, d_vars, _, x = nets
  variables = _perturbed(d_vars, jax.random.PRNGKey(5), D_LAYERS, scale=0.1)
  logits, state = d.apply(
      variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(6)},
      mutable=['intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, nn.Dropout))
  dropped = [state['intermediates'][f'Dropout_{i}']['__call__'][0]
             for i in range(2)]
  masks = [h != 0 for h in dropped]
  for i, mask in enumerate(masks):
    zeroed = 1.0 - float(np.mean(mask))
    assert abs(zeroed - DROPOUT) < 0.02, (i, zeroed)
  # The units Dropout_0 keeps are the LeakyReLU's over 0.7.
  p = variables['params']['Conv_0']
  pre = _leaky(_conv(x, p['kernel'], p['bias']))
  np.testing.assert_allclose(dropped[0], jnp.where(masks[0],
                                                   pre / (1 - DROPOUT), 0.0),
                             **TOL)
  ref = _ref_discriminator(variables['params'], x, masks)
  np.testing.assert_allclose(logits, ref, **TOL)
  other = _ref_discriminator(variables['params'], x, masks, rate=0.5)
  assert np.max(np.abs(other - ref)) > FAR
