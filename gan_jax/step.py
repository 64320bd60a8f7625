"""The pure GAN train step: `config.d_steps` D updates, then one G update.

With `config.updates='simultaneous'` (d_steps 1) the D and G updates are
simultaneous instead: one G forward and one D pass give both losses, both
gradients are taken at the same (G, D) and both networks update, as the
TensorFlow DCGAN tutorial's step does (and "simultaneous gradient descent" in
the analyses of Mescheder et al. 2017); the default 'alternating' updates D
first and takes G's gradient through the updated D on fresh noise.

`make_train_step(...)` returns `train_step(state, batch) -> (state, metrics)`
for one device, to be wrapped in `jax.pmap(..., axis_name=AXIS)`. `batch` holds
this device's share of `d_steps` consecutive global batches,
`[d_steps, local_batch, *example_shape]`. Gradients, BatchNorm statistics and
metrics are averaged over all devices of all hosts (`lax.pmean`), and every
random draw is keyed by the example's global index (`gan_jax.rng`), so the step
computes the same thing on any number of devices for the same global batch.

What D sees of a batch (real or generated, in both updates) is its *view*:
the batch augmented (`config.augment.policy`, DiffAugment, `gan_jax.augment`)
then packed (`config.d.pack`, PacGAN). The penalty (`config.penalty`, lazy
with `every > 1`) is taken on the views. After the G update, the EMA of G's
parameters (`config.ema`) is updated when the state has one.

Metrics (of the step's last D update and its G update, averaged over devices):
d_loss, g_loss, d_real and d_fake (mean D output on the real and generated
views), penalty (0 on the D updates a lazy penalty skips), d_grad_norm and
g_grad_norm (global L2 norm of each network's gradient), diversity_ratio (the
mode-collapse signal: mean pairwise L2 distance within the generated global
batch over that within the real one, ~1 when G covers the data, -> 0 when it
collapses), and the non-finite guard's fields.
"""
import functools
import math

import jax
import jax.numpy as jnp
import optax
from jax import lax

from gan_jax import augment
from gan_jax import losses
from gan_jax import penalties
from gan_jax import rng
from gan_jax.errors import UserError

AXIS = 'batch'
NO_NONFINITE = jnp.iinfo(jnp.int32).max


def decode_nonfinite(code):
  """(first step, ['d', 'g'] nets) from a `nonfinite` metric, or None."""
  code = int(code)
  if code == NO_NONFINITE:
    return None
  return code // 4, [n for bit, n in ((1, 'd'), (2, 'g')) if code & bit]


def _apply(net, params, x, train, dropout_key, labels=None):
  """Runs a network; returns (output, updated non-parameter collections)."""
  kwargs = {} if labels is None else {'labels': labels}
  out, new_model_state = net.apply_fn(
      {'params': params, **net.model_state}, x, train=train,
      rngs={'dropout': dropout_key}, mutable=list(net.model_state.keys()),
      **kwargs)
  return out, new_model_state


def num_classes(config) -> int:
  """`config.num_classes`: 0 unconditional, else class-conditional G and D."""
  return config.get('num_classes', 0) or 0


def split_d_output(out):
  """(logits, class_logits or None) of what a discriminator returned: an
  ACGAN head (gan_jax/models/conditional.py) adds class logits."""
  return out if isinstance(out, tuple) else (out, None)


def split_batch(batch):
  """(images, labels) of a batch; labels is None when unconditional."""
  return batch if isinstance(batch, tuple) else (batch, None)


def class_loss(class_logits, labels):
  """Mean cross-entropy of an ACGAN head (None without one)."""
  if class_logits is None:
    return None
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      class_logits, labels))


def _dropout_key(key):
  # Dropout masks are drawn per device (Flax draws them per call), so unlike the
  # noise they depend on the device layout; models without dropout ignore this.
  return jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                            lax.axis_index(AXIS))


def opt_counter(opt_state, field):
  """A counter of optax.apply_if_finite's state, as float32 for the logs."""
  return getattr(opt_state, field).astype(jnp.float32)


def pack_size(config) -> int:
  """`config.d.pack`, 1 (no packing) when absent."""
  return config.d.get('pack', 1)


def packed_shape(example_shape, m):
  """The shape of one packed example: images stack the m examples' channels
  ([H, W, m*C]), other data concatenates them flattened ([m * size])."""
  example_shape = tuple(example_shape)
  if m == 1:
    return example_shape
  if len(example_shape) == 3:
    return (*example_shape[:2], m * example_shape[2])
  return (m * math.prod(example_shape),)


def pack(x, m):
  """PacGAN (Lin et al. 2018): [B, *example] -> [B / m, *packed_shape].

  Examples j*m ... j*m + m - 1 form pack j; with per-device batches that m
  divides, the packs are the same on any number of devices.
  """
  if m == 1:
    return x
  b = x.shape[0]
  if b % m:
    raise UserError(f'd.pack={m} must divide the per-device batch, which is '
                    f'{b}; pick a batch_size that is a multiple of m times the '
                    'number of devices')
  if x.ndim == 4:
    _, h, w, c = x.shape
    x = x.reshape(b // m, m, h, w, c)
    return jnp.moveaxis(x, 1, 3).reshape(b // m, h, w, m * c)
  return x.reshape(b // m, -1)


def ema_decay(config) -> float:
  """`config.ema.decay`, 0 (off) when absent."""
  ema = config.get('ema')
  return float(ema.decay) if ema is not None else 0.


def update_ema(config, ema_params, params, step):
  """The EMA of G's parameters after the G update of GAN step `step` (1-based).

  Until `config.ema.start_step` steps are done the average copies G; after,
  ema <- decay * ema + (1 - decay) * params (`optax.incremental_update`): an
  exponential moving average of the iterates (Yazici et al. 2019, "The
  Unusual Effectiveness of Averaging in GAN Training"; Karras et al. 2018;
  BigGAN, Brock et al. 2019, which starts it late).
  """
  decay = jnp.where(step > config.ema.start_step, ema_decay(config), 0.)
  return optax.incremental_update(params, ema_params, 1. - decay)


# Added under square roots of squared distances (finite, defined at 0).
DIST_EPS = 1e-12


def mean_pairwise_distance(x):
  """Mean L2 distance between the distinct pairs of examples of `x`."""
  n = x.shape[0]
  x = x.reshape(n, -1).astype(jnp.float32)
  sq = jnp.sum(x ** 2, axis=-1)
  gram = jnp.matmul(x, x.T, precision=lax.Precision.HIGHEST)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2. * gram, 0.)
  off_diagonal = 1. - jnp.eye(n, dtype=jnp.float32)
  return jnp.sum(jnp.sqrt(d2 + DIST_EPS) * off_diagonal) / (n * (n - 1))


def diversity_ratio(fake, real):
  """mean_pairwise_distance(fake) / mean_pairwise_distance(real).

  A cheap mode-collapse alarm in the spirit of the minibatch features of
  Salimans et al. 2016 and the pairwise diversity of Lin et al. 2018: near 1
  when the generated batch is as spread out as the real one, near 0 when G
  collapses to a point.
  """
  return (mean_pairwise_distance(fake)
          / jnp.maximum(mean_pairwise_distance(real), DIST_EPS))


# With a lazy penalty, the metric flagging the updates that computed it.
PENALTY_APPLIED = 'penalty_applied'


def _last(metrics):
  """The last entry of each stacked metric; for a lazy penalty, its last
  computed value (0 if none was), so the logged value is not a skipped 0."""
  applied = metrics.get(PENALTY_APPLIED)
  last = jax.tree.map(lambda m: m[-1], metrics)
  if applied is not None:
    n = applied.shape[0]
    index = jnp.max(jnp.where(applied > 0, jnp.arange(n), -1))
    last['penalty'] = jnp.where(index >= 0, metrics['penalty'][index], 0.)
    last[PENALTY_APPLIED] = jnp.max(applied)
  return last


def unrolled_scan(f, carry, xs):
  """`lax.scan(f, carry, xs)` as straight-line code, without an XLA loop.

  For short loops (the d_steps updates). XLA:CPU computes convolution gradients
  inside a while loop several times slower than the same ops outside one (the
  DCGAN-MNIST step: 7.1 s vs 0.9 s at batch 64 on 2 cores; benchmarks/README).
  """
  ys = []
  for i in range(jax.tree.leaves(xs)[0].shape[0]):
    carry, y = f(carry, jax.tree.map(lambda x: x[i], xs))
    ys.append(y)
  return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)


UPDATES = ('alternating', 'simultaneous')


def updates(config) -> str:
  """`config.updates`: 'alternating' (the default) or 'simultaneous'."""
  return config.get('updates', 'alternating')


def make_train_step(config):
  """Builds the per-device train step for `config` (loss, penalty, d_steps,
  updates, augmentation, packing, EMA)."""
  loss = losses.get(config.loss.name)
  penalty_name = penalties.penalty_name(config, loss)
  penalty_fn = penalties.get(penalty_name) if penalty_name else None
  penalty_weight = config.penalty.weight
  penalty_every = config.penalty.get('every', 1)
  clip = config.loss.clip if loss.clip_d_weights else None
  z_dim = config.z_dim
  m = pack_size(config)
  augment_fn = augment.make(config.augment.policy) if 'augment' in config else None
  acgan_weight = (config.conditional.acgan_weight
                  if num_classes(config) and config.conditional.d == 'acgan'
                  else 0.)

  def d_view(x, k, first, stream):
    """What D sees of the batch `x` (examples `first`, ...): augmented, packed.

    `stream` (0: real, 1: generated) keeps the two batches' draws apart.
    """
    if augment_fn is not None:
      keys = rng.example_keys(
          jax.random.fold_in(jax.random.fold_in(k, rng.AUGMENT), stream),
          first, x.shape[0])
      x = augment_fn(keys, x)
    return pack(x, m)

  def generate(g, keys, first_index, batch_size, labels, g_params=None):
    """G's samples for the given labels (None: unconditional)."""
    ex_keys = rng.example_keys(jax.random.fold_in(keys, rng.NOISE), first_index,
                               batch_size)
    z = rng.normal(ex_keys, (z_dim,))
    return _apply(g, g.params if g_params is None else g_params, z, True,
                  _dropout_key(keys), labels)

  def d_objective(state, d_params, real_in, fake_in, labels, k, first):
    """D's loss on the views of a real and a generated batch, in one D pass
    over both: (d_loss, (aux, new_d_state, (real_logits, fake_logits,
    fake_class_logits)))."""
    both = jnp.concatenate([real_in, fake_in])
    out, new_d_state = _apply(
        state.d, d_params, both, True, _dropout_key(k),
        None if labels is None else jnp.concatenate([labels, labels]))
    logits, class_logits = split_d_output(out)
    real_logits, fake_logits = jnp.split(logits, 2)
    fake_class = None
    d_loss, _ = loss.fn(real_logits, fake_logits)
    aux = {'d_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
           'd_loss': d_loss}
    if class_logits is not None:  # ACGAN: classify real and fake.
      real_class, fake_class = jnp.split(class_logits, 2)
      aux['d_class_loss'] = (class_loss(real_class, labels)
                             + class_loss(fake_class, labels))
      aux['d_class_acc'] = jnp.mean(jnp.argmax(real_class, -1) == labels)
      d_loss = d_loss + acgan_weight * aux['d_class_loss']
    if penalty_fn is not None:
      d_fn = lambda x: split_d_output(_apply(
          state.d, d_params, x, True, _dropout_key(k), labels)[0])[0]
      # One key per packed example (real_in is packed), by its global index.
      pen_keys = rng.example_keys(jax.random.fold_in(k, rng.PENALTY),
                                  first // m, real_in.shape[0])
      term, pen = penalties.lazy(
          lambda: penalty_fn(d_fn, real_in, fake_in, pen_keys, axis_name=AXIS),
          state.d.step, penalty_every, penalty_weight)
      d_loss = d_loss + term
      aux['penalty'] = pen
      if penalty_every > 1:
        aux[PENALTY_APPLIED] = (state.d.step % penalty_every == 0).astype(
            jnp.float32)
    return d_loss, (aux, new_d_state, (real_logits, fake_logits, fake_class))

  def g_objective(real_logits, fake_logits, fake_class, labels):
    """G's loss on D's logits of a generated (and the real) batch:
    (g_loss, the parts logged)."""
    _, g_loss = loss.fn(lax.stop_gradient(real_logits), fake_logits)
    parts = {'g_loss': g_loss}
    if fake_class is not None:  # ACGAN: G wants its fakes classified right.
      parts['g_class_loss'] = class_loss(fake_class, labels)
      g_loss = g_loss + acgan_weight * parts['g_class_loss']
    return g_loss, parts

  def apply_d(state, grads, new_d_state, aux):
    """D's update from this device's gradients (averaged over devices)."""
    grads = lax.pmean(grads, AXIS)
    new_d_state = lax.pmean(new_d_state, AXIS)
    d = state.d.apply_gradients(grads=grads, model_state=new_d_state)
    if clip is not None:
      d = d.replace(params=jax.tree.map(lambda p: jnp.clip(p, -clip, clip), d.params))
    aux['d_grad_norm'] = optax.tree.norm(grads)
    return state.replace(d=d), aux

  def d_update(carry, real):
    state, key = carry[0], carry[1]
    j = carry[2]
    # Fakes are generated for the labels of the real batch (conditional).
    real, labels = split_batch(real)
    local_batch = real.shape[0]
    first = lax.axis_index(AXIS) * local_batch
    k = jax.random.fold_in(key, j)
    fake, _ = generate(state.g, k, first, local_batch, labels)
    fake = lax.stop_gradient(fake)
    real_in = d_view(real, k, first, 0)
    fake_in = d_view(fake, k, first, 1)
    grads, (aux, new_d_state, _) = jax.grad(
        lambda p: d_objective(state, p, real_in, fake_in, labels, k, first),
        has_aux=True)(state.d.params)
    state, aux = apply_d(state, grads, new_d_state, aux)
    return (state, key, j + 1), aux

  def d_is_bad(d_metrics):
    return jnp.any(~jnp.isfinite(d_metrics['d_loss'])
                   | ~jnp.isfinite(d_metrics['d_grad_norm']))

  def alternating_step(state, batch):
    key = jax.random.fold_in(state.key, state.step)
    (state, _, _), d_metrics = unrolled_scan(d_update, (state, key, 0), batch)
    d_bad = d_is_bad(d_metrics)
    d_metrics = _last(d_metrics)  # The last D update's.

    real, labels = split_batch(jax.tree.map(lambda b: b[-1], batch))
    local_batch = real.shape[0]
    first = lax.axis_index(AXIS) * local_batch
    k = jax.random.fold_in(key, config.d_steps)

    def g_loss_fn(g_params):
      fake, new_g_state = generate(state.g, k, first, local_batch, labels,
                                   g_params)
      # D is not updated here, and its statistics from these passes are dropped.
      # D(real) is a separate pass so that XLA removes it when the loss's
      # g_loss does not use it (all losses here but relativistic ones). The
      # augmentation is differentiable, so G's gradient flows through it.
      fake_out, _ = _apply(state.d, state.d.params, d_view(fake, k, first, 1),
                           True, _dropout_key(k), labels)
      real_out, _ = _apply(state.d, state.d.params, d_view(real, k, first, 0),
                           True, _dropout_key(k), labels)
      fake_logits, fake_class = split_d_output(fake_out)
      real_logits, _ = split_d_output(real_out)
      g_loss, parts = g_objective(real_logits, fake_logits, fake_class, labels)
      return g_loss, (new_g_state, fake, parts)

    (_, (new_g_state, fake, g_parts)), grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.g.params)
    return finish(state, d_metrics, d_bad, grads, new_g_state, g_parts, fake,
                  real)

  def simultaneous_step(state, batch):
    """One G forward and one D pass give both losses; both gradients are
    taken at the same (G, D), then both networks update (the TensorFlow
    DCGAN tutorial's step; d_steps is 1)."""
    key = jax.random.fold_in(state.key, state.step)
    real, labels = split_batch(jax.tree.map(lambda b: b[0], batch))
    local_batch = real.shape[0]
    first = lax.axis_index(AXIS) * local_batch
    k = jax.random.fold_in(key, 0)

    def losses_fn(g_params, d_params):
      fake, new_g_state = generate(state.g, k, first, local_batch, labels,
                                   g_params)
      d_loss, (aux, new_d_state, logits) = d_objective(
          state, d_params, d_view(real, k, first, 0),
          d_view(fake, k, first, 1), labels, k, first)
      g_loss, g_parts = g_objective(*logits, labels)
      return (d_loss, g_loss), (aux, new_d_state, new_g_state, g_parts, fake)

    (d_loss, _), vjp_fn, (aux, new_d_state, new_g_state, g_parts, fake) = (
        jax.vjp(losses_fn, state.g.params, state.d.params, has_aux=True))
    one, zero = jnp.ones_like(d_loss), jnp.zeros_like(d_loss)
    _, d_grads = vjp_fn((one, zero))  # d d_loss / d D
    g_grads, _ = vjp_fn((zero, one))  # d g_loss / d G
    state, d_metrics = apply_d(state, d_grads, new_d_state, aux)
    return finish(state, d_metrics, d_is_bad(d_metrics), g_grads, new_g_state,
                  g_parts, fake, real)

  def finish(state, d_metrics, d_bad, grads, new_g_state, g_parts, fake, real):
    """G's update from its gradients, the metrics, the non-finite guard, the
    EMA: the end of either step."""
    grads = lax.pmean(grads, AXIS)
    new_g_state = lax.pmean(new_g_state, AXIS)
    g = state.g.apply_gradients(grads=grads, model_state=new_g_state)
    # The losses logged are the adversarial ones; a penalty and ACGAN's class
    # losses are logged apart (penalty, d_class_loss, g_class_loss).
    metrics = dict(d_metrics, **g_parts, g_grad_norm=optax.tree.norm(grads))
    metrics = lax.pmean(metrics, AXIS)
    # Over the global batch (gathered), so the value does not depend on the
    # device count.
    metrics['diversity_ratio'] = diversity_ratio(
        lax.all_gather(lax.stop_gradient(fake), AXIS, tiled=True),
        lax.all_gather(real, AXIS, tiled=True))
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
    g_ema = state.g_ema
    if g_ema is not None:
      g_ema = update_ema(config, g_ema, g.params, step_no)
    return state.replace(g=g, step=step_no, g_ema=g_ema), metrics

  if updates(config) == 'simultaneous':
    return simultaneous_step
  return alternating_step


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
  with k = 1 there is no loop (see `steps_per_call` in train.py).
  """
  train_step = make_train_step(config)

  def multi_step(state, batches):
    if jax.tree.leaves(batches)[0].shape[0] == 1:  # No loop: see unrolled_scan.
      state, metrics = unrolled_scan(train_step, state, batches)
    else:
      state, metrics = lax.scan(train_step, state, batches)
    nonfinite = jnp.min(metrics.pop('nonfinite'))
    metrics = _last(metrics)
    metrics.pop(PENALTY_APPLIED, None)
    metrics['nonfinite'] = nonfinite
    return state, metrics

  return multi_step


def eval_labels(config, num):
  """Labels for `num` evaluation samples: 0, 1, ..., N-1, 0, 1, ... (class
  balanced), or None when unconditional."""
  n = num_classes(config)
  return jnp.arange(num, dtype=jnp.int32) % n if n else None


def make_generate(config):
  """`generate(g, key, num, labels=None) -> samples` for evaluation (eval mode,
  one device); a conditional G without labels gets `eval_labels`."""
  @functools.partial(jax.jit, static_argnums=(2,))
  def generate(g, key, num, labels=None):
    z = jax.random.normal(key, (num, config.z_dim))
    if labels is None:
      labels = eval_labels(config, num)
    kwargs = {} if labels is None else {'labels': labels}
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=False,
                      **kwargs)
  return generate
