"""GAN losses, registered by name.

A loss is one function of the discriminator's outputs (logits or critic
values, shape `[batch]` or `[batch, 1]`) on a real and a generated batch:

    loss(real_logits, fake_logits) -> (d_loss, g_loss)

The discriminator minimises `d_loss`, the generator minimises `g_loss`. The
train step evaluates the same function in both updates and keeps the part it
needs; XLA removes the unused half (for most losses `g_loss` does not depend on
`real_logits`, so the generator update does not pay for `D(real)`).

Some losses need more than a loss value: `wgan_gp` adds the gradient penalty
of `gan_jax.penalties` (unless `config.penalty.name` names another one), and
`wasserstein` clips the discriminator's weights after each update. Both are
declared at registration. Any penalty can be added to any loss with
`config.penalty.name` (e.g. `non_saturating` + `r1`).

To add a loss, write one function and decorate it (or call
`register('my_loss')(my_loss)`):

    @register('my_loss')
    def my_loss(real_logits, fake_logits):
      return d_loss, g_loss
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from gan_jax.errors import UserError


class Loss(NamedTuple):
  fn: Callable  # (real_logits, fake_logits) -> (d_loss, g_loss)
  # A gan_jax.penalties name added to d_loss when config.penalty.name is ''.
  penalty: Optional[str] = None
  clip_d_weights: bool = False  # clip D's parameters to ±config.loss.clip


LOSSES: dict[str, Loss] = {}


def register(name: str, *, penalty: Optional[str] = None,
             clip_d_weights: bool = False):
  """A decorator registering `fn(real_logits, fake_logits) -> (d_loss, g_loss)`
  as `name` (the options are keyword-only, so `register('x', fn)` is a
  TypeError rather than a silent no-op)."""
  def decorator(fn):
    if name in LOSSES:
      raise ValueError(f'loss {name!r} is registered twice')
    LOSSES[name] = Loss(fn, penalty, clip_d_weights)
    return fn
  return decorator


def weight_clipper(config, loss: Loss):
  """`clip(params) -> params` applied to D after each update: WGAN's clipping
  to +-config.loss.clip for a loss registered with clip_d_weights, else the
  identity."""
  if not loss.clip_d_weights:
    return lambda params: params
  c = config.loss.clip
  return lambda params: jax.tree.map(lambda p: jnp.clip(p, -c, c), params)


def get(name: str) -> Loss:
  if name not in LOSSES:
    raise UserError(f'unknown loss {name!r}; set config.loss.name to one of: '
                    + ', '.join(sorted(LOSSES)))
  return LOSSES[name]


def _bce(logits, label):
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)).mean()


@register('minimax')
def minimax(real_logits, fake_logits):
  """Goodfellow et al. 2014: G minimises log(1 - D(G(z))) (saturates early)."""
  d_loss = _bce(real_logits, 1.) + _bce(fake_logits, 0.)
  # log(1 - sigmoid(x)) = -softplus(x), so E[log(1 - D(G(z)))] = -E[softplus(x)].
  g_loss = -jnp.mean(jnp.logaddexp(0., fake_logits))
  return d_loss, g_loss


@register('non_saturating')
def non_saturating(real_logits, fake_logits):
  """Goodfellow et al. 2014, the practical form: G maximises log D(G(z))."""
  d_loss = _bce(real_logits, 1.) + _bce(fake_logits, 0.)
  g_loss = _bce(fake_logits, 1.)
  return d_loss, g_loss


@register('least_squares')
def least_squares(real_logits, fake_logits):
  """LSGAN (Mao et al. 2017) with the 0-1 coding: a=0, b=c=1."""
  d_loss = 0.5 * (jnp.mean((real_logits - 1.) ** 2) + jnp.mean(fake_logits ** 2))
  g_loss = 0.5 * jnp.mean((fake_logits - 1.) ** 2)
  return d_loss, g_loss


def _wasserstein(real_logits, fake_logits):
  d_loss = jnp.mean(fake_logits) - jnp.mean(real_logits)
  g_loss = -jnp.mean(fake_logits)
  return d_loss, g_loss


# WGAN (Arjovsky et al. 2017): the critic's weights are clipped after each step.
register('wasserstein', clip_d_weights=True)(_wasserstein)
# WGAN-GP (Gulrajani et al. 2017): the same objective plus a gradient penalty.
register('wgan_gp', penalty='gradient_penalty')(_wasserstein)


@register('hinge')
def hinge(real_logits, fake_logits):
  """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""
  d_loss = jnp.mean(jax.nn.relu(1. - real_logits)) + jnp.mean(jax.nn.relu(1. + fake_logits))
  g_loss = -jnp.mean(fake_logits)
  return d_loss, g_loss

