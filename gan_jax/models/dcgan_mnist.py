"""The DCGAN of the TensorFlow DCGAN tutorial, for 28x28 images (MNIST).

The layers, sizes and Keras defaults of that tutorial (Glorot-uniform kernels,
zero biases, BatchNorm momentum 0.99 and epsilon 1e-3, LeakyReLU slope 0.3):

  G: z -> Dense 7*7*256 (no bias) -> BN -> LeakyReLU -> reshape [7, 7, 256]
       -> 5x5 up-conv 128, stride 1 -> BN -> LeakyReLU      7x7
       -> 5x5 up-conv 64, stride 2  -> BN -> LeakyReLU      14x14
       -> 5x5 up-conv C, stride 2 -> tanh                   28x28
     (up-convs without bias; 2,305,472 parameters and 25,472 BatchNorm
     statistics for z_dim=100, C=1)
  D: x -> 5x5 conv 64, stride 2 -> LeakyReLU -> Dropout 0.3     14x14
       -> 5x5 conv 128, stride 2 -> LeakyReLU -> Dropout 0.3    7x7
       -> flatten -> Dense 1 (logits)                (212,865 parameters, C=1)

Config fields read:
  z_dim: noise size (the tutorial's is 100).
  g.upsample: 'transpose' (default; the tutorial's transposed convolutions) or
      'resize_conv' (nearest-neighbour x2 upsampling, then a 5x5 stride-1
      convolution, Odena et al. 2016): the same shapes and parameter counts,
      a different function (no checkerboard artefacts by construction).
  g.conv_transpose: how 'transpose' is computed: 'auto' (default: by phases
      on CPU, XLA's elsewhere), 'xla' or 'phases'; the same function and
      parameters either way (gan_jax/models/conv_transpose.py).
  g.norm: G's normalisation where the diagram has BN: 'batch' (the
      tutorial's, and the default; also 'default'), 'layer' (LayerNorm per
      example over the dense output, and over H, W, C after the up-convs,
      Ba et al. 2016; epsilon 1e-3, Keras') or 'none'. Without BatchNorm the
      Dense layer and the two inner up-convs have biases (the last up-conv
      has none, as in the tutorial).
  d.norm: D's normalisation: 'none' (the tutorial's D has none, and the
      default; also 'default'), 'layer' (LayerNorm over H, W, C per example
      after the second convolution, before its LeakyReLU; not on the
      image's convolution, as in DCGAN) or 'spectral' (both convolutions and
      the Dense layer spectrally normalised, Miyato et al. 2018; the
      power-iteration vectors live in the 'batch_stats' collection and are
      updated in training only). The parameters are the same with 'none' and
      'spectral'.
  dtype: compute dtype, 'float32' (default) or 'bfloat16'; parameters are
      float32 either way.
The examples must be 28x28 with any number of channels C (MNIST: 1).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import conditional
from gan_jax.models import registry
from gan_jax.models import conv_transpose

UPSAMPLE = ('transpose', 'resize_conv')
G_NORMS = ('batch', 'layer', 'none')
D_NORMS = ('none', 'layer', 'spectral')
DEFAULT_G_NORM, DEFAULT_D_NORM = 'batch', 'none'  # The tutorial's.
# Keras' defaults, which the tutorial uses throughout.
KERNEL_INIT = nn.initializers.glorot_uniform()
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3
LEAKY_SLOPE = 0.3
DROPOUT = 0.3


def _up_conv(x, features, stride, upsample, dtype, use_bias=False,
             impl='xla'):
  """A 5x5 'SAME' convolution that upsamples by `stride` (1 or 2)."""
  if upsample == 'transpose':
    return conv_transpose.ConvTranspose(
        features, (5, 5), (stride, stride), use_bias=use_bias, dtype=dtype,
        kernel_init=KERNEL_INIT, impl=impl)(x)
  x = common.upsample_nearest(x, stride)
  return nn.Conv(features, (5, 5), padding='SAME', use_bias=use_bias,
                 dtype=dtype, kernel_init=KERNEL_INIT)(x)


class Generator(nn.Module):
  channels: int = 1
  upsample: str = 'transpose'
  dtype: Any = jnp.float32
  norm: str = DEFAULT_G_NORM
  conv_transpose: str = 'xla'  # How 'transpose' computes: 'xla' or 'phases'.
  num_classes: int = 0  # > 0: conditional BatchNorm on `labels`.

  @nn.compact
  def __call__(self, z, train: bool = True, labels=None):
    def up_conv(x, features, stride, use_bias=False):
      return _up_conv(x, features, stride, self.upsample, self.dtype, use_bias,
                      self.conv_transpose)

    def norm_act(x, reduction_axes):
      if self.norm == 'batch':
        x = conditional.batch_norm(train, self.dtype, BN_MOMENTUM, BN_EPSILON,
                                   self.num_classes, labels)(x)
      elif self.norm == 'layer':
        x = nn.LayerNorm(epsilon=BN_EPSILON, reduction_axes=reduction_axes,
                         dtype=self.dtype, param_dtype=jnp.float32)(x)
      return nn.leaky_relu(x, LEAKY_SLOPE)

    # No bias where BatchNorm follows: its shift makes one redundant.
    bias = self.norm != 'batch'
    x = nn.Dense(7 * 7 * 256, use_bias=bias, dtype=self.dtype,
                 kernel_init=KERNEL_INIT)(z.astype(self.dtype))
    # Normalised per unit of the dense output, as Keras' BatchNormalization
    # after a Dense layer does, before the reshape.
    x = norm_act(x, -1).reshape(z.shape[0], 7, 7, 256)
    for features, stride in ((128, 1), (64, 2)):
      x = norm_act(up_conv(x, features, stride, bias), (1, 2, 3))
    x = jnp.tanh(up_conv(x, self.channels, 2))
    return x.astype(jnp.float32)


class Discriminator(nn.Module):
  dtype: Any = jnp.float32
  num_classes: int = 0  # > 0: conditional, with `head` (models/conditional.py).
  head: str = ''
  norm: str = DEFAULT_D_NORM

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    def layer(module, h):
      if self.norm == 'spectral':
        return nn.SpectralNorm(module, dtype=self.dtype)(h, update_stats=train)
      return module(h)

    x = x.astype(self.dtype)
    for i, features in enumerate((64, 128)):
      x = layer(nn.Conv(features, (5, 5), (2, 2), padding='SAME',
                        dtype=self.dtype, kernel_init=KERNEL_INIT), x)
      if i and self.norm == 'layer':
        x = nn.LayerNorm(epsilon=BN_EPSILON, reduction_axes=(1, 2, 3),
                         dtype=self.dtype, param_dtype=jnp.float32)(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
      x = nn.Dropout(DROPOUT, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    return conditional.output_layer(
        x, labels, self.num_classes, self.head,
        lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=KERNEL_INIT),
        layer)


def g_norm(config):
  """`config.g.norm` for this model ('default' or absent: 'batch')."""
  return common.norm_name(config, 'g', 'dcgan_mnist', G_NORMS, DEFAULT_G_NORM)


def d_norm(config):
  """`config.d.norm` for this model ('default' or absent: 'none')."""
  return common.norm_name(config, 'd', 'dcgan_mnist', D_NORMS, DEFAULT_D_NORM)


@registry.register('dcgan_mnist', g_fields=('upsample', 'norm', 'conv_transpose'),
                   d_fields=('norm',))
def build(config, example_shape):
  _, channels = common.square_image(example_shape, (28,), 'dcgan_mnist')
  upsample = config.g.get('upsample', 'transpose')
  if upsample not in UPSAMPLE:
    raise UserError(f'unknown config.g.upsample {upsample!r}; use one of: '
                    + ', '.join(UPSAMPLE))
  dtype = common.compute_dtype(config)
  return (Generator(channels, upsample, dtype, g_norm(config),
                    conv_transpose.impl(config),
                    conditional.cbn_classes(config, 'dcgan_mnist',
                                            g_norm(config))),
          Discriminator(dtype, conditional.num_classes(config),
                        conditional.d_head(config), d_norm(config)))
