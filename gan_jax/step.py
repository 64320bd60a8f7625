"""The pure GAN train step: `config.d_steps` D updates, then one G update.

`make_train_step(config)` returns `train_step(state, batches) -> (state,
metrics)` for one device, to be wrapped in `jax.pmap(..., axis_name=AXIS)`.
`batches` holds this device's share of `d_steps` consecutive global batches,
`[d_steps, local_batch, *example_shape]`. Gradients, BatchNorm statistics and
metrics are averaged over all devices of all hosts (`lax.pmean`), and every
random draw is keyed by the example's global index (`gan_jax.rng`), so the step
computes the same thing on any number of devices for the same global batch.

Two orders (`config.updates`):
  'alternating' (default): `d_steps` D updates, each on its own batch, then G's
      gradient through the updated D on fresh noise.
  'simultaneous' (d_steps 1): one G forward and one D pass give both losses,
      both gradients are taken at the same (G, D) and both networks update,
      as the TensorFlow DCGAN tutorial's step does.

D runs on the real and the generated batch in two separate passes (as in
Radford et al.'s code and the PyTorch DCGAN example), so a D with BatchNorm
normalises each by its own statistics, in D's update and in G's alike: G
differentiates the function D was trained as.

The optional pieces, each outside this core and called at one point:
  view       what D sees of a batch: DiffAugment then PacGAN packing
             (`make_view`; gan_jax/augment.py, gan_jax/packing.py)
  penalty    added to D's loss, lazy with `every > 1` (gan_jax/penalties.py)
  clip       WGAN's weight clipping after D's update (losses.weight_clipper)
  acgan      the class head's losses (gan_jax/labels.py)
  guard      the non-finite guard (gan_jax/nonfinite.py)
  ema        the average of G's weights after G's update (gan_jax/ema.py)
The mode-collapse metric is computed at log steps only (gan_jax/diversity.py).

Metrics (of the step's last D update and its G update, averaged over devices):
d_loss, g_loss (the adversarial losses), d_real and d_fake (mean D output on
the real and generated views), d_grad_norm, g_grad_norm, and the pieces' own
(penalty, d_class_loss, g_class_loss, the guard's).
"""
import jax
import jax.numpy as jnp
import optax
from jax import lax

from gan_jax import augment
from gan_jax import ema
from gan_jax import labels as labels_lib
from gan_jax import losses
from gan_jax import nonfinite
from gan_jax import packing
from gan_jax import penalties
from gan_jax import rng
from gan_jax.axis import AXIS

UPDATES = ('alternating', 'simultaneous')


def updates(config) -> str:
  """`config.updates`: 'alternating' (the default) or 'simultaneous'."""
  return config.get('updates', 'alternating')


def run(net, params, x, key, labels=None):
  """A network in training mode: (output, its updated collections).

  Dropout masks are drawn per device (Flax draws them per call), so unlike the
  noise they depend on the device layout; models without dropout ignore them.
  """
  kwargs = {} if labels is None else {'labels': labels}
  key = jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                           lax.axis_index(AXIS))
  return net.apply_fn({'params': params, **net.model_state}, x, train=True,
                      rngs={'dropout': key}, mutable=list(net.model_state),
                      **kwargs)


def generate(config, g, params, key, first, n, labels=None):
  """G's samples for examples `first ... first + n - 1` of the global batch
  (noise keyed by example index): (samples, G's updated collections)."""
  z = rng.normal(rng.example_keys(jax.random.fold_in(key, rng.NOISE), first, n),
                 (config.z_dim,))
  return run(g, params, z, key, labels)


def _mean(a, b):
  return (a + b) / 2 if jnp.issubdtype(a.dtype, jnp.inexact) else b


def discriminate(d, params, real, fake, key, labels=None):
  """D on a real and a generated batch, one pass each, both from D's current
  collections: ((real_logits, real_class), (fake_logits, fake_class),
  D's updated collections). The collections kept are the mean of the two
  passes' (BatchNorm: running averages moved by both batches' statistics;
  spectral norm: both passes' identical power-iteration step)."""
  real_out, real_state = run(d, params, real, jax.random.fold_in(key, 0), labels)
  fake_out, fake_state = run(d, params, fake, jax.random.fold_in(key, 1), labels)
  new_state = jax.tree.map(_mean, real_state, fake_state)
  return (labels_lib.split_d_output(real_out),
          labels_lib.split_d_output(fake_out), new_state)


def make_view(config):
  """`view(x, key, first, stream) -> x'`: what D sees of batch `x` (global
  examples `first`, ...): DiffAugment (`config.augment.policy`) then PacGAN
  packing (`config.d.pack`). `stream` (0 real, 1 generated) keeps the two
  batches' augmentation draws apart."""
  augment_fn = augment.make(config.augment.policy) if 'augment' in config else None
  m = packing.pack_size(config)

  def view(x, key, first, stream):
    if augment_fn is not None:
      key = jax.random.fold_in(jax.random.fold_in(key, rng.AUGMENT), stream)
      x = augment_fn(rng.example_keys(key, first, x.shape[0]), x)
    return packing.pack(x, m)
  return view


def make_train_step(config):
  """Builds the per-device train step for `config` (the module docstring)."""
  loss = losses.get(config.loss.name)
  view = make_view(config)
  penalty = penalties.make(config, loss)
  clip = losses.weight_clipper(config, loss)
  acgan = labels_lib.acgan_weight(config)
  m = packing.pack_size(config)

  def d_loss_fn(d_params, state, real, fake, labels, key, first):
    """D's loss on the views of a real and a generated batch; also returns
    its metrics, D's new collections and the logits G's loss needs."""
    real_in, fake_in = view(real, key, first, 0), view(fake, key, first, 1)
    (real_logits, real_class), (fake_logits, fake_class), d_state = (
        discriminate(state.d, d_params, real_in, fake_in, key, labels))
    d_loss, _ = loss.fn(real_logits, fake_logits)
    metrics = {'d_loss': d_loss, 'd_real': jnp.mean(real_logits),
               'd_fake': jnp.mean(fake_logits)}
    class_term, class_metrics = labels_lib.acgan_d_term(
        acgan, real_class, fake_class, labels)
    d_fn = lambda x: labels_lib.split_d_output(
        run(state.d, d_params, x, key, labels)[0])[0]
    pen_term, pen_metrics = penalty(d_fn, real_in, fake_in, key, first // m,
                                    state.d.step)
    total = d_loss + class_term + pen_term
    return total, ({**metrics, **class_metrics, **pen_metrics}, d_state,
                   (real_logits, fake_logits, fake_class))

  def g_loss_from(real_logits, fake_logits, fake_class, labels):
    """G's loss from D's logits (D's side held fixed): (loss, metrics)."""
    _, g_loss = loss.fn(lax.stop_gradient(real_logits), fake_logits)
    class_term, class_metrics = labels_lib.acgan_g_term(acgan, fake_class,
                                                        labels)
    return g_loss + class_term, {'g_loss': g_loss, **class_metrics}

  def apply_d(state, grads, d_state, metrics):
    """D's update from this device's gradients, averaged over devices."""
    grads, d_state = lax.pmean((grads, d_state), AXIS)
    d = state.d.apply_gradients(grads=grads, model_state=d_state)
    metrics['d_grad_norm'] = optax.tree.norm(grads)
    return state.replace(d=d.replace(params=clip(d.params))), metrics

  def d_update(state, batch, key):
    real, labels = labels_lib.split_batch(batch)
    n = real.shape[0]
    first = lax.axis_index(AXIS) * n
    fake, _ = generate(config, state.g, state.g.params, key, first, n, labels)
    grads, (metrics, d_state, _) = jax.grad(d_loss_fn, has_aux=True)(
        state.d.params, state, real, lax.stop_gradient(fake), labels, key,
        first)
    return apply_d(state, grads, d_state, metrics)

  def alternating_step(state, batches):
    key = jax.random.fold_in(state.key, state.step)
    d_metrics = []
    for j in range(config.d_steps):  # Unrolled: see `unrolled_scan`.
      batch = jax.tree.map(lambda b: b[j], batches)
      state, metrics = d_update(state, batch, jax.random.fold_in(key, j))
      d_metrics.append(metrics)
    real, labels = labels_lib.split_batch(batch)
    n = real.shape[0]
    first = lax.axis_index(AXIS) * n
    key = jax.random.fold_in(key, config.d_steps)

    def g_loss_fn(g_params):
      fake, g_state = generate(config, state.g, g_params, key, first, n, labels)
      # D(real) is its own pass, which XLA removes when g_loss does not use it
      # (every loss here but a relativistic one would).
      (real_logits, _), (fake_logits, fake_class), _ = discriminate(
          state.d, state.d.params, view(real, key, first, 0),
          view(fake, key, first, 1), key, labels)
      g_loss, metrics = g_loss_from(real_logits, fake_logits, fake_class,
                                    labels)
      return g_loss, (g_state, metrics)

    grads, (g_state, g_metrics) = jax.grad(g_loss_fn, has_aux=True)(
        state.g.params)
    return finish(state, d_metrics, grads, g_state, g_metrics)

  def simultaneous_step(state, batches):
    key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 0)
    real, labels = labels_lib.split_batch(jax.tree.map(lambda b: b[0], batches))
    n = real.shape[0]
    first = lax.axis_index(AXIS) * n

    def losses_fn(g_params, d_params):
      fake, g_state = generate(config, state.g, g_params, key, first, n, labels)
      d_loss, (d_metrics, d_state, logits) = d_loss_fn(
          d_params, state, real, fake, labels, key, first)
      g_loss, g_metrics = g_loss_from(*logits, labels)
      return (d_loss, g_loss), (d_metrics, d_state, g_state, g_metrics)

    (d_loss, _), vjp_fn, (d_metrics, d_state, g_state, g_metrics) = jax.vjp(
        losses_fn, state.g.params, state.d.params, has_aux=True)
    one, zero = jnp.ones_like(d_loss), jnp.zeros_like(d_loss)
    _, d_grads = vjp_fn((one, zero))  # d d_loss / d D
    g_grads, _ = vjp_fn((zero, one))  # d g_loss / d G
    state, d_metrics = apply_d(state, d_grads, d_state, d_metrics)
    return finish(state, [d_metrics], g_grads, g_state, g_metrics)

  def finish(state, d_metrics, grads, g_state, g_metrics):
    """G's update, the step's metrics, the non-finite guard and the EMA."""
    grads, g_state = lax.pmean((grads, g_state), AXIS)
    g = state.g.apply_gradients(grads=grads, model_state=g_state)
    d_bad = nonfinite.is_bad(*[v for m in d_metrics
                               for v in (m['d_loss'], m['d_grad_norm'])])
    metrics = lax.pmean(dict(last_metrics(stack(d_metrics)), **g_metrics,
                             g_grad_norm=optax.tree.norm(grads)), AXIS)
    step_no = state.step + 1
    metrics = nonfinite.guard(config, metrics, d_bad, state.d.opt_state,
                              g.opt_state, step_no)
    g_ema = state.g_ema
    if g_ema is not None:
      g_ema = ema.update(config, g_ema, g.params, step_no)
    return state.replace(g=g, step=step_no, g_ema=g_ema), metrics

  if updates(config) == 'simultaneous':
    return simultaneous_step
  return alternating_step


def stack(metrics_list):
  """A list of metric dicts -> one dict of stacked arrays."""
  return jax.tree.map(lambda *m: jnp.stack(m), *metrics_list)


def last_metrics(metrics):
  """The last entry of each stacked metric; for a lazy penalty, its last
  computed value (0 if none was), so the logged value is not a skipped 0."""
  applied = metrics.get(penalties.APPLIED)
  last = jax.tree.map(lambda m: m[-1], metrics)
  if applied is not None:
    index = jnp.max(jnp.where(applied > 0, jnp.arange(applied.shape[0]), -1))
    last['penalty'] = jnp.where(index >= 0, metrics['penalty'][index], 0.)
    last[penalties.APPLIED] = jnp.max(applied)
  return last


def unrolled_scan(f, carry, xs):
  """`lax.scan(f, carry, xs)` as straight-line code, without an XLA loop.

  For short loops. XLA:CPU computes convolution gradients inside a while loop
  several times slower than the same ops outside one (the DCGAN-MNIST step:
  7.1 s vs 0.9 s at batch 64 on 2 cores; benchmarks/README).
  """
  ys = []
  for i in range(jax.tree.leaves(xs)[0].shape[0]):
    carry, y = f(carry, jax.tree.map(lambda x: x[i], xs))
    ys.append(y)
  return carry, stack(ys)


def steps_per_call(config) -> int:
  """Train steps per compiled call on this backend.

  `config.steps_per_call`, or on CPU `config.steps_per_call_on_cpu` when set:
  the image configs set it to 1, since XLA:CPU runs convolution gradients in a
  loop several times slower (see unrolled_scan), and on CPU a call's dispatch
  costs nothing next to a convolutional step.
  """
  on_cpu = config.get('steps_per_call_on_cpu')
  if on_cpu and jax.default_backend() == 'cpu':
    return on_cpu
  return config.steps_per_call


def make_multi_step(config):
  """`multi_step(state, batches) -> (state, metrics of the last step)`.

  `batches` is `[k, d_steps, local_batch, ...]`: k train steps run in one
  compiled call (a `lax.scan`), so small models are not bound by dispatch;
  with k = 1 there is no loop (see `unrolled_scan`).
  """
  train_step = make_train_step(config)

  def multi_step(state, batches):
    if jax.tree.leaves(batches)[0].shape[0] == 1:
      state, metrics = unrolled_scan(train_step, state, batches)
    else:
      state, metrics = lax.scan(train_step, state, batches)
    first_bad = jnp.min(metrics.pop('nonfinite'))
    metrics = last_metrics(metrics)
    metrics.pop(penalties.APPLIED, None)
    metrics['nonfinite'] = first_bad
    return state, metrics

  return multi_step
