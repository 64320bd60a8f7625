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

Every convolution and dense layer of D is spectrally normalised
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
  dtype: compute dtype, 'float32' (default) or 'bfloat16'; parameters (and the
      spectral-norm power iteration) are float32 either way.
The examples must be 32x32 with any number of channels C.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.models import common
from gan_jax.models import conditional

SIZES = (32,)
INIT = nn.initializers.glorot_uniform()
# Glorot-uniform with gain sqrt(2): the variance doubles.
RESIDUAL_INIT = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')
BN_MOMENTUM, BN_EPSILON = 0.9, 2e-5


def _conv(features, kernel, dtype, init):
  return nn.Conv(features, (kernel, kernel), padding='SAME', dtype=dtype,
                 kernel_init=init)


def _sn_conv(x, features, kernel, train, dtype, init=RESIDUAL_INIT):
  """A spectrally normalised 'SAME' convolution; `u` updates only in training."""
  return nn.SpectralNorm(_conv(features, kernel, dtype, init))(
      x, update_stats=train)


class GBlock(nn.Module):
  """Residual up-block: doubles the resolution."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    def bn_relu(h):
      bn = common.batch_norm(train, self.dtype, BN_MOMENTUM, BN_EPSILON)
      return nn.relu(bn(h))

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

  @nn.compact
  def __call__(self, x, train: bool):
    h = x if self.optimized else nn.relu(x)
    h = _sn_conv(h, self.features, 3, train, self.dtype)
    h = _sn_conv(nn.relu(h), self.features, 3, train, self.dtype)
    if self.downsample:
      h = common.avg_pool2(h)
    if self.optimized:
      shortcut = _sn_conv(common.avg_pool2(x), self.features, 1, train,
                          self.dtype, INIT)
    elif self.downsample or x.shape[-1] != self.features:
      shortcut = _sn_conv(x, self.features, 1, train, self.dtype, INIT)
      if self.downsample:
        shortcut = common.avg_pool2(shortcut)
    else:
      shortcut = x
    return h + shortcut


class Generator(nn.Module):
  out_channels: int
  channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    ch = self.channels
    x = nn.Dense(4 * 4 * ch, dtype=self.dtype, kernel_init=INIT)(
        z.astype(self.dtype))
    x = x.reshape(z.shape[0], 4, 4, ch)
    for _ in range(3):
      x = GBlock(ch, self.dtype)(x, train)
    x = common.batch_norm(train, self.dtype, BN_MOMENTUM, BN_EPSILON)(x)
    x = _conv(self.out_channels, 3, self.dtype, INIT)(nn.relu(x))
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  channels: int = 128
  dtype: Any = jnp.float32
  num_classes: int = 0  # > 0: conditional, with `head` (models/conditional.py).
  head: str = ''

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    ch = self.channels
    x = x.astype(self.dtype)
    x = DBlock(ch, downsample=True, optimized=True, dtype=self.dtype)(x, train)
    x = DBlock(ch, downsample=True, dtype=self.dtype)(x, train)
    x = DBlock(ch, downsample=False, dtype=self.dtype)(x, train)
    x = DBlock(ch, downsample=False, dtype=self.dtype)(x, train)
    x = jnp.sum(nn.relu(x), axis=(1, 2))
    return conditional.output_layer(
        x, labels, self.num_classes, self.head,
        lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=INIT),
        lambda m, h: nn.SpectralNorm(m)(h, update_stats=train))


def build(config, example_shape):
  _, channels = common.square_image(example_shape, SIZES, 'sngan_resnet')
  dtype = common.compute_dtype(config)
  return (Generator(channels, config.g.get('channels', 256), dtype),
          Discriminator(config.d.get('channels', 128), dtype,
                        conditional.num_classes(config),
                        conditional.d_head(config)))
