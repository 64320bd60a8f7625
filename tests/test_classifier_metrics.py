"""Classifier features for FID/KID/IS (no download): train, evaluate, launch.

The data is 28x28 squares whose position is the class, so a tiny classifier
learns it in a few epochs; the end-to-end run is configs/mnist_dcgan.py on
the same .npz, evaluated in classifier space.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import mnist_classifier
from gan_jax.errors import UserError
from gan_jax.metrics import classifier
from gan_jax.metrics import image_metrics as im
from tests.conftest import run_launch
from tests.conftest import tiny_digits_run
from tools import train_classifier

CORNERS = ((2, 2), (2, 18), (18, 2), (18, 18))  # Top-left of class k's square.


def _squares(n, seed, classes=(0, 1, 2, 3)):
  """float32 [n, 28, 28, 1] in [-1, 1]: a bright 8x8 square at CORNERS[label]
  (jittered by up to 2 pixels) on noise; labels int32 [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.choice(classes, n).astype(np.int32)
  images = rng.uniform(-1, -0.6, (n, 28, 28, 1)).astype(np.float32)
  for i, k in enumerate(labels):
    top, left = np.array(CORNERS[k]) + rng.integers(-2, 3, 2)
    images[i, top:top + 8, left:left + 8] = rng.uniform(0.5, 1)
  return images, labels


def _config(npz):
  config = mnist_classifier.get_config('data=images')
  config.data.path = str(npz)
  config.num_classes = 4
  config.batch_size = 32
  config.num_epochs = 4
  config.classifier.widths = (8, 16)
  config.classifier.features = 32
  config.holdout_fraction = 0.25
  config.log_every = 1000
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(npz path, checkpoint dir, train's record), trained once for the module."""
  root = tmp_path_factory.mktemp('clf')
  images, labels = _squares(384, seed=0)
  npz = root / 'squares.npz'
  np.savez(npz, images=((images + 1) * 127.5).round().astype(np.uint8),
           labels=labels)
  record = train_classifier.train(_config(npz), str(root / 'ckpt'))
  return npz, str(root / 'ckpt'), record


def test_classifier_trains_to_high_heldout_accuracy(trained):
  _, ckpt, record = trained
  assert record['num_heldout'] == 96 and record['num_train'] == 288
  assert record['heldout_accuracy'] >= 0.95, record
  with open(os.path.join(ckpt, classifier.SPEC_FILE)) as f:
    saved = json.load(f)
  assert saved['image_shape'] == [28, 28, 1] and saved['num_classes'] == 4
  assert saved['heldout_accuracy'] == record['heldout_accuracy']
  extract = classifier.get_extractor(ckpt)
  images, labels = _squares(64, seed=1)
  out = extract(images)
  assert out['pool'].shape == (64, 32) and out['logits'].shape == (64, 4)
  assert np.mean(out['logits'].argmax(1) == labels) >= 0.95


def test_tfds_data_is_evaluated_on_its_test_split(tmp_path):
  config = mnist_classifier.get_config()
  config.batch_size = 16
  config.num_epochs = 1
  config.classifier.widths = (8, 16)
  config.classifier.features = 32
  with tfds.testing.mock_data(num_examples=48):
    record = train_classifier.train(config, str(tmp_path / 'ckpt'))
  assert record['heldout'] == 'test' and record['train_split'] == 'train'
  assert record['num_train'] == 48 and record['num_heldout'] == 48
  assert record['image_shape'] == [28, 28, 1]


def test_metric_names_carry_the_feature_space():
  for name, m in im.METRICS.items():
    assert ('_clf' in name) == (m.space == 'classifier'), name
  m = im.get('fid_clf_10k_train')
  assert (m.space, m.num_samples, m.split) == ('classifier', 10_000, 'train')
  assert im.get('is_clf_1k').space == 'classifier'
  assert im.get('fid_10k_train').space == 'inception'
  assert im.spaces(['kid_clf', 'fid_1k_test']) == ['classifier', 'inception']


def _eval(ckpt, cache, fake, real, metrics, labels=None):
  config = {'metrics': metrics, 'classifier_checkpoint': ckpt,
            'num_samples': len(fake), 'num_reference': len(real),
            'sample_batch_size': 100, 'cache_dir': str(cache),
            'kid_subsets': 5, 'kid_subset_size': 100, 'is_splits': 2}
  calls = iter(range(1 << 20))

  def sample_fn(n):
    start = next(calls) * 100
    return fake[start:start + n]

  def real_batches(split):
    del split  # (images, labels) batches, as labelled datasets give them.
    for lo in range(0, len(real), 64):
      yield real[lo:lo + 64], np.zeros(len(real[lo:lo + 64]), np.int32)

  return im.evaluate_images(config, sample_fn, real_batches, 'squares',
                           labels=None if labels is None
                           else lambda n: labels[:n])


def test_fid_in_classifier_space(trained, tmp_path):
  _, ckpt, _ = trained
  real, _ = _squares(300, seed=2)
  metrics = ['fid_clf', 'kid_clf', 'is_clf']
  same = _eval(ckpt, tmp_path, real, real, metrics)
  fresh = _eval(ckpt, tmp_path, _squares(300, seed=3)[0], real, metrics)
  one_class = _eval(ckpt, tmp_path, _squares(300, seed=4, classes=(0,))[0],
                    real, metrics)
  assert set(same) == {'fid_clf', 'kid_clf', 'kid_clf/std', 'is_clf',
                       'is_clf/std'}
  assert abs(same['fid_clf']) < 1e-3 * one_class['fid_clf']
  assert fresh['fid_clf'] < 0.2 * one_class['fid_clf']
  assert one_class['kid_clf'] > 10 * abs(fresh['kid_clf'])
  # Confident over 4 balanced classes: IS near 4; one class: near 1.
  assert fresh['is_clf'] > 3 and one_class['is_clf'] < 1.5
  assert len(os.listdir(tmp_path)) == 1  # One reference, cached.


def test_class_coverage_by_hand():
  # 10 samples over 4 classes: 4 x class 0, 3 x class 1, 3 x class 2 (one
  # of them unsure), none of class 3.
  sure, unsure = 10., 0.5
  logits = np.zeros((10, 4))
  for i, (k, margin) in enumerate([(0, sure)] * 4 + [(1, sure)] * 3
                                  + [(2, sure)] * 2 + [(2, unsure)]):
    logits[i, k] = margin
  got = im.class_coverage(logits)
  assert got[''] == 3  # Even share 2.5; half of it, 1.25: classes 0, 1, 2.
  assert got['min_share'] == 0
  assert got['confident'] == pytest.approx(0.9)
  balanced = im.class_coverage(np.eye(4)[np.arange(8) % 4] * sure)
  assert balanced == {'': 4, 'min_share': 1, 'confident': 1}


def test_class_coverage_scores_the_asked_classes_by_hand():
  logits = np.eye(4)[[0, 0, 1, 1, 2, 2, 3, 3]] * 10.
  asked = np.array([0, 1, 1, 1, 2, 0, 3, 3])  # Samples 1 and 5 are wrong.
  got = im.class_coverage(logits, labels=asked)
  assert got['label_acc'] == 0.75
  assert [got[f'label_acc_{c}'] for c in range(4)] == pytest.approx(
      [1 / 2, 2 / 3, 1, 1])
  assert 'label_acc' not in im.class_coverage(logits)
  with pytest.raises(UserError, match="classifier's 4 classes"):
    im.class_coverage(logits, labels=asked + 1)  # A class 4.


def test_class_coverage_of_labelled_samples(trained, tmp_path):
  _, ckpt, _ = trained
  images, labels = _squares(300, seed=3)
  right = _eval(ckpt, tmp_path, images, images, ['classes_clf'], labels)
  wrong = _eval(ckpt, tmp_path, images, images, ['classes_clf'],
                (labels + 1) % 4)
  assert right['classes_clf/label_acc'] > 0.95
  assert min(right[f'classes_clf/label_acc_{c}'] for c in range(4)) > 0.9
  assert wrong['classes_clf/label_acc'] < 0.05


def test_class_coverage_on_real_and_one_class_samples(trained, tmp_path):
  _, ckpt, _ = trained
  real, _ = _squares(300, seed=2)
  fresh = _eval(ckpt, tmp_path, _squares(300, seed=3)[0], real,
                ['classes_clf'])
  one_class = _eval(ckpt, tmp_path, _squares(300, seed=4, classes=(0,))[0],
                    real, ['classes_clf'])
  assert set(fresh) == {'classes_clf', 'classes_clf/min_share',
                        'classes_clf/confident'}
  assert fresh['classes_clf'] == 4 and fresh['classes_clf/min_share'] > 0.7
  assert fresh['classes_clf/confident'] > 0.8
  assert one_class['classes_clf'] == 1
  assert one_class['classes_clf/min_share'] == 0
  assert not os.listdir(tmp_path)  # No reference statistics needed.


def test_reference_cache_is_keyed_by_the_checkpoint(trained, tmp_path):
  _, ckpt, _ = trained
  other = str(tmp_path / 'other')
  spec, params, _ = classifier.load(ckpt)
  params = jax.tree.map(lambda p: p * 1.01, params)
  classifier.save(other, spec, params, {'heldout_accuracy': 0.0})
  assert (classifier.checkpoint_hash(other)
          != classifier.checkpoint_hash(ckpt))
  real, _ = _squares(120, seed=5)
  for path in (ckpt, other):
    _eval(path, tmp_path / 'cache', real, real, ['fid_clf'])
  assert len(os.listdir(tmp_path / 'cache')) == 2


@pytest.mark.parametrize('case', ['empty', 'missing', 'damaged'])
def test_bad_checkpoint_is_a_one_line_user_error(trained, tmp_path, case):
  _, ckpt, _ = trained
  path = {'empty': '', 'missing': str(tmp_path / 'nothing')}.get(case)
  if case == 'damaged':
    path = str(tmp_path / 'copy')
    shutil.copytree(ckpt, path)
    for root, _, files in os.walk(os.path.join(path, classifier.PARAMS_DIR)):
      for name in files:
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  with pytest.raises(UserError) as e:
    im.evaluate_images({'metrics': ['fid_clf_1k_train'],
                        'classifier_checkpoint': path}, None, None, 'squares')
  message = str(e.value)
  assert '\n' not in message and 'tools/train_classifier.py' in message
  assert {'empty': 'classifier_checkpoint is empty', 'missing': 'no classifier',
          'damaged': 'damaged'}[case] in message


def test_wrong_image_shape_is_a_user_error(trained):
  _, ckpt, _ = trained
  with pytest.raises(UserError, match='takes 28x28x1 images, not 32x32x3'):
    classifier.get_extractor(ckpt)(np.zeros((2, 32, 32, 3), np.float32))


def test_classifier_for_other_images_fails_at_start(trained, tmp_path):
  """A classifier of 28x28x1 digits on 32x32x3 data: one line before the
  first step, not at the first evaluation."""
  from configs import mnist_dcgan  # pylint: disable=g-import-not-at-top
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  _, ckpt, _ = trained
  npz = tmp_path / 'rgb.npz'
  np.savez(npz, images=np.zeros((16, 32, 32, 3), np.uint8))
  config = mnist_dcgan.get_config('data=images')
  config.data.path = str(npz)
  config.data.image_size = 32
  config.batch_size = 8
  config.eval.metrics = 'fid_clf_1k_train'
  config.eval.classifier_checkpoint = ckpt
  with pytest.raises(UserError, match='takes 28x28x1 images, not 32x32x3'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_metrics_without_checkpoint_fail_at_start(trained, tmp_path):
  from configs import mnist_dcgan  # pylint: disable=g-import-not-at-top
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  npz, _, _ = trained
  config = mnist_dcgan.get_config('data=images')
  config.data.path = str(npz)
  config.eval.metrics = 'fid_clf_1k_train'
  with pytest.raises(UserError, match='classifier_checkpoint is empty'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')  # Nothing written.


def test_launch_writes_fid_in_classifier_space(trained, tmp_path):
  npz, ckpt, _ = trained
  workdir = tmp_path / 'run'
  args = [
      *tiny_digits_run(npz, workdir),
      '--config.eval.metrics=fid_clf_1k_train,is_clf_1k',
      '--config.eval.num_reference=256', '--config.eval.sample_batch_size=125',
      f'--config.eval.cache_dir={tmp_path / "cache"}',
      f'--config.eval.classifier_checkpoint={ckpt}']
  r = run_launch(args)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  evals = [row for row in rows if 'fid_clf_1k_train' in row]
  assert len(evals) == 1 and evals[0]['step'] == 2
  # An untrained generator is far from the data in the classifier's space.
  assert evals[0]['fid_clf_1k_train'] > 1
  assert 'is_clf_1k' in evals[0] and not any(
      k.startswith(('fid_1k', 'is_1k')) for k in evals[0])
  assert len(os.listdir(tmp_path / 'cache')) == 1
  # Each evaluation row says which classifier its numbers are in: its path
  # and the hash that keys the reference statistics; so does --mode=eval.
  networks = {'classifier': {'path': os.path.abspath(ckpt),
                             'sha256': classifier.checkpoint_hash(ckpt)}}
  assert evals[0]['feature_networks'] == networks
  assert not any('feature_networks' in row for row in rows
                 if 'fid_clf_1k_train' not in row)  # Not on the log rows.
  # TensorBoard shows them as a text at the evaluation's step.
  texts = _tensorboard_texts(workdir / 'tensorboard')
  assert list(texts) == [(2, 'feature_networks/text_summary')]
  assert json.loads(texts[2, 'feature_networks/text_summary'].strip('`\n')
                    ) == networks
  r = run_launch(args + ['--mode=eval'])
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / 'eval_step_2.json') as f:
    evaluated = json.load(f)
  assert evaluated['feature_networks'] == networks
  assert evaluated['fid_clf_1k_train'] == evals[0]['fid_clf_1k_train']
  with open(workdir / 'metrics.jsonl') as f:
    last = json.loads(f.readlines()[-1])
  assert last['step'] == 2 and last['feature_networks'] == networks


TOOL_RUN = dict(cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                capture_output=True, text=True, timeout=300,
                env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_real_images_score_what_a_perfect_generator_would(trained, tmp_path):
  """tools/eval_real_images.py: the metrics with real images as the samples.
  Every class, confidently; FID of the same images against themselves 0."""
  npz, ckpt, _ = trained
  out = tmp_path / 'real.json'
  r = subprocess.run([
      sys.executable, 'tools/eval_real_images.py',
      '--config=configs/mnist_dcgan.py:data=images', f'--config.data.path={npz}',
      '--config.batch_size=8', '--config.eval.metrics=classes_clf,fid_clf',
      '--config.eval.num_samples=256', '--config.eval.num_reference=256',
      '--config.eval.sample_batch_size=100',
      f'--config.eval.cache_dir={tmp_path / "cache"}',
      f'--config.eval.classifier_checkpoint={ckpt}', f'--out={out}'],
      **TOOL_RUN)
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads(out.read_text())
  assert results['split'] == 'train'
  assert results['classes_clf'] == 4 and results['classes_clf/confident'] > 0.9
  assert results['classes_clf/min_share'] > 0.5
  assert abs(results['fid_clf']) < 1e-3
  # No classifier there: one line, no traceback.
  r = subprocess.run([
      sys.executable, 'tools/eval_real_images.py',
      '--config=configs/cifar10_dcgan.py', '--config.eval.metrics=is_clf',
      f'--config.eval.classifier_checkpoint={tmp_path / "none"}'],
      **TOOL_RUN)
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1].startswith('error: no classifier')


def _conditional_run(npz, ckpt, workdir, *flags):
  """Two steps of configs/mnist_cgan.py on `npz` with `flags`, scored by
  classes_clf_1k with the classifier `ckpt`: its one evaluation row."""
  args = tiny_digits_run(npz, workdir)
  args[0] = '--config=configs/mnist_cgan.py:data=images'
  r = run_launch([*args, *flags, '--config.eval.metrics=classes_clf_1k',
                  '--config.eval.sample_batch_size=100',
                  f'--config.eval.classifier_checkpoint={ckpt}'])
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    evals = [row for row in map(json.loads, f) if 'classes_clf_1k' in row]
  assert len(evals) == 1
  return evals[0]


def test_conditional_run_is_scored_by_the_classes_it_was_asked_for(
    trained, tmp_path):
  npz, ckpt, _ = trained
  row = _conditional_run(npz, ckpt, tmp_path / 'run', '--config.num_classes=4')
  per_class = [row[f'classes_clf_1k/label_acc_{c}'] for c in range(4)]
  # 250 samples asked for each class (rows of 100 labelled 0, 1, 2, 3, 0,
  # ...): a row per class asked for, whose mean is the overall accuracy.
  # (Two steps leave G at chance; that the scores use G's own labels is
  # test_conditional_scores_use_the_labels_g_drew_with.)
  assert np.mean(per_class) == pytest.approx(row['classes_clf_1k/label_acc'])
  # Ten classes asked of a four-class classifier: one line, before training.
  args = tiny_digits_run(npz, tmp_path / 'ten')
  args[0] = '--config=configs/mnist_cgan.py:data=images'
  r = run_launch([*args, '--config.eval.metrics=classes_clf_1k',
                  f'--config.eval.classifier_checkpoint={ckpt}'])
  assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1].startswith(
      'error: num_classes is 10 but the classifier')
  assert not os.path.exists(tmp_path / 'ten' / 'checkpoints')


def test_conditional_scores_use_the_labels_g_drew_with(trained):
  """A perfect conditional G (it draws class k's square for label k) through
  evaluate's sampling path scores ~1; scored against other labels it would
  score ~0."""
  from configs import mnist_cgan  # pylint: disable=g-import-not-at-top
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  from gan_jax import sampling  # pylint: disable=g-import-not-at-top
  from gan_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  npz, ckpt, _ = trained
  config = mnist_cgan.get_config('data=images')
  config.data.path = str(npz)
  config.num_classes = 4
  config.eval.metrics = 'classes_clf_1k'
  config.eval.classifier_checkpoint = ckpt
  config.eval.sample_batch_size = 96  # Not a multiple of 4: rows shift.
  masks = np.full((4, 28, 28, 1), -0.8, np.float32)
  for k, (top, left) in enumerate(CORNERS):
    masks[k, top:top + 8, left:left + 8] = 0.75

  def perfect_g(variables, z, train, labels):
    del variables, train
    return jax.numpy.asarray(masks)[labels] + 0. * z[:, :1, None, None]

  g = state_lib.NetState(step=0, apply_fn=perfect_g, params={}, tx=None,
                         opt_state=None, model_state={})
  scores = evaluate._image_metrics(config, sampling.make_generate(config), g,
                                   jax.random.PRNGKey(0))
  assert scores['classes_clf_1k/label_acc'] > 0.95, scores
  assert min(scores[f'classes_clf_1k/label_acc_{c}'] for c in range(4)) > 0.9


def test_cluster_conditional_run_is_scored_as_unconditional(trained, tmp_path):
  """Labels that are k-means clusters (tools/cluster_npz.py) are no classes:
  classes_clf scores the samples with no label accuracy, a classifier with
  another class count is no error, and the grid is grid_rows square."""
  npz, ckpt, _ = trained
  clustered = tmp_path / 'clustered.npz'
  r = subprocess.run([sys.executable, 'tools/cluster_npz.py', f'--data={npz}',
                      '--clusters=3', f'--out={clustered}'], **TOOL_RUN)
  assert r.returncode == 0, r.stderr[-3000:]
  workdir = tmp_path / 'run'
  row = _conditional_run(clustered, ckpt, workdir, '--config.num_classes=3',
                         '--config.conditional.labels=clusters')
  assert 0 <= row['classes_clf_1k/confident'] <= 1
  assert not [k for k in row if 'label_acc' in k], row
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(workdir / 'samples' / 'step_0000002.png') as grid:
    assert grid.width == grid.height  # 2 x 2, not a row per label.


def _tensorboard_texts(folder):
  """{(step, tag): text} of the text summaries in the event files of `folder`
  (TFRecord framing: length, its crc, the Event proto, its crc)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  texts = {}
  for name in sorted(os.listdir(folder)):
    data = (folder / name).read_bytes()
    pos = 0
    while pos < len(data):
      (size,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + size])
      pos += 16 + size
      for value in event.summary.value:
        if value.tensor.string_val:
          texts[event.step, value.tag] = value.tensor.string_val[0].decode()
  return texts
