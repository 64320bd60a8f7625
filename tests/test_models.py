"""Model shapes, parameter counts and the checks on the data they accept."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models
from gan_jax.errors import UserError
from tests.conftest import for_model
from tests.conftest import tiny_config


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init(config, shape, batch=2):
  """Variables and outputs of both networks, as shapes (nothing is compiled)."""
  g, d = models.build(config, shape)
  key = jax.random.PRNGKey(0)
  z = jnp.zeros((batch, config.z_dim))
  g_vars = jax.eval_shape(lambda: g.init(key, z, train=False))
  x = jax.eval_shape(lambda v: g.apply(v, z, train=False), g_vars)
  d_vars = jax.eval_shape(lambda: d.init(key, jnp.zeros(x.shape), train=False))
  logits = jax.eval_shape(
      lambda v: d.apply(v, jnp.zeros(x.shape), train=False), d_vars)
  return g_vars, d_vars, x, logits


def _image_config(model, **fields):
  config = tiny_config()
  config.model = model
  config.z_dim = 100
  for key, value in fields.items():
    net, name = key.split('__')
    config[net][name] = value
  return for_model(config)


def test_dcgan_mnist_is_the_seeds_network():
  """The TensorFlow DCGAN tutorial's parameter counts (model.summary())."""
  g_vars, d_vars, x, logits = _init(_image_config('dcgan_mnist'), (28, 28, 1))
  assert x.shape == (2, 28, 28, 1) and logits.shape == (2,)
  assert _count(g_vars['params']) == 2_305_472
  # Keras counts BN's moving mean/variance as non-trainable parameters.
  assert _count(g_vars['batch_stats']) == 25_472
  assert _count(d_vars['params']) == 212_865


def test_dcgan_mnist_resize_conv_has_the_same_parameters():
  g, _, x, _ = _init(_image_config('dcgan_mnist', g__upsample='resize_conv'),
                     (28, 28, 1))
  assert x.shape == (2, 28, 28, 1) and _count(g['params']) == 2_305_472


@pytest.mark.parametrize('size,channels,start,n', [
    (32, 3, 4, 3), (64, 3, 4, 4), (32, 1, 4, 3), (28, 1, 7, 2)])
def test_dcgan_shapes(size, channels, start, n):
  config = _image_config('dcgan', g__channels=8, d__channels=8)
  g, d, x, logits = _init(config, (size, size, channels))
  assert x.shape == (2, size, size, channels) and logits.shape == (2,)
  assert x.dtype == jnp.float32 and logits.dtype == jnp.float32
  # G starts at start x start with ch * 2^(n-1) channels, n stride-2 layers.
  assert g['params']['Dense_0']['kernel'].shape == (
      100, start * start * 8 * 2 ** (n - 1))
  # D: n strided convolutions down to start x start, then the Dense layer.
  assert d['params'][f'Conv_{n - 1}']['kernel'].shape[-1] == 8 * 2 ** (n - 1)
  assert d['params']['Dense_0']['kernel'].shape == (
      start * start * 8 * 2 ** (n - 1), 1)


def test_sngan_resnet_shapes_and_spectral_norm_state():
  config = _image_config('sngan_resnet', g__channels=16, d__channels=16)
  config.z_dim = 128
  g, d, x, logits = _init(config, (32, 32, 3))
  assert x.shape == (2, 32, 32, 3) and logits.shape == (2,)
  # Every D layer is spectrally normalised: its power-iteration state lives
  # beside BatchNorm's statistics in the 'batch_stats' collection.
  sn = [k for k in jax.tree_util.tree_flatten_with_path(d['batch_stats'])[0]
        if 'u' in str(k[0][-1])]
  assert len(sn) == 8 + 2 + 1  # 8 residual convs, 2 shortcut convs, dense.


def test_sngan_spectral_norm_bounds_the_dense_layer():
  config = _image_config('sngan_resnet', g__channels=16, d__channels=16)
  config.z_dim = 128
  _, d = models.build(config, (32, 32, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  variables = d.init(jax.random.PRNGKey(0), x, train=False)
  # Many power iterations in training mode converge u to the top singular vector.
  step = jax.jit(lambda v: {**v, **d.apply(v, x, train=True,
                                            mutable=['batch_stats'])[1]})
  for _ in range(30):
    variables = step(variables)
  stats = jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]
  sigma = [v for k, v in stats if 'sigma' in str(k[-1])]
  kernel = variables['params']['Dense_0']['kernel']
  np.testing.assert_allclose(float(sigma[-1]),
                             float(np.linalg.svd(kernel, compute_uv=False)[0]),
                             rtol=1e-3)


def test_bfloat16_computes_in_bf16_with_float32_params_and_outputs():
  config = _image_config('dcgan', g__channels=8, d__channels=8)
  config.dtype = 'bfloat16'
  g, d, x, logits = _init(config, (32, 32, 3))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(g['params']))
  assert x.dtype == jnp.float32 and logits.dtype == jnp.float32
  g_mod, _ = models.build(config, (32, 32, 3))
  jaxpr = str(jax.make_jaxpr(lambda v, z: g_mod.apply(v, z, train=False))(
      g, jnp.zeros((2, 100))))
  # The convolutions take bf16 operands.
  convs = [l for l in jaxpr.splitlines() if 'conv_general_dilated' in l]
  assert convs and all('bf16' in l for l in convs)


@pytest.mark.parametrize('model,shape', [
    ('dcgan_mnist', (32, 32, 3)), ('dcgan', (48, 48, 1)),
    ('sngan_resnet', (64, 64, 3)), ('dcgan', (2,))])
def test_wrong_image_size_is_a_clear_error(model, shape):
  with pytest.raises(UserError, match='takes square images'):
    models.build(_image_config(model), shape)


def test_unknown_model_and_dtype():
  with pytest.raises(UserError, match='unknown model'):
    models.build(_image_config('resnet9000'), (32, 32, 3))
  config = _image_config('dcgan')
  config.dtype = 'float8'
  with pytest.raises(UserError, match='unknown dtype'):
    models.build(config, (32, 32, 3))


@pytest.mark.parametrize('init_std', [0.02, 0.])
def test_pacgan_kernels_follow_init_std(init_std):
  from configs import pacgan_grid  # pylint: disable=g-import-not-at-top
  config = pacgan_grid.get_config()
  config.g.init_std = config.d.init_std = init_std
  g, d = models.build(config, (2,))
  key = jax.random.PRNGKey(0)
  kernels = {}
  for name, net, x in (('g', g, jnp.zeros((4, 2))), ('d', d, jnp.zeros((4, 2)))):
    params = net.init(key, x)['params']
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
      if 'kernel' in jax.tree_util.keystr(path):
        kernels[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
  assert len(kernels) == 5 + 4  # G: 4 hidden + out; D: 3 maxout + out.
  for name, k in kernels.items():
    # LeCun normal: std 1/sqrt(fan_in), from 0.71 (2 inputs) to 0.05 (400).
    want = init_std or 1 / np.sqrt(k.shape[0])
    assert abs(k.std() - want) < 0.15 * want, (name, k.shape, k.std())
