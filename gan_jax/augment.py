"""Differentiable augmentation of D's input (DiffAugment, Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training").

The same kinds of random transformation (the policy), each drawn anew per
image, are applied to real and generated images before every pass through D,
in both the D and the G update; they are
differentiable with respect to the image, so G's gradient flows through them.
`config.augment.policy` is a comma-separated list of:

  color:       brightness + U[-0.5, 0.5); saturation (distance to the pixel's
               channel mean) x U[0, 2); contrast (distance to the image mean)
               x U[0.5, 1.5). For images in [-1, 1], as in the paper's code.
  translation: an integer shift of up to 1/8 of the size per axis, drawn
               uniformly per example, filling with zeros.
  cutout:      a zeroed square of half the size (rounded), its centre drawn
               uniformly, possibly partly outside the image.

Every draw comes from a key of the example's *global* index (`gan_jax.rng`,
stream AUGMENT), so 1 or N devices augment a global batch identically.
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.errors import UserError

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5

# Each op is `op(u, x) -> x'` for one image x [H, W, C] and a vector u of
# U[0, 1) draws (NUM_DRAWS[op] of them): all of an example's draws come from
# one call of the generator, which keeps the compiled step small.


def _randint(u, low, high):
  """An integer uniform on [low, high) from one U[0, 1) draw."""
  return jnp.clip(jnp.floor(u * (high - low)).astype(jnp.int32) + low,
                  low, high - 1)


def color(u, x):
  """Brightness + U[-0.5, 0.5), then saturation x U[0, 2), then contrast
  x U[0.5, 1.5) of one image [H, W, C]."""
  x = x + (u[0] - 0.5)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  x = (x - mean) * (u[1] * 2.) + mean
  mean = jnp.mean(x)
  return (x - mean) * (u[2] + 0.5) + mean


def _shift(x, offset, axis):
  """Shifts `x` by `offset` along `axis`: out[i] = x[i + offset], 0 outside."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  padded = jnp.pad(x, pad)  # Index 0 and n + 1 are the zero border.
  index = jnp.clip(jnp.arange(n) + offset + 1, 0, n + 1)
  return jnp.take(padded, index, axis=axis)


def translation(u, x, ratio=TRANSLATION_RATIO):
  """Shifts one image [H, W, C] by integers in [-s, s] per axis, s = ratio*size
  rounded, filling with zeros."""
  h, w = x.shape[0], x.shape[1]
  sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  x = _shift(x, _randint(u[0], -sh, sh + 1), 0)
  return _shift(x, _randint(u[1], -sw, sw + 1), 1)


def cutout(u, x, ratio=CUTOUT_RATIO):
  """Zeroes a square of size ratio*size (rounded) of one image [H, W, C]."""
  h, w = x.shape[0], x.shape[1]
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  # The paper's code: the centre is uniform on [0, size] for an even square
  # ([0, size - 1] for an odd one), the square may stick out of the image.
  top = _randint(u[0], 0, h + (1 - ch % 2)) - ch // 2
  left = _randint(u[1], 0, w + (1 - cw % 2)) - cw // 2
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  inside = ((rows >= top) & (rows < top + ch) & (cols >= left)
            & (cols < left + cw))
  return x * (~inside)[:, :, None].astype(x.dtype)


OPS: dict[str, Callable] = {
    'color': color,
    'translation': translation,
    'cutout': cutout,
}
NUM_DRAWS = {'color': 3, 'translation': 2, 'cutout': 2}


def parse(policy: str) -> list[str]:
  """The op names of `policy`; raises UserError for an unknown one."""
  names = [p.strip() for p in (policy or '').split(',') if p.strip()]
  for name in names:
    if name not in OPS:
      raise UserError(f'unknown augmentation {name!r} in config.augment.policy='
                      f'{policy!r}; use a comma-separated list of: '
                      + ', '.join(OPS) + " (or '' for none)")
  return names


def make(policy: str) -> Optional[Callable]:
  """`augment(keys, x) -> x'` for a batch [B, H, W, C] and one key per example,
  or None for an empty policy."""
  names = parse(policy)
  if not names:
    return None

  offsets = np.cumsum([0] + [NUM_DRAWS[n] for n in names])

  def one(key, x):
    u = jax.random.uniform(key, (int(offsets[-1]),), jnp.float32)
    for name, start, stop in zip(names, offsets[:-1], offsets[1:]):
      x = OPS[name](u[start:stop], x).astype(x.dtype)
    return x

  def augment(keys, x):
    if x.ndim != 4:
      raise UserError(
          f'config.augment.policy={policy!r} augments images [H, W, C], but '
          f'the examples have shape {list(x.shape[1:])}; set '
          "--config.augment.policy='' for this data")
    return jax.vmap(one)(keys, x)

  return augment
