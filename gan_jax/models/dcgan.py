"""DCGAN (Radford et al. 2015) for 28x28, 32x32 and 64x64 images.

With n stride-2 layers (2 at 28x28, 3 at 32x32, 4 at 64x64), a start size
s = size / 2^n (7 at 28x28, else 4) and base width ch:

  G: z -> Dense s*s*(ch * 2^(n-1)) (no bias) -> reshape -> BN -> ReLU     sxs
       -> (n - 1) x [4x4 transposed conv, stride 2, halving the channels
          (no bias) -> BN -> ReLU]                          down to ch channels
       -> 4x4 transposed conv, stride 2, to C channels -> tanh        size
  D: x -> 4x4 conv ch, stride 2 -> LeakyReLU 0.2
       -> (n - 1) x [4x4 conv, stride 2, doubling the channels (no bias)
          -> BN -> LeakyReLU 0.2]                                      sxs
       -> flatten -> Dense 1 (logits)

At 64x64 this is the paper's network (G starts at 4x4x(8 ch), D ends at
4x4x(8 ch)); at 32x32 one stride-2 layer fewer, so G starts at 4x4x(4 ch) and
mirrors D, and both keep ch channels next to the image; at 28x28 (MNIST's
size, unpadded) G starts at 7x7x(2 ch). The paper's final
4x4 'valid' convolution of D is the Dense layer here (the same map). Kernels
are drawn from N(0, 0.02) as in the paper; BatchNorm normalises per channel,
with momentum 0.9 and epsilon 1e-5 (PyTorch's defaults, which the reference
implementations use).

Config fields read:
  z_dim: noise size (the paper's is 100).
  g.channels, d.channels: the base width ch of G and D (default 64, the paper's).
  g.norm: G's normalisation after its Dense layer and inner transposed
      convolutions (where the diagram has BN): 'batch' (the paper's, and the
      default; also 'default'), 'layer' (LayerNorm over H, W, C per example,
      Ba et al. 2016), 'group' (GroupNorm, Wu & He 2018, with 32 groups, or
      gcd(32, channels) where the channels are not a multiple of 32),
      'spectral' (the Dense layer and every transposed convolution, the last
      too, spectrally normalised, Miyato et al. 2018, no BatchNorm; as in D
      its power-iteration vectors live in the 'batch_stats' collection and
      are updated in training only) or 'none'. Without BatchNorm those layers
      have biases.
  d.norm: D's normalisation after its inner convolutions: 'batch' (the
      paper's, and the default; also 'default'), 'layer' (LayerNorm over
      H, W, C per example, Ba et al. 2016, as the WGAN-GP critic of Gulrajani
      et al. 2017, which a gradient penalty needs), 'spectral' (every
      convolution and the Dense layer spectrally normalised, Miyato et al.
      2018, no BatchNorm) or 'none'. Without BatchNorm the convolutions have
      biases.
  g.conv_transpose: how the transposed convolutions compute: 'auto'
      (default: by phases on CPU, XLA's elsewhere), 'xla' or 'phases'; the
      same function and parameters (gan_jax/models/conv_transpose.py).
  dtype: compute dtype, 'float32' (default) or 'bfloat16'; parameters are
      float32 either way.
The examples must be 28x28, 32x32 or 64x64 with any number of channels C.
"""
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import conditional
from gan_jax.models import registry
from gan_jax.models import conv_transpose

SIZES = (28, 32, 64)
G_NORMS = ('batch', 'layer', 'group', 'spectral', 'none')
D_NORMS = ('batch', 'layer', 'spectral', 'none')
DEFAULT_G_NORM = DEFAULT_D_NORM = 'batch'  # The paper's.
GROUPS = 32  # GroupNorm's groups (Wu & He 2018's default), at most.
KERNEL_INIT = nn.initializers.normal(0.02)
LEAKY_SLOPE = 0.2


def num_strided(size: int) -> int:
  """Stride-2 layers between the start size (7 or 4) and `size`."""
  return 2 if size == 28 else int(math.log2(size // 4))


class Generator(nn.Module):
  size: int
  out_channels: int
  channels: int = 64
  dtype: Any = jnp.float32
  norm: str = DEFAULT_G_NORM
  conv_transpose: str = 'xla'  # How they compute: 'xla' or 'phases'.
  num_classes: int = 0  # > 0: conditional BatchNorm on `labels`.

  @nn.compact
  def __call__(self, z, train: bool = True, labels=None):
    def up_conv(features, use_bias):
      return conv_transpose.ConvTranspose(
          features, (4, 4), (2, 2), use_bias=use_bias, dtype=self.dtype,
          kernel_init=KERNEL_INIT, impl=self.conv_transpose)

    def layer(module, h):
      if self.norm == 'spectral':
        return nn.SpectralNorm(module, dtype=self.dtype)(h, update_stats=train)
      return module(h)

    def norm_relu(x):
      if self.norm == 'batch':
        x = conditional.batch_norm(train, self.dtype,
                                   num_classes_=self.num_classes,
                                   labels=labels)(x)
      elif self.norm == 'layer':
        x = nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=self.dtype,
                         param_dtype=jnp.float32)(x)
      elif self.norm == 'group':
        x = nn.GroupNorm(math.gcd(GROUPS, x.shape[-1]), dtype=self.dtype,
                         param_dtype=jnp.float32)(x)
      return nn.relu(x)

    # No bias where BatchNorm follows: its shift makes one redundant.
    bias = self.norm != 'batch'
    n = num_strided(self.size)
    start = self.size // 2 ** n
    ch = self.channels * 2 ** (n - 1)
    x = layer(nn.Dense(start * start * ch, use_bias=bias, dtype=self.dtype,
                       kernel_init=KERNEL_INIT), z.astype(self.dtype))
    x = norm_relu(x.reshape(z.shape[0], start, start, ch))
    for _ in range(n - 1):
      ch //= 2
      x = norm_relu(layer(up_conv(ch, bias), x))
    x = layer(up_conv(self.out_channels, True), x)
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  channels: int = 64
  dtype: Any = jnp.float32
  norm: str = DEFAULT_D_NORM
  num_classes: int = 0  # > 0: conditional, with `head` (models/conditional.py).
  head: str = ''

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    def layer(module, h):
      if self.norm == 'spectral':
        return nn.SpectralNorm(module, dtype=self.dtype)(h, update_stats=train)
      return module(h)

    n = num_strided(x.shape[1])
    x = x.astype(self.dtype)
    for i in range(n):
      first = i == 0
      # No bias where BatchNorm follows: its shift makes one redundant.
      batch_norm = not first and self.norm == 'batch'
      x = layer(nn.Conv(self.channels * 2 ** i, (4, 4), (2, 2), padding='SAME',
                        use_bias=not batch_norm, dtype=self.dtype,
                        kernel_init=KERNEL_INIT), x)
      if batch_norm:
        x = common.batch_norm(train, self.dtype)(x)
      elif not first and self.norm == 'layer':
        x = nn.LayerNorm(reduction_axes=(1, 2, 3), dtype=self.dtype,
                         param_dtype=jnp.float32)(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = x.reshape(x.shape[0], -1)
    return conditional.output_layer(
        x, labels, self.num_classes, self.head,
        lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=KERNEL_INIT), layer)


def g_norm(config):
  """`config.g.norm` for this model ('default' or absent: 'batch')."""
  return common.norm_name(config, 'g', 'dcgan', G_NORMS, DEFAULT_G_NORM)


def d_norm(config):
  """`config.d.norm` for this model ('default' or absent: 'batch')."""
  return common.norm_name(config, 'd', 'dcgan', D_NORMS, DEFAULT_D_NORM)


@registry.register('dcgan', g_fields=('channels', 'norm', 'conv_transpose'),
                   d_fields=('channels', 'norm'))
def build(config, example_shape):
  size, channels = common.square_image(example_shape, SIZES, 'dcgan')
  dtype = common.compute_dtype(config)
  return (Generator(size, channels, config.g.get('channels', 64), dtype,
                    g_norm(config), conv_transpose.impl(config),
                    conditional.cbn_classes(config, 'dcgan', g_norm(config))),
          Discriminator(config.d.get('channels', 64), dtype, d_norm(config),
                        conditional.num_classes(config),
                        conditional.d_head(config)))
