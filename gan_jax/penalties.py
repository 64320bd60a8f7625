"""Discriminator penalties, registered by name.

A penalty is a function of the discriminator (as a function of its input, with
its parameters closed over), the real and generated batches, and one PRNG key
per example:

    penalty(d_fn, real, fake, keys) -> scalar   (added to d_loss * weight)

To add one, write the function and decorate it with `@register('name')`.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from gan_jax import rng
from gan_jax.errors import UserError

PENALTIES: dict[str, Callable] = {}

# Added under the square root so that the norm of a zero gradient has a finite
# derivative (d/dx sqrt(x) is infinite at 0).
NORM_EPS = 1e-12


def register(name: str):
  def decorator(fn):
    if name in PENALTIES:
      raise ValueError(f'penalty {name!r} is registered twice')
    PENALTIES[name] = fn
    return fn
  return decorator


def get(name: str) -> Callable:
  if name not in PENALTIES:
    raise UserError(f'unknown penalty {name!r}; set config.penalty.name to one '
                    'of: ' + ', '.join(sorted(PENALTIES)) + " (or '' for none)")
  return PENALTIES[name]


def input_gradient_norm(d_fn, x):
  """Per-example L2 norm of dD(x)/dx, eps-safe."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(x)
  sq = jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1)
  return jnp.sqrt(sq + NORM_EPS)


@register('gradient_penalty')
def gradient_penalty(d_fn, real, fake, keys):
  """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on interpolates."""
  eps = rng.uniform(keys, (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1. - eps) * fake
  return jnp.mean((input_gradient_norm(d_fn, x_hat) - 1.) ** 2)
