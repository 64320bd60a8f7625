"""Each loss against values computed by hand on fixed logits."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses
from gan_jax.errors import UserError

REAL = jnp.array([2.0, -1.0])
FAKE = jnp.array([0.5, -3.0])


def sigmoid(x):
  return 1 / (1 + math.exp(-x))


def log_sigmoid(x):
  return math.log(sigmoid(x))


def log_one_minus_sigmoid(x):
  return math.log(1 - sigmoid(x))


def expected(name):
  r, f = [float(v) for v in REAL], [float(v) for v in FAKE]
  mean = lambda xs: sum(xs) / len(xs)
  bce_d = (-mean([log_sigmoid(x) for x in r])
           - mean([log_one_minus_sigmoid(x) for x in f]))
  if name == 'minimax':
    return bce_d, mean([log_one_minus_sigmoid(x) for x in f])
  if name == 'non_saturating':
    return bce_d, -mean([log_sigmoid(x) for x in f])
  if name == 'least_squares':
    return (0.5 * (mean([(x - 1) ** 2 for x in r]) + mean([x ** 2 for x in f])),
            0.5 * mean([(x - 1) ** 2 for x in f]))
  if name in ('wasserstein', 'wgan_gp'):
    return mean(f) - mean(r), -mean(f)
  if name == 'hinge':
    return (mean([max(0, 1 - x) for x in r]) + mean([max(0, 1 + x) for x in f]),
            -mean(f))
  raise KeyError(name)


@pytest.mark.parametrize('name', sorted(losses.LOSSES))
def test_loss_matches_hand_computed_value(name):
  d_loss, g_loss = losses.get(name).fn(REAL, FAKE)
  want_d, want_g = expected(name)
  np.testing.assert_allclose(float(d_loss), want_d, rtol=1e-6)
  np.testing.assert_allclose(float(g_loss), want_g, rtol=1e-6)


def test_hand_values_are_not_trivial():
  # Guards the test above: the hand values differ between losses.
  values = {expected(n) for n in ('minimax', 'non_saturating', 'least_squares',
                                  'wasserstein', 'hinge')}
  assert len(values) == 5


def test_wgan_variants_declare_their_extras():
  assert losses.get('wasserstein').clip_d_weights
  assert losses.get('wgan_gp').penalty == 'gradient_penalty'
  assert losses.get('non_saturating').penalty is None


def test_unknown_loss_lists_the_valid_names():
  with pytest.raises(UserError, match='hinge.*non_saturating'):
    losses.get('nope')


def test_register_adds_a_loss_and_refuses_duplicates():
  @losses.register('test_only_loss')
  def _fn(real, fake):
    return jnp.mean(fake), -jnp.mean(fake)
  try:
    assert losses.get('test_only_loss').fn is _fn
    with pytest.raises(ValueError):
      losses.register('test_only_loss')(_fn)
  finally:
    del losses.LOSSES['test_only_loss']


@pytest.mark.parametrize('loss,penalty,want', [
    ('non_saturating', '', None),
    ('wgan_gp', '', 'gradient_penalty'),
    ('hinge', 'gradient_penalty', 'gradient_penalty'),
    ('non_saturating', 'r1', 'r1'),
    ('wgan_gp', 'r1', 'r1'),  # A named penalty replaces the loss's own.
])
def test_any_penalty_goes_with_any_loss(loss, penalty, want):
  from gan_jax import penalties  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(f'loss={loss}', penalty__name=penalty)
  assert penalties.penalty_name(config, losses.get(loss)) == want
