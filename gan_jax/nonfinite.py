"""The non-finite guard: which step first made a loss or gradient non-finite.

The step reports one int32 metric, `nonfinite`: (step number) * 4, + 1 if D
and + 2 if G went non-finite in that step, or NO_NONFINITE; the smallest over
several steps is the first bad one, so the host checks it only at log and
save steps (`decode`) and never saves a bad state. With
`config.nonfinite='skip'`, `optax.apply_if_finite` drops bad updates instead
(gan_jax/state.py) and the step logs its counters.
"""
import jax.numpy as jnp
from jax import lax

from gan_jax.axis import AXIS

NO_NONFINITE = jnp.iinfo(jnp.int32).max


def is_bad(*values):
  """Whether any of `values` (arrays) has a non-finite entry."""
  return jnp.any(jnp.stack([jnp.any(~jnp.isfinite(v)) for v in values]))


def _counter(opt_state, field):
  return getattr(opt_state, field).astype(jnp.float32)


def guard(config, metrics, d_bad, d_opt_state, g_opt_state, step_no):
  """Adds `nonfinite` (and with 'skip', the skip counters) to `metrics`.

  `metrics` are averaged over devices already; `d_bad` is this device's flag
  for the step's D updates; the optimizer states are after the updates.
  """
  g_bad = is_bad(metrics['g_loss'], metrics['g_grad_norm'])
  d_bad = lax.pmax(d_bad, AXIS)
  if config.nonfinite == 'skip':
    metrics['d_skipped'] = _counter(d_opt_state, 'total_notfinite')
    metrics['g_skipped'] = _counter(g_opt_state, 'total_notfinite')
    metrics['skipped_in_a_row'] = jnp.maximum(
        _counter(d_opt_state, 'notfinite_count'),
        _counter(g_opt_state, 'notfinite_count'))
    d_bad = g_bad = jnp.array(False)
  code = step_no * 4 + d_bad.astype(jnp.int32) + 2 * g_bad.astype(jnp.int32)
  metrics['nonfinite'] = jnp.where(d_bad | g_bad, code, NO_NONFINITE)
  return metrics


def decode(code):
  """(first step, ['d', 'g'] nets) from a `nonfinite` metric, or None."""
  code = int(code)
  if code == NO_NONFINITE:
    return None
  return code // 4, [n for bit, n in ((1, 'd'), (2, 'g')) if code & bit]
