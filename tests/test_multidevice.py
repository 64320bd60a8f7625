"""The pmapped step on 4 CPU devices equals the 1-device step.

Each run is a fresh launch.py process (XLA_FLAGS must be set before jax is
imported); the final checkpoints are then compared here.
"""
import json

import jax
import ml_collections
import numpy as np

from gan_jax import checkpoint
from gan_jax import data
from gan_jax import models
from gan_jax import state as state_lib
from tests.conftest import run_launch

ARGS = ['--config.num_steps=6', '--config.batch_size=16', '--config.g.width=16',
        '--config.d.width=16', '--config.log_every=3', '--config.eval_every=6',
        '--config.checkpoint.every=6', '--config.eval.num_samples=100',
        '--config.steps_per_call=2',
        # Adam divides by sqrt(v): a gradient that is zero up to rounding (the
        # sum order differs with the device count) becomes a full +-lr step of
        # either sign. A large eps makes Adam a plain scaled gradient step, so
        # rounding differences stay rounding-sized and the comparison is tight.
        '--config.g.optimizer.eps=1.0', '--config.d.optimizer.eps=1.0',
        '--config.g.optimizer.lr=0.05', '--config.d.optimizer.lr=0.05']


def restore_final(workdir):
  config = ml_collections.ConfigDict(json.load(open(workdir / 'config.json')))
  it = data.build(config, config.batch_size)
  g, d = models.build(config, it.example_shape)
  template = state_lib.create(config, g, d, it.example_shape)
  ckpt = checkpoint.Checkpointer(str(workdir), config)
  state, data_state = ckpt.restore(ckpt.latest_step(), template)
  return state, data_state, config


def test_four_devices_equal_one_device(tmp_path):
  for loss in ('non_saturating', 'wgan_gp'):
    results = {}
    for n in (1, 4):
      workdir = tmp_path / f'{loss}_{n}'
      r = run_launch([f'--config=configs/default.py:loss={loss}',
                      f'--workdir={workdir}', *ARGS], devices=n)
      assert r.returncode == 0, r.stderr[-3000:]
      assert f'{n} devices' in r.stderr or n == 1
      results[n] = restore_final(workdir)
    one, four = results[1], results[4]
    assert one[1] == four[1]  # Same data position.
    assert int(one[0].step) == int(four[0].step) == 6
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(four[0])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    # Training moved the parameters, so the comparison is not vacuous.
    config = one[2]
    init = state_lib.create(config, *models.build(config, (2,)), (2,))
    moved = [not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(init.g.params), jax.tree.leaves(one[0].g.params))]
    assert any(moved)
