"""MLP generator and discriminator for low-dimensional (e.g. 2D) data.

Config fields read:
  g.width, g.depth, g.activation (and the same under d): hidden layers.
  g.norm, d.norm: normalisation of the hidden layers, one of
      'none' (the default for both), 'batch' (BatchNorm, Ioffe & Szegedy 2015,
      cross-replica in training), 'layer' (LayerNorm, Ba et al. 2016) or
      'spectral' (spectral normalisation of every Dense layer, Miyato et al.
      2018; its power-iteration vectors live in the model state's
      'batch_stats' collection and are updated in training only).
      'default' means the model's default, 'none'.
  d.pack: with PacGAN packing (Lin et al. 2018) D takes `pack` examples
      concatenated; the train state builds D for the packed shape.
  dtype: compute dtype, 'float32' (default) or 'bfloat16'; parameters (and the
      spectral-norm power iteration) are float32 either way, and samples and
      logits are float32.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import conditional
from gan_jax.models import registry

NORMS = ('none', 'batch', 'layer', 'spectral')
DEFAULT_NORM = 'none'


def activation(name: str):
  fn = getattr(jax.nn, name, None)
  if not callable(fn):
    raise UserError(f'unknown activation {name!r}; use a jax.nn function name '
                    'such as relu, leaky_relu, elu, gelu, tanh')
  return fn


class MLP(nn.Module):
  """`depth` hidden layers of `width` units, then a linear layer of `out` units.

  Each hidden layer is Dense -> norm -> activation; with `norm='spectral'`
  every Dense layer (the last too) is spectrally normalised instead.
  """
  width: int
  depth: int
  out: int  # 0: no last layer (the features of the last hidden layer).
  act: str = 'relu'
  dtype: Any = jnp.float32
  norm: str = 'none'
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x, train: bool = True):
    act = activation(self.act)

    def dense(features, h):
      layer = nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32,
                       kernel_init=self.kernel_init)
      if self.norm == 'spectral':
        return nn.SpectralNorm(layer, dtype=self.dtype)(h, update_stats=train)
      return layer(h)

    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for _ in range(self.depth):
      x = dense(self.width, x)
      if self.norm == 'batch':
        x = common.batch_norm(train, self.dtype)(x)
      elif self.norm == 'layer':
        x = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32)(x)
      x = act(x)
    return dense(self.out, x) if self.out else x


class Generator(nn.Module):
  width: int
  depth: int
  example_shape: Sequence[int]
  act: str = 'relu'
  dtype: Any = jnp.float32
  norm: str = 'none'
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, z, train: bool = True):
    x = MLP(self.width, self.depth, math.prod(self.example_shape), self.act,
            self.dtype, self.norm, self.kernel_init)(z, train)
    return x.reshape(z.shape[0], *self.example_shape).astype(jnp.float32)


class Discriminator(nn.Module):
  width: int
  depth: int
  act: str = 'relu'
  dtype: Any = jnp.float32
  norm: str = 'none'
  num_classes: int = 0  # > 0: conditional, with `head` (models/conditional.py).
  head: str = ''

  @nn.compact
  def __call__(self, x, train: bool = True, labels=None):
    if not self.num_classes:
      logits = MLP(self.width, self.depth, 1, self.act, self.dtype,
                   self.norm)(x, train)
      return logits[:, 0].astype(jnp.float32)
    h = MLP(self.width, self.depth, 0, self.act, self.dtype, self.norm)(x, train)

    def layer(module, h):
      if self.norm == 'spectral':
        return nn.SpectralNorm(module, dtype=self.dtype)(h, update_stats=train)
      return module(h)

    return conditional.output_layer(
        h, labels, self.num_classes, self.head,
        lambda n: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32), layer)


@registry.register('mlp', g_fields=('width', 'depth', 'activation', 'norm'),
                   d_fields=('width', 'depth', 'activation', 'norm'))
def build(config, example_shape):
  g, d = config.g, config.d
  dtype = common.compute_dtype(config)
  return (Generator(g.width, g.depth, tuple(example_shape), g.activation,
                    dtype, common.norm_name(config, 'g', 'mlp', NORMS, DEFAULT_NORM)),
          Discriminator(d.width, d.depth, d.activation, dtype,
                        common.norm_name(config, 'd', 'mlp', NORMS, DEFAULT_NORM), conditional.num_classes(config),
                        conditional.d_head(config)))
