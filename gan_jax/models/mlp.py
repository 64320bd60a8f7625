"""MLP generator and discriminator for low-dimensional (e.g. 2D) data."""
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import UserError


def activation(name: str):
  fn = getattr(jax.nn, name, None)
  if not callable(fn):
    raise UserError(f'unknown activation {name!r}; use a jax.nn function name '
                    'such as relu, leaky_relu, elu, gelu, tanh')
  return fn


class MLP(nn.Module):
  """`depth` hidden layers of `width` units, then a linear layer of `out` units."""
  width: int
  depth: int
  out: int
  act: str = 'relu'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train  # No dropout or normalisation here.
    act = activation(self.act)
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for _ in range(self.depth):
      x = act(nn.Dense(self.width, dtype=self.dtype)(x))
    return nn.Dense(self.out, dtype=self.dtype)(x)


class Generator(nn.Module):
  width: int
  depth: int
  example_shape: Sequence[int]
  act: str = 'relu'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    x = MLP(self.width, self.depth, math.prod(self.example_shape), self.act,
            self.dtype)(z, train)
    return x.reshape(z.shape[0], *self.example_shape).astype(jnp.float32)


class Discriminator(nn.Module):
  width: int
  depth: int
  act: str = 'relu'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    logits = MLP(self.width, self.depth, 1, self.act, self.dtype)(x, train)
    return logits[:, 0].astype(jnp.float32)


def build(config, example_shape):
  g, d = config.g, config.d
  return (Generator(g.width, g.depth, tuple(example_shape), g.activation),
          Discriminator(d.width, d.depth, d.activation))
