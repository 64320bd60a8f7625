"""Discriminator penalties, registered by name.

A penalty is a function of the discriminator (as a function of its input, with
its parameters closed over), the real and generated batches (as D sees them:
augmented and packed), one PRNG key per example and the name of the device
axis the batch is split over (None outside `pmap`):

    penalty(d_fn, real, fake, keys, axis_name=None) -> scalar

The train step adds `config.penalty.weight * penalty` to the discriminator's
loss. With `config.penalty.every = k > 1` the penalty is *lazy* (Karras et al.
2020, StyleGAN2, Sec. 3.1): it is computed on every k-th D update only, and
multiplied by k there so that its average strength stays the same. It is
added to the loss of that D update (one Adam step), whereas StyleGAN2 takes a
separate optimizer step for it and so rescales Adam (lr * c, beta ** c with
c = k / (k + 1)) to keep the per-image schedule; here the number of D steps
does not change, so no such rescaling applies.

Every penalty here differentiates D with respect to its input, per example
(`jax.grad` of the summed outputs; the examples do not interact unless D mixes
them, which BatchNorm does; `gan_jax.checks.check_gradient_penalty` refuses
that combination). Norms are eps-safe: the gradient of the penalty stays
finite where D's input gradient is zero.

To add one, write the function and decorate it with `@register('name')` (or
call `register('name')(fn)`); `input_gradient=False` for a penalty that does
not differentiate D with respect to its input (it is then allowed with
BatchNorm in D).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from gan_jax import rng
from gan_jax.axis import AXIS
from gan_jax.errors import UserError

PENALTIES: dict[str, Callable] = {}
# The penalties that take D's gradient with respect to its input.
INPUT_GRADIENT: set[str] = set()

# Added under the square root so that the norm of a zero gradient has a finite
# derivative (d/dx sqrt(x) is infinite at 0).
NORM_EPS = 1e-12


def register(name: str, *, input_gradient: bool = True):
  """Registers `fn(d_fn, real, fake, keys, axis_name=None)` as `name`."""
  def decorator(fn):
    if name in PENALTIES:
      raise ValueError(f'penalty {name!r} is registered twice')
    PENALTIES[name] = fn
    if input_gradient:
      INPUT_GRADIENT.add(name)
    return fn
  return decorator


def get(name: str) -> Callable:
  if name not in PENALTIES:
    raise UserError(f'unknown penalty {name!r}; set config.penalty.name to one '
                    'of: ' + ', '.join(sorted(PENALTIES)) + " (or '' for none)")
  return PENALTIES[name]


def input_gradient(d_fn, x):
  """dD(x_i)/dx_i for every example i, shape of `x`."""
  return jax.grad(lambda x: jnp.sum(d_fn(x)))(x)


def squared_gradient_norm(d_fn, x):
  """Per-example squared L2 norm of dD(x)/dx (smooth at 0, needs no eps)."""
  grads = input_gradient(d_fn, x)
  return jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1)


def input_gradient_norm(d_fn, x):
  """Per-example L2 norm of dD(x)/dx, eps-safe."""
  return jnp.sqrt(squared_gradient_norm(d_fn, x) + NORM_EPS)


def _per_example(keys, like):
  """One U[0, 1) weight per example, broadcastable against `like`."""
  return rng.uniform(keys, (1,) * (like.ndim - 1), like.dtype)


@register('gradient_penalty')
def gradient_penalty(d_fn, real, fake, keys, axis_name=None):
  """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on interpolates.

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1) per example. Works
  with any loss (`config.penalty.name='gradient_penalty'`); `wgan_gp` adds it
  by default.
  """
  del axis_name
  eps = _per_example(keys, real)
  x_hat = eps * real + (1. - eps) * fake
  return jnp.mean((input_gradient_norm(d_fn, x_hat) - 1.) ** 2)


@register('r1')
def r1(d_fn, real, fake, keys, axis_name=None):
  """R1 (Mescheder et al. 2018, "Which training methods for GANs do actually
  converge?"): (1/2) E_real[||grad D(x)||^2], so `config.penalty.weight` is
  the paper's gamma. Usually made lazy (`config.penalty.every=16`, StyleGAN2)."""
  del fake, keys, axis_name
  return 0.5 * jnp.mean(squared_gradient_norm(d_fn, real))


@register('r2')
def r2(d_fn, real, fake, keys, axis_name=None):
  """R2 (Mescheder et al. 2018): R1 on the generated batch,
  (1/2) E_fake[||grad D(x)||^2]."""
  del real, keys, axis_name
  return 0.5 * jnp.mean(squared_gradient_norm(d_fn, fake))


# The perturbation scale of DRAGAN's reference code: delta ~ C * std(x) * U[0, 1).
DRAGAN_SCALE = 0.5


def batch_std(x, axis_name=None):
  """The standard deviation of all entries of `x`; over the whole batch of all
  devices of `axis_name` when given (the shards must be the same size)."""
  mean = jnp.mean(x)
  if axis_name is not None:
    mean = lax.pmean(mean, axis_name)
  var = jnp.mean((x - mean) ** 2)
  if axis_name is not None:
    var = lax.pmean(var, axis_name)
  return jnp.sqrt(var)


@register('dragan')
def dragan(d_fn, real, fake, keys, axis_name=None):
  """DRAGAN (Kodali et al. 2017): the WGAN-GP term on perturbed reals.

  As in the authors' code: x_p = x + 0.5 * std(x) * U[0, 1) elementwise (std
  over the whole real batch), x_hat = x + alpha * (x_p - x) with alpha ~
  U[0, 1) per example, penalty E[(||grad D(x_hat)|| - 1)^2] (the paper's
  lambda = 10 is `config.penalty.weight`).
  """
  del fake
  std = lax.stop_gradient(batch_std(real, axis_name))
  split = jax.vmap(jax.random.split)(keys)
  alpha = _per_example(split[:, 0], real)
  noise = rng.uniform(split[:, 1], real.shape[1:], real.dtype)
  x_hat = real + alpha * DRAGAN_SCALE * std * noise
  return jnp.mean((input_gradient_norm(d_fn, x_hat) - 1.) ** 2)


def lazy(penalty_thunk, d_updates, every: int, weight: float):
  """`weight * penalty` as added to d_loss, made lazy with interval `every`.

  Returns (term, penalty): on D updates where `d_updates % every == 0` the
  term is `every * weight * penalty` (StyleGAN2's scaling), elsewhere 0 and
  the penalty is not computed (`lax.cond`). `every=1` is the plain penalty.
  """
  if every == 1:
    pen = penalty_thunk()
    return weight * pen, pen
  pen = lax.cond(d_updates % every == 0,
                 lambda: jnp.asarray(penalty_thunk(), jnp.float32),
                 lambda: jnp.zeros((), jnp.float32))
  return every * weight * pen, pen


def penalty_name(config, loss) -> Optional[str]:
  """The penalty the run adds: `config.penalty.name`, else the loss's own
  (`wgan_gp`: `gradient_penalty`), else None."""
  return config.penalty.name or loss.penalty or None


# With a lazy penalty, the metric flagging the D updates that computed it.
APPLIED = 'penalty_applied'


def no_penalty(d_fn, real, fake, key, first, d_updates):
  del d_fn, real, fake, key, first, d_updates
  return 0., {}


def make(config, loss):
  """The penalty term of D's loss for `config` and its `loss`:

      term(d_fn, real, fake, key, first, d_updates) -> (term, metrics)

  on D's views of a real and a generated batch (`first`: the global index of
  this device's first view, for the per-example keys; `d_updates`: D's update
  count, for laziness). `no_penalty` when the run adds none.
  """
  name = penalty_name(config, loss)
  if not name:
    return no_penalty
  fn, weight = get(name), config.penalty.weight
  every = config.penalty.get('every', 1)

  def term(d_fn, real, fake, key, first, d_updates):
    keys = rng.example_keys(jax.random.fold_in(key, rng.PENALTY), first,
                            real.shape[0])
    value, pen = lazy(lambda: fn(d_fn, real, fake, keys, axis_name=AXIS),
                      d_updates, every, weight)
    metrics = {'penalty': pen}
    if every > 1:
      metrics[APPLIED] = (d_updates % every == 0).astype(jnp.float32)
    return value, metrics
  return term
