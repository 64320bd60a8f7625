"""The train state: one Flax TrainState (with its own Optax Adam) per network,
bundled with the step counter, the PRNG key and (when enabled) an exponential
moving average of the generator's parameters in one pytree, so a checkpoint
holds all of it.

Two time-scale updates (TTUR, Heusel et al. 2017) are the separate learning
rates and schedules of `config.g.optimizer` and `config.d.optimizer`.
"""
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from gan_jax import checks
from gan_jax import ema
from gan_jax import labels as labels_lib
from gan_jax import packing
from gan_jax.errors import UserError


class NetState(train_state.TrainState):
  """Parameters, optimizer state and non-parameter collections of one network.

  `model_state` holds every collection other than `params` (BatchNorm
  statistics, spectral-norm vectors); it is `{}` for models without any.
  """
  model_state: Any = flax.core.FrozenDict()


class GANState(flax.struct.PyTreeNode):
  step: jax.Array  # Number of completed GAN iterations (d_steps D updates + 1 G update).
  g: NetState
  d: NetState
  key: jax.Array  # Raw uint32 PRNG key; each step folds in `step`.
  # EMA of g.params (config.ema, updated by gan_jax.ema.update), or None
  # when off (then the tree, and so the checkpoint, is as without this field).
  g_ema: Optional[Any] = None


def sampling_generator(state, ema: bool = True) -> NetState:
  """The generator to sample from: `state.g` with the EMA parameters when
  `config.ema` is on (its model_state, e.g. BatchNorm statistics, is G's own),
  else `state.g` itself; `ema=False` takes the trained G even then."""
  if state.g_ema is None or not ema:
    return state.g
  return state.g.replace(params=state.g_ema)


def learning_rate(opt_config, num_steps):
  """An optax schedule: `warmup_steps` linear warmup, then constant/linear/cosine
  decay to zero at `num_steps` (counted in this network's updates). The
  fields are checked at start-up (gan_jax/checks.py)."""
  lr, warmup = opt_config.lr, opt_config.warmup_steps
  decay_steps = max(num_steps - warmup, 1)
  schedule = {
      'constant': optax.constant_schedule(lr),
      'linear': optax.linear_schedule(lr, 0., decay_steps),
      'cosine': optax.cosine_decay_schedule(lr, decay_steps),
  }[opt_config.schedule]
  if warmup:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0., lr, warmup), schedule], [warmup])
  return schedule


# With config.nonfinite='skip', this many non-finite updates in a row stop the run.
MAX_CONSECUTIVE_SKIPS = 100


def _skip_overflowing_norm(tx):
  """`tx` (an optax.apply_if_finite) that also skips gradients whose global
  norm is not finite although every entry is (e.g. entries of 1e38): Adam
  squares them into inf, which would freeze those weights for good. They are
  turned into NaN, which apply_if_finite drops and counts; its state, which
  gan_jax/nonfinite.py reads and checkpoints hold, is unchanged."""
  def update(grads, state, params=None):
    finite = jnp.isfinite(optax.tree.norm(grads))
    grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads)
    return tx.update(grads, state, params)
  return optax.GradientTransformation(tx.init, update)


def make_optimizer(opt_config, num_steps, skip_nonfinite=False):
  """Adam with the learning rate, schedule and betas of `config.{g,d}.optimizer`.

  `num_steps` is the number of updates this network gets over the run. With
  `skip_nonfinite`, updates whose gradients (or their global norm) are not
  finite are dropped (`optax.apply_if_finite`, which counts them in its state).
  """
  tx = optax.adam(learning_rate(opt_config, num_steps), b1=opt_config.b1,
                  b2=opt_config.b2, eps=opt_config.eps)
  if skip_nonfinite:
    tx = _skip_overflowing_norm(
        optax.apply_if_finite(tx, MAX_CONSECUTIVE_SKIPS))
  return tx


def _init_net(module, key, dummy_input, tx, labels=None):
  kwargs = {} if labels is None else {'labels': labels}
  variables = module.init({'params': key, 'dropout': key}, dummy_input,
                          train=False, **kwargs)
  variables = flax.core.unfreeze(variables)
  params = variables.pop('params')
  return NetState.create(apply_fn=module.apply, params=params, tx=tx,
                         model_state=variables)


def create(config, generator, discriminator, example_shape) -> GANState:
  """Initialises both networks and optimizers from `config.seed`.

  Restoring a checkpoint uses this same function to build the target tree.
  """
  if config.nonfinite not in ('stop', 'skip'):
    raise UserError(f"config.nonfinite must be 'stop' or 'skip', got "
                    f'{config.nonfinite!r}')
  skip = config.nonfinite == 'skip'
  pack = packing.pack_size(config)
  init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
  g_key, d_key = jax.random.split(init_key)
  # Two examples, so that layers that need a batch (BatchNorm) initialise.
  z = jnp.zeros((2, config.z_dim), jnp.float32)
  # D sees packs of `pack` examples (PacGAN); it is built for that shape.
  x = jnp.zeros((2, *packing.packed_shape(example_shape, pack)), jnp.float32)
  labels = jnp.zeros((2,), jnp.int32) if labels_lib.num_classes(config) else None
  g = _init_net(generator, g_key, z, make_optimizer(
      config.g.optimizer, config.num_steps, skip), labels)
  d = _init_net(discriminator, d_key, x, make_optimizer(
      config.d.optimizer, config.num_steps * config.d_steps, skip), labels)
  checks.check_gradient_penalty(config, d.model_state)
  g_ema = None
  if ema.decay(config) > 0:
    # A copy: the step donates the state's buffers, which must not alias.
    g_ema = jax.tree.map(jnp.copy, g.params)
  return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d, key=train_key,
                  g_ema=g_ema)
