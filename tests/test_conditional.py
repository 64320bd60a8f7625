"""Class-conditional GANs: labels in the data, the G and D heads, the grids."""
import json

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import mnist5k
from gan_jax import checks
from gan_jax import data
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import labels as labels_lib
from gan_jax import sampling
from gan_jax import step as step_lib
from gan_jax import train
from gan_jax.data import toy
from gan_jax.errors import UserError
from gan_jax.metrics import toy as toy_metrics
from gan_jax.models import conditional
from tests.conftest import run_launch
from tests.conftest import for_model
from tests.conftest import tiny_config
from tests import test_multidevice


def _image_config(path, num_classes=3, head='projection', model='dcgan'):
  config = tiny_config()
  config.model = model
  config.data = ml_collections.ConfigDict(dict(
      name='images', path=str(path), seed=0, num_workers=0, image_size=None,
      channels=None))
  config.num_classes = num_classes
  config.conditional.d = head
  config.g.channels = config.d.channels = 4
  config.z_dim = 8
  return for_model(config)


def _labelled_npz(path, n=24, size=32, classes=3, labels=True):
  rng = np.random.default_rng(0)
  arrays = dict(images=rng.integers(0, 256, (n, size, size, 3), np.uint8))
  if labels:
    arrays['labels'] = np.arange(n) % classes
  np.savez(path, **arrays)
  return path


def test_toy_labels_are_the_mode_of_each_point():
  config = tiny_config(num_classes=8)
  it = data.build(config, 64)
  points, labels = next(it)
  modes, _ = toy.mixture(config)
  nearest = np.argmin(((points[:, None] - modes[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, labels)
  assert labels.dtype == np.int32 and len(set(labels.tolist())) > 4
  with pytest.raises(UserError, match='num_classes=8'):
    data.build(tiny_config(num_classes=5), 16)


def test_npz_labels_follow_their_images_through_the_shuffle(tmp_path):
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, 40)
  # Each image is filled with its own label's value: pairs stay together.
  images = np.broadcast_to(labels[:, None, None, None] * 50,
                           (40, 8, 8, 1)).astype(np.uint8)
  np.savez(tmp_path / 'l.npz', images=images, labels=labels)
  config = _image_config(tmp_path / 'l.npz', num_classes=4)
  it = data.build(config, 10, process_index=1, process_count=2)
  for _ in range(5):  # Past an epoch boundary (40 / 20 per global batch).
    x, y = next(it)
    np.testing.assert_allclose(x[:, 0, 0, 0], y * 50 * 2 / 255 - 1, atol=1e-6)


@pytest.mark.parametrize('labels,change,match', [
    (False, {}, "no array named 'labels'"),
    (True, {'num_classes': 2}, 'num_classes=3'),
])
def test_npz_label_errors(tmp_path, labels, change, match):
  path = _labelled_npz(tmp_path / 'x.npz', labels=labels)
  config = _image_config(path)
  for key, value in change.items():
    config[key] = value
  with pytest.raises(UserError, match=match):
    data.build(config, 8)


def test_folder_classes_are_sorted_subfolders(tmp_path):
  root = tmp_path / 'imgs'
  for name, value in (('cat', 10), ('ant', 200), ('bee', 90)):
    (root / name).mkdir(parents=True)
    for i in range(4):
      Image.fromarray(np.full((8, 8), value, np.uint8)).save(
          root / name / f'{i}.png')
  config = _image_config(root)
  config.data.image_size = 8
  x, y = next(data.build(config, 12))
  value_of_class = {0: 200, 1: 90, 2: 10}  # ant, bee, cat.
  expected = np.array([value_of_class[int(c)] for c in y]) * 2 / 255 - 1
  np.testing.assert_allclose(x[:, 0, 0, 0], expected, atol=1e-6)
  (root / 'loose.png').write_bytes((root / 'ant' / '0.png').read_bytes())
  with pytest.raises(UserError, match='not in a class subfolder'):
    data.build(config, 12)


@pytest.mark.parametrize('model', ['mlp', 'dcgan', 'dcgan_mnist',
                                   'sngan_resnet'])
@pytest.mark.parametrize('head', ['projection', 'acgan'])
def test_every_model_takes_labels(model, head):
  shape = {'mlp': (2,), 'dcgan_mnist': (28, 28, 1)}.get(model, (32, 32, 3))
  config = tiny_config(num_classes=3, model=model, z_dim=8)
  config.conditional.d = head
  config.g.channels = config.d.channels = 4
  g, d = models.build(config, shape)
  state = state_lib.create(config, g, d, shape)
  labels = jnp.array([0, 1, 2, 1])
  z = jnp.zeros((4, 8))
  x = g.apply({'params': state.g.params, **state.g.model_state}, z,
              train=False, labels=labels)
  assert x.shape == (4, *shape)
  # The same z (all zeros) with different labels: different samples.
  assert not np.allclose(x[0], x[1])
  out = d.apply({'params': state.d.params, **state.d.model_state}, x,
                train=False, labels=labels)
  logits, class_logits = labels_lib.split_d_output(out)
  assert logits.shape == (4,) and logits.dtype == jnp.float32
  if head == 'acgan':
    assert class_logits.shape == (4, 3)
  else:
    assert class_logits is None
    assert 'class_embedding' in str(jax.tree_util.tree_structure(
        state.d.params))


SHAPES = {'dcgan': (32, 32, 3), 'dcgan_mnist': (28, 28, 1),
          'sngan_resnet': (32, 32, 3)}


@pytest.mark.parametrize('model', sorted(SHAPES))
def test_conditional_batch_norm_routes_each_label(model):
  """conditional.g='cbn': z alone enters G, every BatchNorm has per-class
  scale and shift, and a sample depends only on its own label's rows."""
  config = tiny_config(num_classes=3, model=model, z_dim=8)
  config.conditional.g = 'cbn'
  config.g.channels = config.d.channels = 4
  g, d = models.build(config, SHAPES[model])
  state = state_lib.create(config, g, d, SHAPES[model])
  flat = flax.traverse_util.flatten_dict(state.g.params, sep='/')
  assert flat['base/Dense_0/kernel'].shape[0] == 8  # z only, no one-hot.
  tables = {k: v for k, v in flat.items() if 'ConditionalBatchNorm' in k}
  assert tables and all(k.endswith(('scale/embedding', 'bias/embedding'))
                        and v.shape[0] == 3 for k, v in tables.items())
  assert not any('BatchNorm_' in k and 'Conditional' not in k
                 and k.endswith(('/scale', '/bias')) for k in flat)
  assert 'mean' in str(state.g.model_state)  # Statistics still kept.
  labels = jnp.array([0, 1, 2, 0])
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 8))

  def label0_sum(params):
    x = g.apply({'params': params, **state.g.model_state}, z, train=False,
                labels=labels)
    return jnp.sum(x[labels == 0])

  grads = flax.traverse_util.flatten_dict(jax.grad(label0_sum)(state.g.params),
                                          sep='/')
  for name in tables:
    assert np.all(grads[name][1:] == 0), name  # Labels 1, 2 not used.
  assert any(np.any(grads[name][0] != 0) for name in tables)


@pytest.mark.parametrize('model,norm,match', [
    ('mlp', 'default', "'cbn' needs a generator with BatchNorm"),
    ('dcgan', 'layer', "config.g.norm is 'layer'")])
def test_conditional_batch_norm_needs_batch_norm(model, norm, match):
  config = tiny_config(num_classes=3, model=model, z_dim=8)
  config.conditional.g = 'cbn'
  config.g.norm = norm
  shape = (2,) if model == 'mlp' else (32, 32, 3)
  with pytest.raises(UserError, match=match):
    models.build(config, shape)


def test_unconditional_parameters_are_unchanged():
  """num_classes=0 builds the same tree as before conditioning existed."""
  config = tiny_config(model='dcgan_mnist', z_dim=100)
  g, d = models.build(config, (28, 28, 1))
  state = state_lib.create(config, g, d, (28, 28, 1))
  count = lambda t: sum(x.size for x in jax.tree.leaves(t))
  assert count(state.d.params) == 212_865  # The TF tutorial's discriminator.
  assert count(state.g.params) == 2_305_472
  names = set(flax.traverse_util.flatten_dict(state.d.params, sep='/'))
  assert names == {'Conv_0/kernel', 'Conv_0/bias', 'Conv_1/kernel',
                   'Conv_1/bias', 'Dense_0/kernel', 'Dense_0/bias'}


def test_projection_head_is_dense_plus_embedding_inner_product():
  class Head(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, h, labels):
      return conditional.output_layer(h, labels, 3, 'projection',
                                      flax.linen.Dense)

  h = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
  labels = jnp.array([0, 2, 1, 2, 0])
  variables = Head().init(jax.random.PRNGKey(1), h, labels)
  p = variables['params']
  expected = (h @ p['Dense_0']['kernel'][:, 0] + p['Dense_0']['bias'][0]
              + jnp.sum(p['class_embedding']['embedding'][labels] * h, -1))
  np.testing.assert_allclose(Head().apply(variables, h, labels), expected,
                             rtol=1e-5, atol=1e-6)


def test_acgan_weight_trains_the_class_head():
  """The class losses are logged apart and move D's class head by their weight."""
  metrics, heads = {}, {}
  for weight in (0.0, 1.0):
    config = tiny_config(num_classes=8, num_steps=1)
    config.conditional.d = 'acgan'
    config.conditional.acgan_weight = weight
    g, d = models.build(config, (2,))
    state = state_lib.create(config, g, d, (2,))
    head0 = np.asarray(state.d.params['Dense_1']['kernel'])  # [width, 8].
    batch = jax.tree.map(lambda b: jnp.asarray(b)[None, None, None],
                         next(data.build(config, 16)))
    step = jax.pmap(step_lib.make_multi_step(config), axis_name=step_lib.AXIS)
    state, m = step(train._replicate(state, jax.local_devices()[:1]), batch)
    metrics[weight] = jax.tree.map(lambda x: float(x[0]), m)
    heads[weight] = np.abs(np.asarray(state.d.params['Dense_1']['kernel'][0])
                           - head0).max()
  # Untrained: cross-entropy ~log(8) on real and on fake (D), on fake (G).
  assert abs(metrics[1.0]['d_class_loss'] - 2 * np.log(8)) < 1.0
  assert abs(metrics[1.0]['g_class_loss'] - np.log(8)) < 0.5
  # d_loss is the adversarial loss of the same first update either way.
  assert metrics[0.0]['d_loss'] == pytest.approx(metrics[1.0]['d_loss'], 1e-6)
  assert heads[0.0] == 0 and heads[1.0] > 1e-5


def test_pack_with_labels_is_refused():
  config = tiny_config(num_classes=8)
  config.d.pack = 2
  with pytest.raises(UserError, match='cannot be combined'):
    checks.validate(config)


def test_cluster_labels_need_images_and_a_cluster_count():
  """conditional.labels=clusters: refused without num_classes, on toy data
  (whose labels are modes) and on a TFDS dataset (whose labels are classes);
  taken on images with num_classes."""
  for classes, data in ((0, 'images'), (8, 'ring8'), (10, 'mnist')):
    config = tiny_config(num_classes=classes)
    config.conditional.labels = 'clusters'
    config.data.name = data
    with pytest.raises(UserError, match='tools/cluster_npz.py'):
      checks.validate(config)
  config = mnist5k.get_config('conditional=clusters')
  checks.validate(config)
  assert config.num_classes == 50


def test_in_proportion_draws_each_label_as_often_as_its_count():
  """Every period of sum(counts) labels holds exactly counts[k] of label k,
  every prefix is within one sample a label of proportional, equal counts
  give 0, 1, ..., K-1 again and again, and a longer draw starts with a
  shorter one."""
  rng = np.random.default_rng(0)
  for _ in range(50):
    counts = tuple(int(c) for c in rng.integers(0, 40, rng.integers(1, 12)))
    if not sum(counts):
      continue
    total = sum(counts)
    labels = labels_lib.in_proportion(counts, 3 * total + 5)
    for start in (0, total, 2 * total):
      np.testing.assert_array_equal(
          np.bincount(labels[start:start + total], minlength=len(counts)),
          counts)
    seen = np.cumsum(np.eye(len(counts))[labels], axis=0)
    expected = np.arange(1, len(labels) + 1)[:, None] * np.array(counts) / total
    assert np.abs(seen - expected).max() < 1
    np.testing.assert_array_equal(labels_lib.in_proportion(counts, 7),
                                  labels[:7])
  np.testing.assert_array_equal(labels_lib.in_proportion((4, 4, 4), 8),
                                [0, 1, 2, 0, 1, 2, 0, 1])


def test_clusters_are_drawn_in_the_data_proportions(tmp_path):
  """A cluster-conditional run's evaluation labels (samples, grids, the
  standing statistics' batches) follow the data's cluster sizes; class
  labels stay balanced; equal clusters give the balanced sequence."""
  path = tmp_path / 'clusters.npz'
  np.savez(path, images=np.zeros((10, 8, 8, 1), np.uint8),
           labels=np.array([0] * 6 + [1] * 3 + [2]))
  config = _image_config(path)
  config.conditional.labels = 'clusters'
  np.testing.assert_array_equal(
      np.bincount(np.asarray(labels_lib.eval_labels(config, 10))), [6, 3, 1])
  rows = sampling.row_labels(config, 5, 25, 10)  # Rows of batches of 10.
  batch = np.asarray(labels_lib.eval_labels(config, 10))
  np.testing.assert_array_equal(rows, np.concatenate([batch[5:], batch,
                                                      batch[:5]]))
  config.batch_size = 20
  from gan_jax import standing_stats  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(
      np.bincount(np.asarray(standing_stats.batch(config, 0)[1])), [12, 6, 2])
  config.conditional.labels = 'classes'
  np.testing.assert_array_equal(labels_lib.eval_labels(config, 5),
                                [0, 1, 2, 0, 1])
  np.testing.assert_array_equal(sampling.row_labels(config, 0, 4, 3),
                                [0, 1, 2, 0])
  equal = _labelled_npz(tmp_path / 'equal.npz', n=12)  # 4 of each label.
  config = _image_config(equal)
  config.conditional.labels = 'clusters'
  np.testing.assert_array_equal(labels_lib.eval_labels(config, 7),
                                [0, 1, 2, 0, 1, 2, 0])


@pytest.mark.parametrize('head', ['projection', 'acgan'])
def test_conditional_toy_gan_puts_each_label_on_its_mode(head, tmp_path):
  """Trained on ring8 labelled by mode, G(z, c) lands on mode c."""
  config = tiny_config(num_classes=8, num_steps=1200, batch_size=128,
                       steps_per_call=100, log_every=600, eval_every=1200,
                       **{'checkpoint__every': 1200})
  config.g.width = config.d.width = 64
  config.conditional.d = head
  state = train.train_and_evaluate(config, str(tmp_path))
  generate = sampling.make_generate(config)
  labels = jnp.repeat(jnp.arange(8, dtype=jnp.int32), 100)
  samples = np.asarray(generate(state_lib.sampling_generator(state),
                                jax.random.PRNGKey(5), 800, labels))
  modes, _ = toy.mixture(config)
  nearest = np.argmin(((samples[:, None] - modes[None]) ** 2).sum(-1), axis=1)
  accuracy = np.mean(nearest == np.asarray(labels))
  assert accuracy > 0.9, accuracy


@pytest.mark.parametrize('g_mode', ['concat', 'cbn'])
def test_conditional_image_run_writes_one_grid_row_per_class(tmp_path,
                                                             g_mode):
  npz = tmp_path / 'd.npz'
  rng = np.random.default_rng(0)
  np.savez(npz, images=rng.integers(0, 256, (40, 28, 28), np.uint8),
           labels=np.arange(40) % 10)
  workdir = tmp_path / 'run'
  r = run_launch(['--config=configs/mnist_cgan.py:data=images,head=acgan',
                  f'--config.conditional.g={g_mode}',
                  f'--config.data.path={npz}', '--config.g.upsample=resize_conv',
                  '--config.batch_size=8', '--config.num_steps=2',
                  '--config.log_every=1', '--config.eval_every=2',
                  '--config.checkpoint.every=2', '--config.eval.grid_rows=3',
                  f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr[-3000:]
  grid = np.asarray(Image.open(workdir / 'samples' / 'step_0000002.png'))
  assert grid.shape == (10 * 30 + 2, 3 * 30 + 2, 3)  # 10 classes x 3 samples.
  assert 'd_class_loss' in (workdir / 'metrics.jsonl').read_text()


def test_conditional_two_devices_equal_one(tmp_path):
  """Labels are split over the devices with their examples."""
  results = []
  for n in (1, 2):
    workdir = tmp_path / f'run{n}'
    r = run_launch(['--config=configs/default.py', f'--workdir={workdir}',
                    *test_multidevice.ARGS, '--config.num_classes=8',
                    '--config.conditional.d=acgan'], devices=n)
    assert r.returncode == 0, r.stderr[-3000:]
    results.append(test_multidevice.restore_final(workdir)[0])
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                               atol=2e-6)


def test_label_accuracy_counts_high_quality_samples_at_their_label():
  modes = np.array([[0., 0.], [10., 0.]])
  samples = np.array([[0., 0.], [10., 0.], [10., 0.], [5., 0.]])
  m = toy_metrics.mode_metrics(samples, modes, 0.1, labels=[0, 1, 0, 1])
  assert m['label_acc'] == 0.5  # Right, right, wrong mode, not high quality.
  assert 'label_acc' not in toy_metrics.mode_metrics(samples, modes, 0.1)


def test_conditional_with_a_gradient_penalty(tmp_path):
  """Penalties differentiate D with the batch's labels held fixed."""
  config = tiny_config('loss=wgan_gp', num_classes=8, steps_per_call=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 6
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  penalties_logged = [json.loads(l)['penalty'] for l in lines if 'penalty' in l]
  assert penalties_logged and all(np.isfinite(penalties_logged))
  assert all(p > 0 for p in penalties_logged)


def test_a_penalty_differentiates_d_at_each_examples_own_label():
  # R1 on a projection D: D(x, y) = psi(h(x)) + <embed(y), h(x)>, so dD/dx
  # depends on y. The step's penalty must be R1 at the batch's own labels.
  config = tiny_config(num_classes=4, penalty__name='r1', penalty__weight=1.0)
  init = state_lib.create(config, *models.build(config, (2,)), (2,))
  rng_np = np.random.default_rng(0)
  x = rng_np.normal(size=(config.batch_size, 2)).astype(np.float32)
  y = rng_np.integers(0, 4, config.batch_size).astype(np.int32)
  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS)
  _, metrics = p_step(flax.jax_utils.replicate(init),
                      (jnp.asarray(x[None, None]), jnp.asarray(y[None, None])))

  def r1(labels):
    d = lambda x: init.d.apply_fn(
        {'params': init.d.params, **init.d.model_state}, x, labels=labels,
        train=False)
    grads = jax.grad(lambda x: jnp.sum(labels_lib.split_d_output(d(x))[0]))(x)
    return 0.5 * np.mean(np.sum(np.asarray(grads) ** 2, axis=-1))

  step_penalty = float(metrics['penalty'][0])
  np.testing.assert_allclose(step_penalty, r1(y), rtol=1e-4)
  assert abs(r1(np.roll(y, 1)) - r1(y)) > 1e-3 * r1(y)  # Labels matter.
