"""A discriminator with BatchNorm sees the real and the generated batch apart.

D's update runs D on the real batch and on the generated batch in two passes
(gan_jax.step.discriminate), as G's update runs it on generated batches
alone, so G differentiates the same function D was trained as. Checked on the
MLP with d.norm='batch', the step called directly (pmapped over one device):
the step's logged mean D outputs equal D applied by hand to each batch alone,
and differ from D applied to both batches in one pass (the behaviour this
replaced) by far more than the tolerance.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.jax_utils import replicate
from flax.jax_utils import unreplicate

from gan_jax import models
from gan_jax import rng
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from tests.conftest import tiny_config


def _in_axis(fn, *args):
  """`fn(*args)` with the step's device axis bound (one device), as BatchNorm
  in training mode averages its statistics over that axis."""
  return jax.tree.map(lambda y: y[0], jax.vmap(fn, axis_name=step_lib.AXIS)(
      *[jnp.asarray(a)[None] for a in args]))


def _train_mode(d, state, x):
  """D's logits on `x` alone in training mode (batch statistics of x)."""
  return _in_axis(lambda x: d.apply(
      {'params': state.d.params, **state.d.model_state}, x, train=True,
      mutable=['batch_stats'])[0], x)


def _fakes(g, init, config):
  """The fakes of the step's first D update (its noise keys; G training)."""
  key = jax.random.fold_in(jax.random.fold_in(init.key, init.step), 0)
  z = rng.normal(rng.example_keys(jax.random.fold_in(key, rng.NOISE), 0,
                                  config.batch_size), (config.z_dim,))
  return _in_axis(lambda z: g.apply(
      {'params': init.g.params, **init.g.model_state}, z, train=True,
      mutable=['batch_stats'])[0], z)


@pytest.mark.parametrize('updates', ['alternating', 'simultaneous'])
def test_d_update_normalises_real_and_fake_batches_apart(updates):
  config = tiny_config(d__norm='batch', updates=updates)
  g, d = models.build(config, (2,))
  init = state_lib.create(config, g, d, (2,))
  assert 'batch_stats' in init.d.model_state
  real = np.random.default_rng(0).normal(
      3., 1., size=(1, config.batch_size, 2)).astype(np.float32)
  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS)
  _, metrics = p_step(replicate(init), jnp.asarray(real[None]))
  metrics = jax.device_get(unreplicate(metrics))

  fake = _fakes(g, init, config)
  real_alone = _train_mode(d, init, real[0])
  fake_alone = _train_mode(d, init, fake)
  np.testing.assert_allclose(metrics['d_real'], np.mean(real_alone), atol=1e-5)
  np.testing.assert_allclose(metrics['d_fake'], np.mean(fake_alone), atol=1e-5)

  # One pass over both batches gives other numbers (the mixed batch's stats).
  mixed = _train_mode(d, init, jnp.concatenate([real[0], fake]))
  gap = max(abs(np.mean(mixed[:config.batch_size]) - np.mean(real_alone)),
            abs(np.mean(mixed[config.batch_size:]) - np.mean(fake_alone)))
  assert gap > 1e-2


def test_d_batch_statistics_average_both_passes():
  """D's running statistics move by the mean of the two batches' statistics."""
  config = tiny_config(d__norm='batch')
  g, d = models.build(config, (2,))
  init = state_lib.create(config, g, d, (2,))
  real = np.random.default_rng(1).normal(
      size=(1, config.batch_size, 2)).astype(np.float32)
  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS)
  new, _ = p_step(replicate(init), jnp.asarray(real[None]))
  new = unreplicate(new)
  fake = _fakes(g, init, config)
  variables = {'params': init.d.params, **init.d.model_state}
  stats = [_in_axis(lambda x: d.apply(variables, x, train=True,
                                      mutable=['batch_stats'])[1], x)
           for x in (real[0], fake)]
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *stats)
  for got, want in zip(jax.tree.leaves(new.d.model_state),
                       jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
