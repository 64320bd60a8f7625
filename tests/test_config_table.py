"""The config table of gan_jax/checks.py (FIELDS): every field of every config
has a row, and a bad value is one line that names the field, the value, the
rule and the flag to pass. Also: with nonfinite=skip, an update whose gradient
norm overflows is skipped and counted (gan_jax/state.py make_optimizer)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import checks
from gan_jax import data
from gan_jax import state as state_lib
from gan_jax.errors import UserError
from tests.conftest import tiny_config
from tests.test_fuzz import CONFIGS
from tests.test_fuzz import fields


@pytest.mark.parametrize('name', CONFIGS)
def test_every_field_of_every_config_has_a_row(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert [f for f in fields(config) if f not in checks.FIELDS] == []
  checks.validate(config)  # Fields absent (g.width in image configs) pass.


@pytest.mark.parametrize('field, value', [
    # Accepted before: trained (b1, warmup, std: kl nan) or raised a traceback.
    ('g.optimizer.b1', 1.5),
    ('d.optimizer.b2', 1.0),
    ('g.optimizer.eps', 0.0),
    ('g.optimizer.warmup_steps', -5),
    ('d.optimizer.schedule', 'step'),
    ('data.std', -1.0),
    ('data.radius', 0.0),
    ('data.num_modes', 0),
    ('data.grid_size', 0),
    ('data.grid_spacing', -2.0),
    ('g.width', 0),
    ('d.depth', 0),
    ('g.depth', 2**31 - 1),  # A Python loop of 2**31 layers: a hang.
    ('d_steps', 10**6),  # Unrolled in the step: compiles for hours.
    ('num_steps', 3_000_000_000),  # Beyond the int32 step counter.
    ('batch_size', True),  # A bool is not an int.
    ('z_dim', 2.5),
    ('g.optimizer.lr', float('nan')),
    ('d.optimizer.lr', float('inf')),
    ('checkpoint.keep', 0),
    ('checkpoint.keep_every', -1),
    ('eval.num_samples', 0),
    ('eval.seed', -1),
    ('data.seed', -1),
    ('penalty.weight', -1.0),
    ('ema.start_step', -1),
    ('collapse_threshold', -0.1),
    ('nonfinite', 'ignore'),
    ('dtype', 'float16'),
    ('eval.ema', 'yes'),
    ('conditional.d', 'linear'),
    ('resume_from_step', -3),
])
def test_bad_value_is_one_line_with_field_value_rule_and_flag(field, value):
  config = tiny_config()
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    node = node[part]
  with node.ignore_type():  # As a config file may set it.
    node[leaf] = value
  with pytest.raises(UserError) as error:
    checks.validate(config)
  message = str(error.value)
  assert '\n' not in message
  assert field in message and repr(value) in message and 'must be' in message
  assert f'--config.{field}=' in message


def test_relations_between_fields():
  # D's schedule got 5 * 2**30 updates: an int32 overflow in the first step.
  with pytest.raises(UserError, match=r'num_steps \* d_steps .* below 2\*\*31'):
    checks.validate(tiny_config(num_steps=2**30, d_steps=5))
  with pytest.raises(UserError, match=r'loss.clip must be positive .*'
                     r'wasserstein.*--config.loss.clip='):
    checks.validate(tiny_config(loss__name='wasserstein', loss__clip=0.0))
  checks.validate(tiny_config(loss__clip=0.0))  # Not used by this loss.


def test_toy_data_refuses_more_modes_than_evaluation_can_measure():
  for field, value in (('num_modes', 5000), ('grid_size', 100)):
    config = tiny_config(
        data__name='grid25' if field == 'grid_size' else 'ring8')
    config.data[field] = value
    with pytest.raises(UserError, match=f'--config.data.{field}=N'):
      data.build(config, 16)


def test_skip_drops_and_counts_updates_whose_gradient_norm_overflows():
  """Each entry of [1e38, 1e38] is finite, but its norm (and Adam's square of
  it) is not: before, the update went through with 0 skips counted and left
  Adam's second moment inf, and losses grew to 5e31."""
  tx = state_lib.make_optimizer(tiny_config().g.optimizer, 100,
                                skip_nonfinite=True)
  params = {'w': jnp.zeros(2), 'b': jnp.zeros(())}
  opt_state = tx.init(params)
  huge = {'w': jnp.full(2, 1e38), 'b': jnp.zeros(())}
  assert np.isfinite(huge['w']).all()
  assert not np.isfinite(optax.tree.norm(huge))
  updates, opt_state = jax.jit(tx.update)(huge, opt_state, params)
  assert all(np.all(u == 0) for u in jax.tree.leaves(updates))
  # The counters gan_jax/nonfinite.py logs, in the state checkpoints hold.
  assert isinstance(opt_state, optax.ApplyIfFiniteState)
  assert (int(opt_state.total_notfinite), int(opt_state.notfinite_count)) == (
      1, 1)
  ones = {'w': jnp.ones(2), 'b': jnp.ones(())}
  updates, opt_state = jax.jit(tx.update)(ones, opt_state, params)
  assert all(np.all(np.isfinite(u) & (u != 0))
             for u in jax.tree.leaves(updates))
  assert (int(opt_state.total_notfinite), int(opt_state.notfinite_count)) == (
      1, 0)
