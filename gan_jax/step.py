"""The pure GAN train step: `config.d_steps` D updates, then one G update.

`make_train_step(...)` returns `train_step(state, batch) -> (state, metrics)`
for one device, to be wrapped in `jax.pmap(..., axis_name=AXIS)`. `batch` holds
this device's share of `d_steps` consecutive global batches,
`[d_steps, local_batch, *example_shape]`. Gradients, BatchNorm statistics and
metrics are averaged over all devices of all hosts (`lax.pmean`), and every
random draw is keyed by the example's global index (`gan_jax.rng`), so the step
computes the same thing on any number of devices for the same global batch.
"""
import functools

import jax
import jax.numpy as jnp
import optax
from jax import lax

from gan_jax import losses
from gan_jax import penalties
from gan_jax import rng

AXIS = 'batch'
NO_NONFINITE = jnp.iinfo(jnp.int32).max


def decode_nonfinite(code):
  """(first step, ['d', 'g'] nets) from a `nonfinite` metric, or None."""
  code = int(code)
  if code == NO_NONFINITE:
    return None
  return code // 4, [n for bit, n in ((1, 'd'), (2, 'g')) if code & bit]


def _apply(net, params, x, train, dropout_key):
  """Runs a network; returns (output, updated non-parameter collections)."""
  out, new_model_state = net.apply_fn(
      {'params': params, **net.model_state}, x, train=train,
      rngs={'dropout': dropout_key}, mutable=list(net.model_state.keys()))
  return out, new_model_state


def _dropout_key(key):
  # Dropout masks are drawn per device (Flax draws them per call), so unlike the
  # noise they depend on the device layout; models without dropout ignore this.
  return jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                            lax.axis_index(AXIS))


def opt_counter(opt_state, field):
  """A counter of optax.apply_if_finite's state, as float32 for the logs."""
  return getattr(opt_state, field).astype(jnp.float32)


def make_train_step(config):
  """Builds the per-device train step for `config` (loss, penalty, d_steps)."""
  loss = losses.get(config.loss.name)
  penalty_name = config.penalty.name or loss.penalty
  penalty_fn = penalties.get(penalty_name) if penalty_name else None
  penalty_weight = config.penalty.weight
  clip = config.loss.clip if loss.clip_d_weights else None
  z_dim = config.z_dim

  def generate(g, keys, first_index, batch_size, g_params=None):
    ex_keys = rng.example_keys(jax.random.fold_in(keys, rng.NOISE), first_index,
                               batch_size)
    z = rng.normal(ex_keys, (z_dim,))
    return _apply(g, g.params if g_params is None else g_params, z, True,
                  _dropout_key(keys))

  def d_update(carry, real):
    state, key = carry[0], carry[1]
    j = carry[2]
    local_batch = real.shape[0]
    first = lax.axis_index(AXIS) * local_batch
    k = jax.random.fold_in(key, j)
    fake, _ = generate(state.g, k, first, local_batch)
    fake = lax.stop_gradient(fake)

    def d_loss_fn(d_params):
      both = jnp.concatenate([real, fake])
      logits, new_d_state = _apply(state.d, d_params, both, True, _dropout_key(k))
      real_logits, fake_logits = jnp.split(logits, 2)
      d_loss, _ = loss.fn(real_logits, fake_logits)
      aux = {'d_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
             'd_loss': d_loss}
      if penalty_fn is not None:
        d_fn = lambda x: _apply(state.d, d_params, x, True, _dropout_key(k))[0]
        pen_keys = rng.example_keys(jax.random.fold_in(k, rng.PENALTY), first,
                                    local_batch)
        pen = penalty_fn(d_fn, real, fake, pen_keys)
        d_loss = d_loss + penalty_weight * pen
        aux['penalty'] = pen
      return d_loss, (aux, new_d_state)

    grads, (aux, new_d_state) = jax.grad(d_loss_fn, has_aux=True)(state.d.params)
    grads = lax.pmean(grads, AXIS)
    new_d_state = lax.pmean(new_d_state, AXIS)
    d = state.d.apply_gradients(grads=grads, model_state=new_d_state)
    if clip is not None:
      d = d.replace(params=jax.tree.map(lambda p: jnp.clip(p, -clip, clip), d.params))
    aux['d_grad_norm'] = optax.tree.norm(grads)
    return (state.replace(d=d), key, j + 1), aux

  def train_step(state, batch):
    key = jax.random.fold_in(state.key, state.step)
    (state, _, _), d_metrics = lax.scan(d_update, (state, key, 0), batch)
    d_bad = jnp.any(~jnp.isfinite(d_metrics['d_loss'])
                    | ~jnp.isfinite(d_metrics['d_grad_norm']))
    d_metrics = jax.tree.map(lambda m: m[-1], d_metrics)  # The last D update's.

    local_batch = batch.shape[1]
    first = lax.axis_index(AXIS) * local_batch
    k = jax.random.fold_in(key, config.d_steps)
    real = batch[-1]

    def g_loss_fn(g_params):
      fake, new_g_state = generate(state.g, k, first, local_batch, g_params)
      # D is not updated here, and its statistics from these passes are dropped.
      # D(real) is a separate pass so that XLA removes it when the loss's
      # g_loss does not use it (all losses here but relativistic ones).
      fake_logits, _ = _apply(state.d, state.d.params, fake, True, _dropout_key(k))
      real_logits, _ = _apply(state.d, state.d.params, real, True, _dropout_key(k))
      _, g_loss = loss.fn(lax.stop_gradient(real_logits), fake_logits)
      return g_loss, new_g_state

    (g_loss, new_g_state), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.g.params)
    grads = lax.pmean(grads, AXIS)
    new_g_state = lax.pmean(new_g_state, AXIS)
    g = state.g.apply_gradients(grads=grads, model_state=new_g_state)
    metrics = dict(d_metrics, g_loss=g_loss, g_grad_norm=optax.tree.norm(grads))
    metrics = lax.pmean(metrics, AXIS)
    g_bad = ~jnp.isfinite(metrics['g_loss']) | ~jnp.isfinite(metrics['g_grad_norm'])
    d_bad = lax.pmax(d_bad, AXIS)
    # Non-finite guard: (step number) * 4 + 1 if D and + 2 if G went non-finite
    # in this step, else NO_NONFINITE; the smallest over steps is the first.
    step_no = state.step + 1
    if config.nonfinite == 'skip':  # optax.apply_if_finite counts the skips.
      metrics['d_skipped'] = opt_counter(state.d.opt_state, 'total_notfinite')
      metrics['g_skipped'] = opt_counter(g.opt_state, 'total_notfinite')
      metrics['skipped_in_a_row'] = jnp.maximum(
          opt_counter(state.d.opt_state, 'notfinite_count'),
          opt_counter(g.opt_state, 'notfinite_count'))
      d_bad = g_bad = jnp.array(False)
    metrics['nonfinite'] = jnp.where(
        d_bad | g_bad, step_no * 4 + d_bad.astype(jnp.int32)
        + 2 * g_bad.astype(jnp.int32), NO_NONFINITE)
    return state.replace(g=g, step=step_no), metrics

  return train_step


def make_multi_step(config):
  """`multi_step(state, batches) -> (state, metrics of the last step)`.

  `batches` is `[k, d_steps, local_batch, ...]`: k train steps run in one
  compiled call (a `lax.scan`), so small models are not bound by dispatch.
  """
  train_step = make_train_step(config)

  def multi_step(state, batches):
    state, metrics = lax.scan(train_step, state, batches)
    nonfinite = jnp.min(metrics.pop('nonfinite'))
    metrics = jax.tree.map(lambda m: m[-1], metrics)
    metrics['nonfinite'] = nonfinite
    return state, metrics

  return multi_step


def make_generate(config):
  """`generate(g, key, num) -> samples` for evaluation (eval mode, one device)."""
  @functools.partial(jax.jit, static_argnums=(2,))
  def generate(g, key, num):
    z = jax.random.normal(key, (num, config.z_dim))
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=False)
  return generate
