"""Standing statistics (gan_jax/standing_stats.py) of G's BatchNorm layers."""
from unittest import mock

import flax
import jax
import numpy as np
import pytest

from gan_jax import evaluate
from gan_jax import models
from gan_jax import standing_stats
from gan_jax import state as state_lib
from gan_jax import sampling
from gan_jax import step as step_lib
from gan_jax.errors import UserError
from tests.conftest import tiny_config

SHAPES = {'dcgan': (32, 32, 3), 'dcgan_mnist': (28, 28, 1),
          'sngan_resnet': (32, 32, 3)}


def _g(model, cbn=False, **overrides):
  config = tiny_config(model=model, z_dim=8, batch_size=6, **overrides)
  config.g.channels = config.d.channels = 4
  if cbn:
    config.num_classes = 3
    config.conditional.g = 'cbn'
  g, d = models.build(config, SHAPES.get(model, (2,)))
  return config, state_lib.create(config, g, d, SHAPES.get(model, (2,))).g


def _training_mode(g, z, labels):
  """G's output normalised by its own batch's statistics (one replica)."""
  kwargs = {} if labels is None else {'labels': labels[None]}
  def apply(z, **kw):
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=True,
                      mutable=list(g.model_state), **kw)[0]
  return jax.vmap(apply, axis_name=step_lib.AXIS)(z[None], **kwargs)[0]


@pytest.mark.parametrize('model,cbn', [('dcgan_mnist', False), ('dcgan', False),
                                       ('sngan_resnet', False),
                                       ('dcgan_mnist', True)])
def test_one_batch_makes_eval_mode_equal_training_mode_on_it(model, cbn):
  config, g = _g(model, cbn)
  # Move G's weights away from its init, as an EMA generator's are.
  g = g.replace(params=jax.tree.map(lambda p: p * 1.5 + 0.1, g.params))
  fixed = standing_stats.recompute(config, g, 1)
  before = jax.tree.leaves(g.model_state['batch_stats'])
  after = jax.tree.leaves(fixed.model_state['batch_stats'])
  assert len(before) == len(after) >= 4
  assert all(not np.allclose(a, b) for a, b in zip(before, after))
  z, labels, _ = standing_stats.batch(config, 0)
  kwargs = {} if labels is None else {'labels': labels}

  def eval_mode(g):
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=False,
                      **kwargs)

  # Eval mode with the standing averages of one batch is training mode on it
  # (up to BatchNorm's epsilon and the variance formula); with the
  # training-time averages it is not.
  trained = _training_mode(g, z, labels)
  np.testing.assert_allclose(eval_mode(fixed), trained, atol=2e-4)
  assert np.abs(eval_mode(g) - trained).max() > 1e-2


def test_more_batches_average_the_batch_statistics():
  config, g = _g('dcgan_mnist')
  one = standing_stats.recompute(config, g, 1).model_state['batch_stats']
  three = standing_stats.recompute(config, g, 3).model_state['batch_stats']
  flat1 = flax.traverse_util.flatten_dict(one)
  flat3 = flax.traverse_util.flatten_dict(three)
  assert set(flat1) == set(flat3)
  for path in flat1:  # Different batches, the same distribution.
    assert not np.array_equal(flat1[path], flat3[path])
    np.testing.assert_allclose(flat1[path], flat3[path], rtol=0.5, atol=0.1)


def test_a_rebuilt_generator_reuses_the_compiled_pass():
  """Evaluating several checkpoints builds G again for each; the statistics'
  pass is compiled once, not once per evaluation."""
  config, g = _g('dcgan_mnist')
  standing_stats.recompute(config, g, 2)
  compiled = standing_stats._batch_moments._cache_size()
  _, again = _g('dcgan_mnist')
  again = again.replace(params=jax.tree.map(lambda p: p * 0.5, again.params))
  standing_stats.recompute(config, again, 2)
  assert standing_stats._batch_moments._cache_size() == compiled


def test_off_or_without_batch_norm_is_the_same_generator():
  config, g = _g('dcgan_mnist')
  assert standing_stats.recompute(config, g, 0) is g
  config, g = _g('mlp')
  assert standing_stats.recompute(config, g, 4) is g


@pytest.mark.parametrize('value', [-1, -16])
def test_bad_standing_stats_is_a_user_error(value):
  config = tiny_config()
  config.eval.standing_stats = value
  with pytest.raises(UserError, match='eval.standing_stats'):
    evaluate.check(config)


def test_evaluate_samples_the_generator_with_standing_statistics(tmp_path):
  """The wiring: evaluate() recomputes the averages when asked, and leaves
  the generator it was given (the training state) as it was."""
  config, g = _g('dcgan_mnist', data__name='images')
  config.eval.grid_rows = 2
  generate = sampling.make_generate(config)
  seen = []

  def spy(g_state, key, num, labels=None):
    seen.append(g_state)
    return generate(g_state, key, num, labels)

  config.eval.standing_stats = 2
  evaluate.evaluate(config, spy, g, 1, str(tmp_path), mock.Mock())
  want = standing_stats.recompute(config, g, 2).model_state['batch_stats']
  got = seen[-1].model_state['batch_stats']
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(got), jax.tree.leaves(want)))
  assert seen[-1].params is g.params
  assert not any(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(g.model_state), jax.tree.leaves(got)))
  config.eval.standing_stats = 0
  evaluate.evaluate(config, spy, g, 2, str(tmp_path), mock.Mock())
  assert seen[-1] is g
