"""The research toolbox: norms, EMA, TTUR, DiffAugment, packing, diagnostics,
dtype, and the train step with all of them on (GitHub issue 6).

Hand-computed or reference values throughout; the step is called directly
(pmapped over one device) instead of launching runs, to stay fast.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.jax_utils import replicate
from flax.jax_utils import unreplicate

from gan_jax import augment
from gan_jax import checkpoint
from gan_jax import checks
from gan_jax import diversity
from gan_jax import ema as ema_lib
from gan_jax import evaluate
from gan_jax import models
from gan_jax import packing
from gan_jax import rng
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from gan_jax.errors import UserError
from gan_jax.models import mlp
from tests.conftest import tiny_config

IMAGE = (8, 8, 1)  # Image-shaped data for the MLP: cheap to compile.


def build_state(config, example_shape=(2,)):
  g, d = models.build(config, example_shape)
  return state_lib.create(config, g, d, example_shape)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# --- The train step with every option on ----------------------------------


@pytest.fixture(scope='module')
def full_step():
  """One step: d_steps=2, lazy R1 (every 2), pack 2, spectral-norm D, EMA 0.5,
  DiffAugment, on 8x8x1 images with the MLP."""
  config = tiny_config(d_steps=2, penalty__name='r1', penalty__every=2,
                       d__pack=2, d__norm='spectral', ema__decay=0.5,
                       augment__policy='color,translation,cutout')
  config.g.width = config.d.width = 16
  init = build_state(config, IMAGE)
  batch = np.random.default_rng(0).uniform(
      -1, 1, (1, config.d_steps, config.batch_size, *IMAGE)).astype(np.float32)
  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS)
  new, metrics = p_step(replicate(init), jnp.asarray(batch))
  return config, init, unreplicate(new), jax.device_get(unreplicate(metrics))


def test_step_counts_d_steps_updates_of_d_per_g_update(full_step):
  _, _, new, _ = full_step
  assert (int(new.step), int(new.d.step), int(new.g.step)) == (1, 2, 1)


def test_step_metrics_are_logged_and_finite(full_step):
  _, _, _, metrics = full_step
  for name in ('d_loss', 'g_loss', 'd_real', 'd_fake', 'd_grad_norm',
               'g_grad_norm', 'penalty'):
    assert np.isfinite(metrics[name]), name
  # Not in the step: the train loop computes it at log steps only.
  assert 'diversity_ratio' not in metrics
  assert metrics['d_grad_norm'] > 0 and metrics['g_grad_norm'] > 0
  # Lazy R1 every 2: the first D update (count 0) computed it, the second did
  # not; the logged value is the computed one.
  assert metrics['penalty_applied'] == 1.0 and metrics['penalty'] > 0


def test_step_packs_d_input_and_keeps_spectral_norm_state(full_step):
  _, init, new, _ = full_step
  # D's first layer takes 2 packed 8x8x1 images.
  assert new.d.params['MLP_0']['Dense_0']['kernel'].shape[0] == 2 * 64
  stats = new.d.model_state['batch_stats']['MLP_0']
  assert set(stats['SpectralNorm_0']) == {'Dense_0/kernel/u',
                                          'Dense_0/kernel/sigma'}
  # The power iteration advanced in the step (and is in the state pytree).
  assert not all(np.array_equal(a, b) for a, b in
                 zip(leaves(init.d.model_state), leaves(new.d.model_state)))


def test_step_updates_the_ema_of_g(full_step):
  _, init, new, _ = full_step
  # start_step 0, decay 0.5: ema = 0.5 * init + 0.5 * params after step 1.
  for e, p0, p1 in zip(leaves(new.g_ema), leaves(init.g.params),
                       leaves(new.g.params)):
    np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p1, rtol=1e-6, atol=1e-7)
  sampled = state_lib.sampling_generator(new)
  assert all(np.array_equal(a, b) for a, b in
             zip(leaves(sampled.params), leaves(new.g_ema)))
  assert sampled.model_state is new.g.model_state
  assert state_lib.sampling_generator(new, ema=False) is new.g
  config = tiny_config(ema__decay=0.5)
  g, tag = evaluate.generator(config, new)
  assert tag == '' and g.params is new.g_ema
  config.eval.ema = False  # The trained G, tagged.
  assert evaluate.generator(config, new) == (new.g, '_raw')


# --- EMA ------------------------------------------------------------------


def test_update_ema_copies_until_start_step_then_averages():
  config = tiny_config(ema__decay=0.9, ema__start_step=3)
  ema, params = {'w': jnp.array([1.0])}, {'w': jnp.array([2.0])}
  assert float(ema_lib.update(config, ema, params, 3)['w'][0]) == 2.0
  np.testing.assert_allclose(
      float(ema_lib.update(config, ema, params, 4)['w'][0]),
      0.9 * 1.0 + 0.1 * 2.0, rtol=1e-6)


def test_ema_off_keeps_the_state_tree_and_samples_from_g():
  state = build_state(tiny_config())
  assert state.g_ema is None
  assert state_lib.sampling_generator(state) is state.g
  with_ema = build_state(tiny_config(ema__decay=0.99))
  assert len(jax.tree.leaves(with_ema)) == (
      len(jax.tree.leaves(state)) + len(jax.tree.leaves(state.g.params)))


def test_ema_is_checkpointed(tmp_path):
  config = tiny_config(ema__decay=0.99)
  state = build_state(config)
  state = state.replace(g_ema=jax.tree.map(lambda p: p + 1., state.g_ema))
  ckpt = checkpoint.Checkpointer(str(tmp_path), config)
  ckpt.save(5, state, {'batch_index': 5}, config)
  ckpt.wait()
  restored, _ = ckpt.restore(5, build_state(config))
  ckpt.close()
  assert all(np.array_equal(a, b) for a, b in
             zip(leaves(state.g_ema), leaves(restored.g_ema)))


# --- TTUR and schedules ---------------------------------------------------


def test_ttur_learning_rates_are_per_network():
  # Adam's first update is -lr * sign(grad), so each net moves by its own lr.
  config = tiny_config()
  config.g.optimizer.lr, config.d.optimizer.lr = 1e-4, 4e-4
  config.g.optimizer.schedule = config.d.optimizer.schedule = 'constant'
  state = build_state(config)
  for net, lr in ((state.g, 1e-4), (state.d, 4e-4)):
    grads = jax.tree.map(jnp.ones_like, net.params)
    moved = net.apply_gradients(grads=grads)
    for before, after in zip(leaves(net.params), leaves(moved.params)):
      np.testing.assert_allclose(after - before, -lr, rtol=1e-3)


def test_d_schedule_counts_d_steps_updates_per_step():
  config = tiny_config(num_steps=10, d_steps=5)
  lr = state_lib.learning_rate(config.d.optimizer, config.num_steps * 5)
  assert float(lr(0)) == pytest.approx(config.d.optimizer.lr)
  assert float(lr(25)) == pytest.approx(config.d.optimizer.lr / 2)
  assert float(lr(50)) == 0.


# --- Normalisation --------------------------------------------------------


@pytest.mark.parametrize('norm,collections', [
    ('none', set()), ('batch', {'batch_stats'}), ('layer', set()),
    ('spectral', {'batch_stats'})])
def test_mlp_norms(norm, collections):
  config = tiny_config(g__norm=norm, d__norm=norm)
  state = build_state(config)
  for net in (state.g, state.d):
    assert set(net.model_state) == collections
  assert checks.uses_batch_norm(state.d.model_state) == (norm == 'batch')
  has_layer_norm = 'LayerNorm_0' in state.d.params['MLP_0']
  assert has_layer_norm == (norm == 'layer')


def test_spectral_norm_estimates_the_largest_singular_value():
  module = mlp.Discriminator(8, 1, norm='spectral')
  x = jnp.ones((2, 5))
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  stats = variables['batch_stats']
  for _ in range(30):  # Power iteration, one step per training call.
    _, updates = module.apply({**variables, 'batch_stats': stats}, x,
                              train=True, mutable=['batch_stats'])
    stats = updates['batch_stats']
  kernel = np.asarray(variables['params']['MLP_0']['Dense_0']['kernel'])
  sigma = float(stats['MLP_0']['SpectralNorm_0']['Dense_0/kernel/sigma'])
  np.testing.assert_allclose(sigma, np.linalg.svd(kernel)[1][0], rtol=1e-4)


def test_gradient_penalty_refuses_batch_norm_in_d():
  with pytest.raises(UserError, match="penalty 'r1'.*BatchNorm.*d.norm"):
    build_state(tiny_config(d__norm='batch', penalty__name='r1'))
  with pytest.raises(UserError, match='gradient_penalty.*BatchNorm'):
    build_state(tiny_config('loss=wgan_gp', d__norm='batch'))
  # BatchNorm in G only, and spectral norm in D (its vectors are also in
  # 'batch_stats'), are fine.
  build_state(tiny_config('loss=wgan_gp', g__norm='batch', d__norm='spectral'))


def test_uses_batch_norm_tells_batch_norm_from_spectral_norm():
  sngan_like = {'batch_stats': {'DBlock_0': {'SpectralNorm_0': {
      'Conv_0/kernel/u': 0, 'Conv_0/kernel/sigma': 0}}}}
  bn = {'batch_stats': {'BatchNorm_0': {'mean': 0, 'var': 0}}}
  assert not checks.uses_batch_norm(sngan_like)
  assert not checks.uses_batch_norm({})
  assert checks.uses_batch_norm(bn)
  assert checks.uses_batch_norm(flax.core.freeze(bn))


def test_dcgan_d_norm_switch_and_penalty_check():
  config = tiny_config('loss=wgan_gp', model='dcgan')
  config.g.channels = config.d.channels = 4
  with pytest.raises(UserError, match="d.norm to 'layer'"):
    build_state(config, (32, 32, 3))  # dcgan's D has BatchNorm by default.
  for norm in ('layer', 'spectral', 'none'):
    config.d.norm = norm
    _, d = models.build(config, (32, 32, 3))
    # Shapes only (no compute): which collections D has.
    variables = jax.eval_shape(lambda d=d: d.init(
        jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), train=False))
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    assert set(model_state) == ({'batch_stats'} if norm == 'spectral' else set())
    checks.check_gradient_penalty(config, model_state)  # Does not raise.


# --- DiffAugment ----------------------------------------------------------


def test_shift_fills_with_zeros():
  x = jnp.arange(1., 6.)
  np.testing.assert_array_equal(augment._shift(x, 2, 0), [3, 4, 5, 0, 0])
  np.testing.assert_array_equal(augment._shift(x, -1, 0), [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(augment._shift(x, 0, 0), x)


def test_randint_from_a_uniform_draw():
  u = jnp.array([0., 0.199, 0.2, 0.5, 0.9999999])
  np.testing.assert_array_equal(augment._randint(u, -2, 3), [-2, -2, -1, 0, 2])


def test_translation_against_numpy():
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 2))
  # Shifts of up to round(16 / 8) = 2: u = 0.1 -> -2, u = 0.7 -> +1.
  want = np.zeros((16 + 4, 16 + 4, 2), np.float32)
  want[2:18, 2:18] = np.asarray(x)
  want = want[2 - 2:18 - 2, 2 + 1:18 + 1]
  np.testing.assert_array_equal(
      augment.translation(jnp.array([0.1, 0.7]), x), want)


def test_cutout_zeroes_a_half_size_square():
  x = jnp.ones((8, 8, 3))
  # A 4x4 square centred at (u * 9) - 2: u = 0.5 -> rows 2..5; u = 0.0 ->
  # columns -2..1, of which 0..1 are in the image.
  want = np.ones((8, 8, 3), np.float32)
  want[2:6, 0:2] = 0
  np.testing.assert_array_equal(augment.cutout(jnp.array([0.5, 0.0]), x), want)
  for u in np.random.default_rng(0).uniform(size=(20, 2)):
    out = np.asarray(augment.cutout(jnp.asarray(u, jnp.float32), x))
    zero = (out == 0).all(-1)
    rows, cols = np.nonzero(zero)
    assert (out[~zero] == 1).all() and len(rows)
    assert zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4


def test_color_against_numpy():
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (4, 4, 3)) * 2 - 1)
  b, s, c = 0.8, 0.25, 0.1
  y = x + (b - 0.5)
  y = (y - y.mean(-1, keepdims=True)) * (2 * s) + y.mean(-1, keepdims=True)
  y = (y - y.mean()) * (c + 0.5) + y.mean()
  np.testing.assert_allclose(augment.color(jnp.array([b, s, c]), jnp.asarray(x)),
                             y, rtol=1e-5, atol=1e-6)


def test_augment_draws_one_uniform_vector_per_example():
  fn = augment.make('cutout,color')
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 2)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  for i in range(2):
    u = jax.random.uniform(keys[i], (5,))  # 2 for cutout, 3 for color.
    want = augment.color(u[2:], augment.cutout(u[:2], x[i]))
    np.testing.assert_allclose(fn(keys, x)[i], want, rtol=1e-6)


def test_augment_keys_by_global_index_match_across_devices():
  # Device 1 of 2 augmenting examples 4..7 draws what 1 device draws for them.
  fn = jax.jit(augment.make('color,translation,cutout'))
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 3))
  key = jax.random.PRNGKey(5)
  whole = fn(rng.example_keys(key, 0, 8), x)
  halves = [fn(rng.example_keys(key, i * 4, 4), x[i * 4:(i + 1) * 4])
            for i in range(2)]
  np.testing.assert_array_equal(whole, jnp.concatenate(halves))


def test_augment_is_differentiable():
  fn = augment.make('color,translation,cutout')
  keys = rng.example_keys(jax.random.PRNGKey(0), 0, 2)
  grads = jax.jit(jax.grad(lambda x: jnp.sum(fn(keys, x) ** 2)))(
      jnp.ones((2, 8, 8, 3)))
  assert np.isfinite(np.asarray(grads)).all() and np.abs(grads).sum() > 0


def test_augment_errors():
  assert augment.make('') is None
  with pytest.raises(UserError, match='unknown augmentation .*flip'):
    augment.make('color,flip')
  with pytest.raises(UserError, match='augment.policy'):
    augment.make('color')(jnp.zeros((2, 2)), jnp.zeros((2, 2)))


# --- Packing --------------------------------------------------------------


def test_pack_vectors_and_images():
  x = jnp.arange(8.).reshape(4, 2)
  np.testing.assert_array_equal(packing.pack(x, 2),
                                [[0, 1, 2, 3], [4, 5, 6, 7]])
  img = jnp.arange(4 * 2 * 2 * 3.).reshape(4, 2, 2, 3)
  packed = packing.pack(img, 2)
  assert packed.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(packed[1, :, :, 3:], img[3])
  np.testing.assert_array_equal(packed[1, :, :, :3], img[2])
  assert packing.packed_shape((2,), 4) == (8,)
  assert packing.packed_shape((32, 32, 3), 2) == (32, 32, 6)
  assert packing.pack(x, 1) is x


def test_pack_must_divide_the_per_device_batch():
  with pytest.raises(UserError, match='d.pack=3 must divide the per-device'):
    packing.pack(jnp.zeros((4, 2)), 3)
  with pytest.raises(UserError, match='d.pack=3'):
    checks.validate(tiny_config(d__pack=3))


# --- Diagnostics ----------------------------------------------------------


def test_mean_pairwise_distance_and_diversity_ratio():
  # Distances 5, 4 and 3 (a 3-4-5 triangle): the mean is 4.
  x = jnp.array([[0., 0.], [3., 4.], [0., 4.]])
  np.testing.assert_allclose(float(diversity.mean_pairwise_distance(x)), 4.,
                             rtol=1e-5)
  np.testing.assert_allclose(float(diversity.diversity_ratio(x / 2, x)), 0.5,
                             rtol=1e-5)
  collapsed = jnp.ones((3, 2))
  assert float(diversity.diversity_ratio(collapsed, x)) < 1e-5


def test_diversity_of_a_state_is_the_ratio_of_gs_samples_to_the_batch():
  """make_diversity: G's samples (its noise stream) against the real batch."""
  config = tiny_config()
  state = build_state(config)
  real = np.random.default_rng(3).normal(
      size=(config.batch_size, 2)).astype(np.float32)
  got = jax.pmap(diversity.make_diversity(config), axis_name=step_lib.AXIS)(
      replicate(state), jnp.asarray(real[None]))
  key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                           rng.DIVERSITY)
  z = rng.normal(rng.example_keys(jax.random.fold_in(key, rng.NOISE), 0,
                                  config.batch_size), (config.z_dim,))
  fake = state.g.apply_fn({'params': state.g.params}, z, train=True)
  np.testing.assert_allclose(float(unreplicate(got)),
                             float(diversity.diversity_ratio(fake, real)),
                             rtol=1e-5)


# --- dtype ----------------------------------------------------------------


def test_mlp_bfloat16_computes_in_bfloat16_with_float32_params_and_outputs():
  config = tiny_config(dtype='bfloat16')
  g, d = models.build(config, (2,))
  assert g.dtype == d.dtype == jnp.bfloat16
  state = build_state(config)
  assert {p.dtype for p in jax.tree.leaves((state.g.params, state.d.params))} == {
      jnp.dtype(jnp.float32)}
  z = jax.random.normal(jax.random.PRNGKey(0), (4, config.z_dim))
  x = g.apply({'params': state.g.params}, z, train=False)
  logits = d.apply({'params': state.d.params}, x, train=False)
  assert x.dtype == logits.dtype == jnp.float32
  # The matrix products themselves are bf16 (not only the attribute): each
  # dot_general's result, which is its operands' dtype.
  for net, variables, inp in ((g, {'params': state.g.params}, z),
                              (d, {'params': state.d.params}, x)):
    jaxpr = str(jax.make_jaxpr(
        lambda v, i, net=net: net.apply(v, i, train=False))(variables, inp))
    dots = [l.split('=')[0] for l in jaxpr.splitlines() if 'dot_general' in l]
    assert dots and all(':bf16[' in l for l in dots), dots
  g32, d32 = models.build(tiny_config(), (2,))
  x32 = g32.apply({'params': state.g.params}, z, train=False)
  np.testing.assert_allclose(x, x32, rtol=0.05, atol=0.02)
  logits32 = d32.apply({'params': state.d.params}, x32, train=False)
  np.testing.assert_allclose(logits, logits32, rtol=0.05, atol=0.02)


# --- Config ---------------------------------------------------------------


def test_default_config_has_the_toolbox_fields_switched_off():
  config = tiny_config()
  assert config.dtype == 'float32'
  assert (config.g.norm, config.d.norm, config.d.pack) == ('default',
                                                           'default', 1)
  assert (config.penalty.name, config.penalty.every) == ('', 1)
  assert config.augment.policy == ''
  assert (config.ema.decay, config.ema.start_step) == (0.0, 0)
  assert config.collapse_threshold > 0
  checks.validate(config)


@pytest.mark.parametrize('overrides,match', [
    (dict(penalty__every=0), 'penalty.every'),
    (dict(d__pack=0), 'd.pack'),
    (dict(ema__decay=1.0), 'ema.decay'),
    (dict(augment__policy='rotate'), 'unknown augmentation'),
])
def test_validate_rejects_bad_toolbox_values(overrides, match):
  with pytest.raises(UserError, match=match):
    checks.validate(tiny_config(**overrides))


def test_norm_switch_on_a_model_without_one_is_refused(monkeypatch):
  """A forked model that reads no g.norm does not silently ignore it."""
  model = models.MODELS['mlp']
  monkeypatch.setitem(models.MODELS, 'mlp', model._replace(
      g_fields=tuple(f for f in model.g_fields if f != 'norm')))
  with pytest.raises(UserError, match="config.g.norm is not read by model 'mlp'"):
    checks.validate(tiny_config())
  monkeypatch.setitem(models.MODELS, 'mlp', model)
  checks.validate(tiny_config(d__norm='layer'))


def test_unknown_mlp_norm():
  with pytest.raises(UserError, match='config.d.norm to one of'):
    models.build(tiny_config(d__norm='group'), (2,))


def test_collapse_threshold_may_change_on_resume():
  saved = tiny_config().to_dict()
  current = tiny_config(collapse_threshold=0.5).to_dict()
  assert checks.config_changes(saved, current) == []
  current = tiny_config(ema__decay=0.9).to_dict()
  assert checks.config_changes(saved, current) == ['ema.decay: 0.0 -> 0.9']


def test_conv_transpose_impl_may_change_on_resume():
  """The same function either way: a CPU run resumes on a GPU and back."""
  saved = tiny_config(g__conv_transpose='phases').to_dict()
  current = tiny_config(g__conv_transpose='xla').to_dict()
  assert checks.config_changes(saved, current) == []
  del saved['g']['conv_transpose']  # Saved before the field existed.
  assert checks.config_changes(saved, current) == []
  current['g']['norm'] = 'layer'  # A dotted name next to it still counts.
  assert checks.config_changes(saved, current) == [
      "g.norm: 'default' -> 'layer'"]


def test_runs_saved_before_the_toolbox_fields_resume():
  current = tiny_config().to_dict()
  saved = tiny_config().to_dict()
  for name in ('dtype', 'augment', 'ema', 'collapse_threshold'):
    del saved[name]
  for net in ('g', 'd'):
    del saved[net]['norm']
  del saved['d']['pack'], saved['penalty']['every']
  assert checks.config_changes(saved, current) == []
  current['d']['pack'] = 2
  assert checks.config_changes(saved, current) == ['d.pack: 1 -> 2']
