"""PacGAN (Lin et al. 2018): the discriminator judges packs of m samples.

With `config.d.pack = m > 1`, D's input is m examples joined into one: images
stack their channels, other data concatenates flattened examples. Real packs
hold m real examples and fake packs m generated ones.
"""
import math

import jax.numpy as jnp

from gan_jax.errors import UserError


def pack_size(config) -> int:
  """`config.d.pack`, 1 (no packing) when absent."""
  return config.d.get('pack', 1)


def packed_shape(example_shape, m):
  """The shape of one packed example: images stack the m examples' channels
  ([H, W, m*C]), other data concatenates them flattened ([m * size])."""
  example_shape = tuple(example_shape)
  if m == 1:
    return example_shape
  if len(example_shape) == 3:
    return (*example_shape[:2], m * example_shape[2])
  return (m * math.prod(example_shape),)


def pack(x, m):
  """[B, *example] -> [B / m, *packed_shape].

  Examples j*m ... j*m + m - 1 form pack j; with per-device batches that m
  divides, the packs are the same on any number of devices.
  """
  if m == 1:
    return x
  b = x.shape[0]
  if b % m:
    raise UserError(f'd.pack={m} must divide the per-device batch, which is '
                    f'{b}; pick a batch_size that is a multiple of m times the '
                    'number of devices')
  if x.ndim == 4:
    _, h, w, c = x.shape
    x = x.reshape(b // m, m, h, w, c)
    return jnp.moveaxis(x, 1, 3).reshape(b // m, h, w, m * c)
  return x.reshape(b // m, -1)
