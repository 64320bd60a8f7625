"""PacGAN's networks for the 2D grid (Lin et al. 2018; its public code,
synthetic_data_experiments/2DGrid_GAN&PacGAN/config.py).

  G: z -> g.depth hidden layers of g.width units (Dense -> BatchNorm -> ReLU)
       -> Dense to the example (2D).                      paper: 4 x 400
  D: x -> d.depth maxout layers of d.width units, d.pieces linear pieces each
       (Goodfellow et al. 2013: the max over `pieces` Dense outputs per unit)
       -> Dense 1 (logits).                                paper: 3 x 200, 5

Config fields read: g.width, g.depth, g.norm (G's normalisation, 'batch' by
default, as the paper's; any of the MLP's), d.width, d.depth, d.pieces, and
g.init_std, d.init_std (> 0: every kernel drawn from N(0, init_std^2), as
the paper's code with 0.02; 0 or absent: Flax's LeCun normal). With packing
(d.pack = m) D takes m examples concatenated. Unconditional only.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import mlp
from gan_jax.models import registry

DEFAULT_G_NORM = 'batch'  # The paper's.


def kernel_init(std):
  """N(0, std^2) kernels for std > 0, else Flax's default (LeCun normal)."""
  return nn.initializers.normal(std) if std else nn.linear.default_kernel_init


class Maxout(nn.Module):
  """`units` outputs, each the max of `pieces` affine functions of the input."""
  units: int
  pieces: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.units * self.pieces, dtype=self.dtype,
                 param_dtype=jnp.float32, kernel_init=self.kernel_init)(x)
    return x.reshape(x.shape[0], self.units, self.pieces).max(axis=-1)


class Discriminator(nn.Module):
  width: int
  depth: int
  pieces: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    del train, labels  # No batch statistics, no dropout; unconditional.
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for _ in range(self.depth):
      x = Maxout(self.width, self.pieces, self.dtype, self.kernel_init)(x)
    logits = nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=self.kernel_init)(x)
    return logits[:, 0].astype(jnp.float32)


@registry.register('pacgan', g_fields=('width', 'depth', 'norm', 'init_std'),
                   d_fields=('width', 'depth', 'pieces', 'init_std'))
def build(config, example_shape):
  if config.get('num_classes', 0):
    raise UserError("model 'pacgan' is unconditional; set "
                    '--config.num_classes=0 or use model mlp')
  g, d = config.g, config.d
  dtype = common.compute_dtype(config)
  g_norm = common.norm_name(config, 'g', 'pacgan', mlp.NORMS, DEFAULT_G_NORM)
  return (mlp.Generator(g.width, g.depth, tuple(example_shape), 'relu', dtype,
                        g_norm, kernel_init(g.get('init_std', 0.))),
          Discriminator(d.width, d.depth, d.pieces, dtype,
                        kernel_init(d.get('init_std', 0.))))
