"""The CIFAR-10 ResNet of SNGAN (Miyato et al. 2018), for 32x32 images.

  G: z -> Dense 4*4*ch -> reshape                                       4x4
       -> 3 x up-block(ch)                                              32x32
       -> BN -> ReLU -> 3x3 conv to C -> tanh
     up-block: x + shortcut, where
       residual: BN -> ReLU -> nearest x2 -> 3x3 conv -> BN -> ReLU -> 3x3 conv
       shortcut: nearest x2 -> 1x1 conv
  D: x -> optimized block(ch)                                           16x16
       -> down-block(ch)                                                8x8
       -> 2 x block(ch) without downsampling
       -> ReLU -> sum over the 8x8 positions -> Dense 1 (logits)
     optimized block (the first, on the image, with no ReLU in front):
       residual: 3x3 conv -> ReLU -> 3x3 conv -> 2x2 average pool
       shortcut: 2x2 average pool -> 1x1 conv
     down-block: residual: ReLU -> 3x3 conv -> ReLU -> 3x3 conv -> avg pool
                 shortcut: 1x1 conv -> avg pool
     block:      residual: ReLU -> 3x3 conv -> ReLU -> 3x3 conv
                 shortcut: identity

By default every convolution and dense layer of D is spectrally normalised
(`flax.linen.SpectralNorm`, one power iteration per call). Its power-iteration
vector `u` and last estimate `sigma` live in the 'batch_stats' collection (that
Flax version's default), which the train state keeps and the step updates like
BatchNorm's statistics; they are updated only when `train=True`. Kernels are
Glorot-uniform, with gain sqrt(2) on the residual branches' convolutions, as in
the authors' code; G's BatchNorm has momentum 0.9 and epsilon 2e-5 (Chainer's
defaults, which the authors used).

Config fields read:
  z_dim: noise size (the paper's is 128).
  g.channels: G's width ch (default 256, the paper's).
  d.channels: D's width ch (default 128, the paper's).
  g.norm: 'batch' (the paper's BN layers, and the default; also 'default') or
      'none' (no normalisation in G: the BN steps above are left out).
  d.norm: 'spectral' (the paper's, and the default; also 'default') or 'none'
      (the same layers and parameters, not spectrally normalised, and no
      'batch_stats' collection).
  dtype: compute dtype, 'float32' (default) or 'bfloat16'; parameters (and the
      spectral-norm power iteration) are float32 either way.
The examples must be 32x32 with any number of channels C.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import conditional
from gan_jax.models import registry

SIZES = (32,)
G_NORMS = ('batch', 'none')
D_NORMS = ('spectral', 'none')
DEFAULT_G_NORM, DEFAULT_D_NORM = 'batch', 'spectral'  # The paper's.
INIT = nn.initializers.glorot_uniform()
# Glorot-uniform with gain sqrt(2): the variance doubles.
RESIDUAL_INIT = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')
BN_MOMENTUM, BN_EPSILON = 0.9, 2e-5


def _conv(features, kernel, dtype, init):
  return nn.Conv(features, (kernel, kernel), padding='SAME', dtype=dtype,
                 kernel_init=init)


def _sn_conv(x, features, kernel, train, dtype, init=RESIDUAL_INIT,
             spectral=True):
  """A spectrally normalised 'SAME' convolution; `u` updates only in training.

  With `spectral=False` the same convolution, not normalised.
  """
  conv = _conv(features, kernel, dtype, init)
  if not spectral:
    return conv(x)
  return nn.SpectralNorm(conv)(x, update_stats=train)


class GBlock(nn.Module):
  """Residual up-block: doubles the resolution."""
  features: int
  dtype: Any = jnp.float32
  norm: str = DEFAULT_G_NORM
  num_classes: int = 0  # > 0: conditional BatchNorm on `labels`.

  @nn.compact
  def __call__(self, x, train: bool, labels=None):
    def bn_relu(h):
      if self.norm == 'batch':
        h = conditional.batch_norm(train, self.dtype, BN_MOMENTUM, BN_EPSILON,
                                   self.num_classes, labels)(h)
      return nn.relu(h)

    h = common.upsample_nearest(bn_relu(x))
    h = _conv(self.features, 3, self.dtype, RESIDUAL_INIT)(h)
    h = _conv(self.features, 3, self.dtype, RESIDUAL_INIT)(bn_relu(h))
    shortcut = _conv(self.features, 1, self.dtype, INIT)(
        common.upsample_nearest(x))
    return h + shortcut


class DBlock(nn.Module):
  """Residual D block; `optimized` is the first block, applied to the image."""
  features: int
  downsample: bool
  optimized: bool = False
  dtype: Any = jnp.float32
  norm: str = DEFAULT_D_NORM

  @nn.compact
  def __call__(self, x, train: bool):
    def conv(h, kernel, init=RESIDUAL_INIT):
      return _sn_conv(h, self.features, kernel, train, self.dtype, init,
                      spectral=self.norm == 'spectral')

    h = x if self.optimized else nn.relu(x)
    h = conv(h, 3)
    h = conv(nn.relu(h), 3)
    if self.downsample:
      h = common.avg_pool2(h)
    if self.optimized:
      shortcut = conv(common.avg_pool2(x), 1, INIT)
    elif self.downsample or x.shape[-1] != self.features:
      shortcut = conv(x, 1, INIT)
      if self.downsample:
        shortcut = common.avg_pool2(shortcut)
    else:
      shortcut = x
    return h + shortcut


class Generator(nn.Module):
  out_channels: int
  channels: int = 256
  dtype: Any = jnp.float32
  norm: str = DEFAULT_G_NORM
  num_classes: int = 0  # > 0: conditional BatchNorm on `labels`.

  @nn.compact
  def __call__(self, z, train: bool = True, labels=None):
    ch = self.channels
    x = nn.Dense(4 * 4 * ch, dtype=self.dtype, kernel_init=INIT)(
        z.astype(self.dtype))
    x = x.reshape(z.shape[0], 4, 4, ch)
    for _ in range(3):
      x = GBlock(ch, self.dtype, self.norm, self.num_classes)(x, train, labels)
    if self.norm == 'batch':
      x = conditional.batch_norm(train, self.dtype, BN_MOMENTUM, BN_EPSILON,
                                 self.num_classes, labels)(x)
    x = _conv(self.out_channels, 3, self.dtype, INIT)(nn.relu(x))
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  channels: int = 128
  dtype: Any = jnp.float32
  num_classes: int = 0  # > 0: conditional, with `head` (models/conditional.py).
  head: str = ''
  norm: str = DEFAULT_D_NORM

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    def layer(module, h):
      if self.norm == 'spectral':
        return nn.SpectralNorm(module)(h, update_stats=train)
      return module(h)

    ch, norm = self.channels, self.norm
    x = x.astype(self.dtype)
    x = DBlock(ch, downsample=True, optimized=True, dtype=self.dtype,
               norm=norm)(x, train)
    x = DBlock(ch, downsample=True, dtype=self.dtype, norm=norm)(x, train)
    x = DBlock(ch, downsample=False, dtype=self.dtype, norm=norm)(x, train)
    x = DBlock(ch, downsample=False, dtype=self.dtype, norm=norm)(x, train)
    x = jnp.sum(nn.relu(x), axis=(1, 2))
    return conditional.output_layer(
        x, labels, self.num_classes, self.head,
        lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=INIT), layer)


def g_norm(config):
  """`config.g.norm` for this model ('default' or absent: 'batch')."""
  return common.norm_name(config, 'g', 'sngan_resnet', G_NORMS, DEFAULT_G_NORM)


def d_norm(config):
  """`config.d.norm` for this model ('default' or absent: 'spectral')."""
  return common.norm_name(config, 'd', 'sngan_resnet', D_NORMS, DEFAULT_D_NORM)


@registry.register('sngan_resnet', g_fields=('channels', 'norm'),
                   d_fields=('channels', 'norm'))
def build(config, example_shape):
  _, channels = common.square_image(example_shape, SIZES, 'sngan_resnet')
  dtype = common.compute_dtype(config)
  return (Generator(channels, config.g.get('channels', 256), dtype,
                    g_norm(config),
                    conditional.cbn_classes(config, 'sngan_resnet',
                                            g_norm(config))),
          Discriminator(config.d.get('channels', 128), dtype,
                        conditional.num_classes(config),
                        conditional.d_head(config), d_norm(config)))
