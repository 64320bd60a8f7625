"""Image metrics on small feature arrays, against references and by hand.

No Inception here: `evaluate_images` runs with a stub extractor, so these
tests are about the formulas, the registry and the reference-stats cache.
"""
import os

import numpy as np
import pytest
from scipy import linalg

from gan_jax.errors import UserError
from gan_jax.metrics import image_metrics as im
from gan_jax.metrics import reference
from tests.conftest import importorskip_extra


def _stats(x):
  return x.mean(0), np.cov(x, rowvar=False)


# --- FID ----------------------------------------------------------------------


@pytest.mark.extras
def test_fid_matches_pytorch_fid_on_random_stats():
  fid_score = importorskip_extra('pytorch_fid.fid_score', 'pytorch-fid')
  rng = np.random.default_rng(0)
  a = rng.normal(size=(200, 16))
  b = rng.normal(0.3, 1.5, size=(300, 16)) @ rng.normal(size=(16, 16))
  want = fid_score.calculate_frechet_distance(*_stats(a), *_stats(b))
  assert im.frechet_distance(*_stats(a), *_stats(b)) == pytest.approx(
      want, rel=1e-10)
  # Fewer samples than dimensions: rank-deficient (singular) covariances.
  a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))
  want = fid_score.calculate_frechet_distance(*_stats(a), *_stats(b))
  assert im.frechet_distance(*_stats(a), *_stats(b)) == pytest.approx(
      want, rel=1e-8)


@pytest.mark.extras
def test_fid_adds_eps_where_sqrtm_is_not_finite_like_pytorch_fid(monkeypatch):
  fid_score = importorskip_extra('pytorch_fid.fid_score', 'pytorch-fid')
  # Singular PSD covariances. Whether scipy's sqrtm finds a square root of
  # their product depends on the machine's LAPACK (nan on some CPUs, a
  # root on others), so it is made to fail here, for both implementations.
  s1 = np.array([[4., -2, -4, 4], [-2, 1, 2, -2], [-4, 2, 4, -4], [4, -2, -4, 4]])
  s2 = np.array([[2., -3, 0, 1], [-3, 5, 0, -2], [0, 0, 0, 0], [1, -2, 0, 1]])
  real_sqrtm, failed = linalg.sqrtm, []

  def sqrtm(a, *args, **kwargs):
    if np.array_equal(a, s1 @ s2):
      failed.append(True)
      root = np.full(a.shape, np.nan)
      return (root, np.inf) if kwargs.get('disp', True) is False else root
    return real_sqrtm(a, *args, **kwargs)

  monkeypatch.setattr(linalg, 'sqrtm', sqrtm)
  mu1, mu2 = np.zeros(4), np.arange(4.0)
  want = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
  got = im.frechet_distance(mu1, s1, mu2, s2)
  assert len(failed) == 2  # Both tried the product first, then added eps.
  assert np.isfinite(got) and got == pytest.approx(want, rel=1e-6)


def test_fid_by_hand():
  # 1-D: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2).
  assert im.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(
      4 + 4 + 9 - 2 * 6)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(500, 8))
  assert abs(im.frechet_distance(*_stats(x), *_stats(x))) < 1e-8


# --- KID ----------------------------------------------------------------------


def _mmd_by_loops(x, y):
  k = lambda a, b: (a @ b / len(a) + 1) ** 3
  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_is_the_unbiased_cubic_kernel_mmd():
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(6, 3)), rng.normal(1.0, 1.0, size=(6, 3))
  # Subsets as large as the sets: every subset is a permutation of them.
  mean, std = im.kernel_distance(real, fake, num_subsets=3, subset_size=1000)
  assert mean == pytest.approx(_mmd_by_loops(real, fake), rel=1e-12)
  assert std == pytest.approx(0, abs=1e-12)
  # Subsets of 4 of 6: the mean of the loops' value over the same draws.
  mean, _ = im.kernel_distance(real, fake, num_subsets=5, subset_size=4, seed=3)
  rng = np.random.default_rng(3)
  want = []
  for _ in range(5):
    r = real[rng.choice(6, 4, replace=False)]
    f = fake[rng.choice(6, 4, replace=False)]
    want.append(_mmd_by_loops(r, f))
  assert mean == pytest.approx(np.mean(want), rel=1e-12)


def test_kid_near_zero_for_one_distribution():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
  mean, std = im.kernel_distance(a, b, num_subsets=10, subset_size=200)
  assert abs(mean) < 3 * std + 1e-3
  far, _ = im.kernel_distance(a, b + 2, num_subsets=10, subset_size=200)
  assert far > 0.5


# --- IS -----------------------------------------------------------------------


def test_inception_score_known_distributions():
  # Uniform predictions: p(y|x) = p(y), IS = 1.
  assert im.inception_score(np.zeros((100, 1008))) == pytest.approx((1.0, 0.0))
  # The same confident prediction for every image: also 1.
  same = np.full((100, 1008), -50.0)
  same[:, 7] = 50.0
  assert im.inception_score(same)[0] == pytest.approx(1.0)
  # Confident and spread evenly over K classes in every split: IS = K.
  k = 10
  logits = np.full((200, 1008), -1e4)
  logits[np.arange(200), np.arange(200) % k] = 0.0
  mean, std = im.inception_score(logits, splits=10)
  assert mean == pytest.approx(k) and std == pytest.approx(0, abs=1e-9)


def test_inception_score_splits():
  logits = np.full((20, 4), -1e4)
  logits[:10, 0] = 0  # First split: one class -> 1.
  logits[10:, :2] = 0  # Second: uniform over two classes each -> 1.
  logits[10:15, 1] = -1e4  # ... now half class 0, half {0, 1}.
  mean, std = im.inception_score(logits, splits=2)
  p = np.array([[1, 0]] * 5 + [[0.5, 0.5]] * 5)
  q = p.mean(0)
  kl = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0), 1)
  second = np.exp(kl.mean())
  assert mean == pytest.approx((1 + second) / 2)
  assert std == pytest.approx(abs(1 - second) / 2)


# --- Precision / recall, density / coverage -----------------------------------


def _line(*xs):
  return np.array([[x, 0.0] for x in xs])


def test_precision_recall_density_coverage_by_hand():
  real, fake = _line(0, 1, 2, 3), _line(0.5, 3.9, 10)
  # k = 1: every real ball has radius 1; fake radii 3.4, 3.4, 6.1.
  # 0.5 is in the balls of 0 and 1, 3.9 in that of 3, 10 in none.
  assert im.precision_recall(real, fake, k=1) == pytest.approx((2 / 3, 1.0))
  density, coverage = im.density_coverage(real, fake, k=1)
  assert density == pytest.approx((2 + 1 + 0) / 3)
  # Reals 0, 1 and 3 have a fake closer than 1; 2's nearest is 1.5 away.
  assert coverage == pytest.approx(3 / 4)


def test_ball_boundary_precision_inclusive_density_strict():
  real, fake = _line(0, 1), _line(2, 10)  # 2 is exactly on 1's ball.
  assert im.precision_recall(real, fake, k=1)[0] == 0.5  # <= (Kynkaenniemi).
  assert im.density_coverage(real, fake, k=1) == (0.0, 0.0)  # < (Naeem).


def _brute_force(real, fake, k):
  d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1)
  r_real = np.sort(d(real, real), axis=1)[:, k]
  r_fake = np.sort(d(fake, fake), axis=1)[:, k]
  drf = d(real, fake)
  return ((drf <= r_real[:, None]).any(0).mean(),
          (drf <= r_fake[None, :]).any(1).mean(),
          (drf < r_real[:, None]).sum(0).mean() / k,
          (drf.min(1) < r_real).mean())


def test_prdc_match_brute_force_on_random_points(monkeypatch):
  rng = np.random.default_rng(0)
  real = rng.normal(size=(60, 8)).astype(np.float32)
  fake = rng.normal(0.3, 1.2, size=(50, 8)).astype(np.float32)
  # Tiny row blocks, so that the chunking is exercised too.
  monkeypatch.setattr(im, '_row_chunks', lambda n, other: [
      (i, min(i + 7, n)) for i in range(0, n, 7)])
  for k in (3, 5):
    p, r, d, c = _brute_force(real.astype(np.float64), fake.astype(np.float64),
                              k)
    assert im.precision_recall(real, fake, k) == pytest.approx((p, r))
    assert im.density_coverage(real, fake, k) == pytest.approx((d, c))


# --- Reference statistics cache -----------------------------------------------


class StubExtractor:
  """'pool' = per-channel means and squares; counts the images it saw."""

  def __init__(self, weights_hash='a' * 64):
    self.weights_hash = weights_hash
    self.seen = 0

  def __call__(self, images):
    images = np.asarray(images, np.float32)
    self.seen += len(images)
    flat = images.reshape(len(images), -1)
    pool = np.concatenate([flat[:, :6], flat[:, :2] ** 2], axis=1)
    logits = np.concatenate([flat[:, :5] * 20, np.zeros((len(images), 5))], 1)
    return {'pool': pool, 'logits': logits, 'logits_unbiased': logits}


def _real_batches(seed=0, size=8, batch=64):
  def fn(split):
    rng = np.random.default_rng(seed + (split == 'test'))
    while True:  # Endless, like a training iterator.
      yield rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  return fn


def _stats_args(**overrides):
  args = dict(dataset='cifar10', split='train', resolution=(8, 8),
              num_images=300, weights_hash='a' * 64)
  args.update(overrides)
  return args


def test_reference_stats_cached_and_keyed(tmp_path):
  extract = StubExtractor()
  first = reference.reference_stats(extract, _real_batches(), **_stats_args(),
                                    cache_dir=str(tmp_path))
  assert extract.seen == 300 and first.num_images == 300
  assert os.path.isfile(first.path)
  np.testing.assert_allclose(first.mu, first.features.mean(0, dtype=np.float64))

  def no_data(split):
    raise AssertionError(f'read the {split} data although cached')

  again = reference.reference_stats(extract, no_data, **_stats_args(),
                                    cache_dir=str(tmp_path))
  assert extract.seen == 300 and again.path == first.path
  np.testing.assert_array_equal(again.sigma, first.sigma)
  np.testing.assert_array_equal(again.features, first.features)

  paths = {first.path}
  for change in (dict(split='test'), dict(weights_hash='b' * 64),
                 dict(num_images=200), dict(dataset='celeba')):
    stats = reference.reference_stats(
        extract, _real_batches(size=8), **_stats_args(**change),
        cache_dir=str(tmp_path))
    paths.add(stats.path)
  stats = reference.reference_stats(
      extract, _real_batches(size=16), **_stats_args(resolution=(16, 16)),
      cache_dir=str(tmp_path))
  paths.add(stats.path)
  assert len(paths) == 6
  assert len(os.listdir(tmp_path)) == 6


def test_reference_stats_recomputed_when_file_is_stale(tmp_path):
  extract = StubExtractor()
  stats = reference.reference_stats(extract, _real_batches(), **_stats_args(),
                                    cache_dir=str(tmp_path))
  with np.load(stats.path) as data:
    content = dict(data)
  content['weights_hash'] = np.array('c' * 64)
  np.savez(stats.path, **content)
  reference.reference_stats(extract, _real_batches(), **_stats_args(),
                            cache_dir=str(tmp_path))
  assert extract.seen == 600


def test_reference_resolution_mismatch_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='resolution'):
    reference.reference_stats(StubExtractor(), _real_batches(size=16),
                              **_stats_args(), cache_dir=str(tmp_path))


# --- evaluate_images ----------------------------------------------------------


def test_evaluate_images_end_to_end(tmp_path):
  extract = StubExtractor()
  calls = []
  rng = np.random.default_rng(5)

  def sample_fn(n):
    calls.append(n)
    return rng.uniform(-1, 1, (n, 8, 8, 3)).astype(np.float32)

  config = {'metrics': ['fid_1k_train', 'kid', 'is_1k', 'pr', 'dc_1k_test'],
            'num_samples': 500, 'num_reference': 1200,
            'sample_batch_size': 300, 'cache_dir': str(tmp_path),
            'kid_subsets': 5, 'kid_subset_size': 100}
  results = im.evaluate_images(config, sample_fn, _real_batches(), 'cifar10',
                               extractor=extract)
  assert sum(calls) == 1000 and max(calls) <= 300
  assert set(results) == {
      'fid_1k_train', 'kid', 'kid/std', 'is_1k', 'is_1k/std', 'pr/precision',
      'pr/recall', 'dc_1k_test/density', 'dc_1k_test/coverage'}
  assert all(isinstance(v, float) and np.isfinite(v) for v in results.values())
  # Same distribution of images on both sides: near-perfect scores.
  assert 0 <= results['fid_1k_train'] < 0.05
  assert abs(results['kid']) < 0.01
  assert results['pr/precision'] > 0.8 and results['pr/recall'] > 0.8
  assert 0.7 < results['dc_1k_test/density'] < 1.3
  assert results['dc_1k_test/coverage'] > 0.8
  assert len(os.listdir(tmp_path)) == 2  # train and test statistics.
  seen = extract.seen
  im.evaluate_images(config, sample_fn, _real_batches(), 'cifar10',
                     extractor=extract)
  assert extract.seen == seen + 1000  # Only the generated images this time.


def test_unknown_metric_is_a_user_error():
  with pytest.raises(UserError, match='unknown image metric'):
    im.evaluate_images({'metrics': ['fid_7k_train']}, None, None, 'cifar10',
                       extractor=StubExtractor())


def test_registry_names_state_their_protocol():
  m = im.METRICS['fid_10k_train']
  assert (m.num_samples, m.split, m.needs_real) == (10_000, 'train', True)
  m = im.METRICS['is_50k']
  assert (m.num_samples, m.needs_real) == (50_000, False)
  assert im.METRICS['kid'].num_samples is None


@pytest.mark.parametrize('settings, match', [
    (dict(metrics='is', num_samples=5),
     r"'is' gets 5 generated images but needs at least 10 \(eval.is_splits 10\)"
     r'; raise --config.eval.num_samples or lower --config.eval.is_splits'),
    (dict(metrics='fid_1k_train', num_reference=1),
     "'fid_1k_train' gets 1 reference images but needs at least 2; raise "
     '--config.eval.num_reference'),
    (dict(metrics='kid', num_samples=1), "'kid' gets 1 generated images"),
    (dict(metrics='pr', num_samples=3), r'needs at least 4 \(eval.pr_k 3\)'),
    (dict(metrics='dc_1k_test', num_reference=4),
     r"'dc_1k_test' gets 4 reference images but needs at least 6"),
])
def test_too_few_images_for_a_metric_is_caught_before_training(settings,
                                                                match):
  with pytest.raises(UserError, match=match):
    im.check_counts(settings)


def test_enough_images_pass_the_count_check():
  im.check_counts({'metrics': 'fid,kid,is,pr,dc,classes_clf',
                   'num_samples': 11, 'num_reference': 11})
  im.check_counts({'metrics': 'is_clf_1k,fid_50k_test,pr_1k_train'})


def _own_images_config(path, **data):
  from configs import own_images  # pylint: disable=g-import-not-at-top
  config = own_images.get_config()
  config.data.path = str(path)
  for key, value in data.items():
    config.data[key] = value
  return config


def test_own_images_have_no_test_split(tmp_path):
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = _own_images_config(tmp_path / 'x.npz')
  config.eval.metrics = 'fid_1k_test'
  with pytest.raises(UserError, match="'fid_1k_test' compares with the 'test' "
                     "split, but own images .* have one split, 'train'"):
    evaluate.check(config)


def test_reference_cache_key_follows_channels_seed_and_the_npz_version(
    tmp_path):
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'x.npz'
  np.savez(path, images=np.zeros((4, 8, 8, 3), np.uint8))
  key = lambda **data: evaluate._dataset_key(_own_images_config(path, **data))  # pylint: disable=protected-access
  first = key()
  assert first == key()  # Stable while nothing changes.
  assert len({first, key(channels=1), key(seed=1)}) == 3
  np.savez(path, images=np.ones((5, 8, 8, 3), np.uint8))  # Rewritten.
  assert key() != first


def test_reference_images_fewer_than_a_batch_fail_at_start_up(tmp_path):
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'x.npz'
  np.savez(path, images=np.zeros((300, 8, 8, 3), np.uint8))
  config = _own_images_config(path, image_size=8)
  config.eval.metrics = 'fid_1k_train'  # Read in batches of 500.
  with pytest.raises(UserError, match="only 300 examples, fewer than one "
                     r"global batch of 500 .*the image metrics read the "
                     "'train' split in these batches; add data or lower "
                     '--config.eval.sample_batch_size'):
    evaluate.check_reference_data(config, 300)
  config.eval.sample_batch_size = 100
  evaluate.check_reference_data(config, 300)
