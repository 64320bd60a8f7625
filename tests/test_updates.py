"""config.updates: simultaneous D and G updates against hand-written gradients.

The step is called directly (pmapped over one device), on the MLP.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.jax_utils import replicate
from flax.jax_utils import unreplicate

from gan_jax import checks
from gan_jax import losses
from gan_jax import models
from gan_jax import rng
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from gan_jax.errors import UserError
from tests.conftest import run_launch
from tests.conftest import tiny_config
from tests import test_multidevice


def _one_step(config, init, batch):
  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS)
  new, metrics = p_step(replicate(init), jnp.asarray(batch[None]))
  return unreplicate(new), jax.device_get(unreplicate(metrics))


def _close(a, b, **kw):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


@pytest.mark.parametrize('loss_name', ['non_saturating', 'hinge'])
def test_simultaneous_step_takes_both_gradients_at_the_same_point(loss_name):
  # Adam's eps 1: a plain scaled gradient step, so that a gradient that is 0
  # up to rounding does not become a +-lr step (tests/test_multidevice.py).
  config = tiny_config(f'loss={loss_name}', updates='simultaneous',
                       g__optimizer__eps=1.0, d__optimizer__eps=1.0)
  g, d = models.build(config, (2,))
  init = state_lib.create(config, g, d, (2,))
  batch = np.random.default_rng(0).normal(
      size=(1, config.batch_size, 2)).astype(np.float32)
  new, metrics = _one_step(config, init, batch)

  # By hand: the noise of the step's (only) update, one G forward, D at its
  # initial parameters for both losses.
  key = jax.random.fold_in(jax.random.fold_in(init.key, init.step), 0)
  z = rng.normal(rng.example_keys(jax.random.fold_in(key, rng.NOISE), 0,
                                  config.batch_size), (config.z_dim,))
  real = jnp.asarray(batch[0])
  loss = losses.get(loss_name)
  apply_g = lambda p: g.apply({'params': p}, z)
  apply_d = lambda p, x: d.apply({'params': p}, x)

  def d_loss(d_params):
    return loss.fn(apply_d(d_params, real),
                   apply_d(d_params, apply_g(init.g.params)))[0]

  def g_loss(g_params):
    return loss.fn(apply_d(init.d.params, real),
                   apply_d(init.d.params, apply_g(g_params)))[1]

  want_d = init.d.apply_gradients(grads=jax.grad(d_loss)(init.d.params))
  want_g = init.g.apply_gradients(grads=jax.grad(g_loss)(init.g.params))
  _close(new.d.params, want_d.params, rtol=1e-5, atol=1e-6)
  _close(new.g.params, want_g.params, rtol=1e-5, atol=1e-6)
  assert (int(new.step), int(new.d.step), int(new.g.step)) == (1, 1, 1)
  np.testing.assert_allclose(metrics['d_loss'], d_loss(init.d.params),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics['g_loss'], g_loss(init.g.params),
                             rtol=1e-5)


def test_alternating_and_simultaneous_differ_only_in_g():
  """The D update is the same (same noise, same D); G's is not."""
  config = tiny_config()
  g, d = models.build(config, (2,))
  init = state_lib.create(config, g, d, (2,))
  batch = np.random.default_rng(1).normal(
      size=(1, config.batch_size, 2)).astype(np.float32)
  alt, _ = _one_step(config, init, batch)
  config.updates = 'simultaneous'
  sim, _ = _one_step(config, init, batch)
  _close(alt.d.params, sim.d.params, rtol=1e-6, atol=1e-7)
  assert not all(np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(alt.g.params), jax.tree.leaves(sim.g.params)))


@pytest.mark.parametrize('overrides,match', [
    (dict(updates='simultaneous', d_steps=5), 'takes one D update per G'),
    (dict(updates='together'), "unknown updates 'together'")])
def test_bad_updates_config_is_refused(overrides, match):
  with pytest.raises(UserError, match=match):
    checks.validate(tiny_config(**overrides))


def test_simultaneous_two_devices_equal_one(tmp_path):
  results = {}
  for n in (1, 2):
    workdir = tmp_path / f'mlp{n}'
    r = run_launch(['--config=configs/default.py', '--config.updates=simultaneous',
                    f'--workdir={workdir}', *test_multidevice.ARGS], devices=n)
    assert r.returncode == 0, r.stderr[-3000:]
    results[n] = test_multidevice.restore_final(workdir)[0]
  assert int(results[1].step) == 6
  _close(results[1], results[2], rtol=2e-5, atol=2e-6)


def test_simultaneous_image_run_with_batch_norm_and_dropout(tmp_path):
  """dcgan_mnist (BatchNorm in G, dropout in D) on 2 devices, end to end."""
  npz = tmp_path / 'd.npz'
  np.savez(npz, images=np.random.default_rng(0).integers(
      0, 256, (32, 28, 28), np.uint8))
  workdir = tmp_path / 'run'
  r = run_launch(['--config=configs/mnist_dcgan.py:data=images',
                  f'--config.data.path={npz}', '--config.updates=simultaneous',
                  '--config.batch_size=4', '--config.num_steps=2',
                  '--config.log_every=1', '--config.eval_every=2',
                  '--config.checkpoint.every=2', '--config.eval.grid_rows=2',
                  f'--workdir={workdir}'], devices=2)
  assert r.returncode == 0, r.stderr[-3000:]
  logged = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()]
  step2 = [m for m in logged if m.get('step') == 2 and 'd_loss' in m]
  assert step2 and np.isfinite(step2[0]['d_loss'])
  assert np.isfinite(step2[0]['g_loss'])
  assert (workdir / 'samples' / 'step_0000002.png').exists()
