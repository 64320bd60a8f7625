"""Standing statistics: G's BatchNorm averages recomputed before sampling.

In eval mode a generator normalises with the running averages that training
kept. Those belong to the trained weights; the EMA generator (`config.ema`)
has other weights, so its activations have other statistics. BigGAN (Brock et
al. 2019) and StudioGAN recompute them: run the generator to be sampled in
training mode on `config.eval.standing_stats` batches of noise (each of
`config.batch_size`, the batch its BatchNorm normalised over in training) and
store the mean of the batch means and of the batch variances as its averages.

Works for any generator whose BatchNorm layers are `flax.linen.BatchNorm`
with their feature axis last (`models.common.batch_norm`, also inside the
conditional BatchNorm): their inputs are read by a method interceptor, so the
models need no changes and their momentum does not matter.
"""
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax import labels as labels_lib
from gan_jax.axis import AXIS
from gan_jax.errors import UserError

# Noise for the statistics: its own stream, apart from the samples' keys.
_KEY_SALT = 0x57A9D


def batch(config, i):
  """(z, labels or None, dropout key) of the i-th batch the statistics see."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.eval.seed), _KEY_SALT)
  z_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
  z = jax.random.normal(z_key, (config.batch_size, config.z_dim))
  return z, labels_lib.eval_labels(config, config.batch_size), dropout_key


def _static(apply_fn):
  """What the jitted pass is keyed on: G's module where `apply_fn` is its
  bound `apply`. Bound methods compare by their object's identity, modules by
  their fields, so a G rebuilt for the next checkpoint reuses the program."""
  module = getattr(apply_fn, '__self__', None)
  return module if isinstance(module, nn.Module) else apply_fn


@functools.partial(jax.jit, static_argnums=0)
def _batch_moments(model, variables, z, labels, key):
  """{BatchNorm path: (mean, var)} of one training-mode pass of G on `z`."""
  apply_fn = model.apply if isinstance(model, nn.Module) else model

  def one_replica(z, labels):
    moments = {}

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm) and (
          context.method_name == '__call__'):
        x = args[0].astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        moments[context.module.scope.path] = (x.mean(axes), x.var(axes))
      return next_fun(*args, **kwargs)

    kwargs = {} if labels is None else {'labels': labels}
    with nn.intercept_methods(record):
      # Other state (spectral norm's power iteration) is updated and dropped.
      apply_fn(variables, z, train=True,
               mutable=[k for k in variables if k != 'params'],
               rngs={'dropout': key}, **kwargs)
    return moments

  # Training mode names the cross-replica axis; a one-replica vmap binds it.
  labels = None if labels is None else labels[None]
  moments = jax.vmap(one_replica, axis_name=AXIS)(z[None], labels)
  return jax.tree.map(lambda x: x[0], moments)


def recompute(config, g, num_batches: int):
  """`g` (one copy of G's NetState) with its BatchNorm averages replaced by
  standing statistics over `num_batches` batches; `g` itself when 0 or when G
  has no BatchNorm."""
  if not num_batches:
    return g
  stats = g.model_state.get('batch_stats')
  if not stats:
    return g

  variables = {'params': g.params, **g.model_state}
  total = None
  for i in range(num_batches):
    m = _batch_moments(_static(g.apply_fn), variables, *batch(config, i))
    total = m if total is None else jax.tree.map(jnp.add, total, m)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(stats))
  layers = {path[:-1] for path in flat}
  if set(total) != layers:
    raise UserError(
        f'standing statistics: BatchNorm layers {sorted(total)} do not match '
        f'the batch_stats {sorted(layers)}; set --config.eval.standing_stats=0')
  for path, (mean, var) in total.items():
    flat[path + ('mean',)] = mean / num_batches
    flat[path + ('var',)] = var / num_batches
  model_state = dict(g.model_state)
  model_state['batch_stats'] = flax.traverse_util.unflatten_dict(flat)
  return g.replace(model_state=model_state)
