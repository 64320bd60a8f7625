"""KID, precision/recall and density/coverage against reference packages.

The references get the same features as gan_jax: prdc 0.2 (Naeem et al.'s
code) for precision, recall, density and coverage; clean-fid 0.1.35's
`kernel_distance` for KID. Then sanity checks of FID against closed forms.

Conventions (checked here, not assumed):
  k: prdc's `nearest_k` is gan_jax's k. Both radii are the distance to the
     k-th nearest *other* point: prdc takes the largest of the k + 1 smallest
     distances, gan_jax entry k of the partitioned row, and both rows hold the
     point itself at distance 0. So gan_jax's pr_k = 3 and dc_k = 5 are
     `compute_prdc(..., nearest_k=3)`'s precision/recall and
     `nearest_k=5`'s density/coverage.
  Ball boundaries: density and coverage are strict ('<') in both. For
     precision and recall prdc is strict too, but gan_jax is inclusive ('<=')
     as Kynkaenniemi et al.'s code. They differ only where a distance equals
     a radius exactly, which continuous features never hit: there the four
     values must agree exactly; on integer features, where ties are the rule,
     precision/recall are checked against prdc's radii with '<='.
"""
import contextlib
import io

import numpy as np
import pytest

from gan_jax.metrics import image_metrics as im
from gan_jax.metrics import reference
from tests.conftest import importorskip_extra

# --- Precision / recall, density / coverage against prdc ---------------------


def _prdc(real, fake):
  """prdc's values in gan_jax's protocol: P/R with k = 3, D/C with k = 5."""
  prdc = importorskip_extra('prdc.prdc', 'prdc')
  with contextlib.redirect_stdout(io.StringIO()):  # It prints the sizes.
    pr = prdc.compute_prdc(real, fake, nearest_k=im.DEFAULTS['pr_k'])
    dc = prdc.compute_prdc(real, fake, nearest_k=im.DEFAULTS['dc_k'])
  return pr['precision'], pr['recall'], dc['density'], dc['coverage']


def _ours(real, fake):
  return (im.precision_recall(real, fake, im.DEFAULTS['pr_k'])
          + im.density_coverage(real, fake, im.DEFAULTS['dc_k']))


def _assert_same(got, want):
  # Ratios of counts: one point more or less changes a value by >= 1/(5 n).
  # rel 1e-12 only absorbs density's rounding (count / k vs (1 / k) * count).
  for name, g, w in zip(('precision', 'recall', 'density', 'coverage'), got,
                        want):
    assert g == pytest.approx(w, rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize('num_real,num_fake,dim,seed,dtype', [
    (200, 150, 16, 0, np.float64),
    (200, 150, 64, 1, np.float64),
    (150, 200, 32, 2, np.float64),
    (300, 300, 32, 3, np.float32),  # The features' dtype in evaluations.
])
@pytest.mark.extras
def test_prdc_match_prdc_package(num_real, num_fake, dim, seed, dtype):
  rng = np.random.default_rng(seed)
  real = rng.normal(size=(num_real, dim)).astype(dtype)
  fake = rng.normal(0.2, 1.1, size=(num_fake, dim)).astype(dtype)
  want = _prdc(real, fake)
  assert 0 < min(want) and max(want[:2] + want[3:]) < 1  # Not trivial.
  _assert_same(_ours(real, fake), want)


@pytest.mark.extras
def test_prdc_match_prdc_package_with_duplicates():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(200, 32))
  real[100:120] = real[:20]  # Duplicate images in the dataset.
  fake = rng.normal(0.2, 1.1, size=(150, 32))
  fake[:30] = real[:30]  # Memorised training images.
  fake[30:35] = fake[35]  # Mode collapse: 6 identical samples.
  want = _prdc(real, fake)
  assert want[0] >= 30 / 150  # The copies count as inside the real manifold.
  _assert_same(_ours(real, fake), want)


@pytest.mark.extras
def test_tie_convention_on_integer_features():
  prdc = importorskip_extra('prdc.prdc', 'prdc')
  # On a small lattice distances repeat exactly (they are computed exactly in
  # float64), and many radii are 0 (a point with k or more copies).
  rng = np.random.default_rng(0)
  real = rng.integers(0, 3, size=(200, 4)).astype(np.float64)
  fake = rng.integers(0, 4, size=(150, 4)).astype(np.float64)
  got, want = _ours(real, fake), _prdc(real, fake)
  _assert_same(got[2:], want[2:])  # Density, coverage: '<' in both.
  # Precision/recall: prdc's radii and distances, Kynkaenniemi's '<='.
  k = im.DEFAULTS['pr_k']
  dist = prdc.compute_pairwise_distance(real, fake)
  r_real = prdc.compute_nearest_neighbour_distances(real, k)
  r_fake = prdc.compute_nearest_neighbour_distances(fake, k)
  inclusive = ((dist <= r_real[:, None]).any(0).mean(),
               (dist <= r_fake[None, :]).any(1).mean())
  assert got[:2] == pytest.approx(inclusive, rel=1e-12)
  # ... which here is not prdc's strict '<' (the test would not tell them
  # apart otherwise).
  assert got[0] > want[0] and got[1] > want[1]


# --- KID against clean-fid ----------------------------------------------------


def _clean_fid_kid(monkeypatch, real, fake, num_subsets, subset_size, seed):
  """clean-fid's KID value of each subset, on gan_jax's random subsets.

  clean-fid draws its subsets with the global `np.random.choice`, first of
  its second argument, then of its first; gan_jax draws from
  `default_rng(seed)`, first real, then fake. With `np.random.choice`
  replaced by that generator's and the arguments (fake, real), both use the
  same rows in every subset. (The MMD is symmetric in its two sides.)
  """
  fid = importorskip_extra('cleanfid.fid', 'clean-fid')
  monkeypatch.setattr(np.random, 'choice',
                      np.random.default_rng(seed).choice)
  return [fid.kernel_distance(fake, real, num_subsets=1,
                              max_subset_size=subset_size)
          for _ in range(num_subsets)]


@pytest.mark.parametrize('num_real,num_fake,dim,num_subsets,subset_size', [
    (120, 120, 16, 3, 1000),  # Every subset is a permutation of all images.
    (200, 150, 32, 4, 1000),  # m = 150: random subsets of the reals only.
    (200, 150, 64, 10, 50),
    (300, 250, 32, 5, 100),
])
@pytest.mark.extras
def test_kid_matches_clean_fid(monkeypatch, num_real, num_fake, dim,
                               num_subsets, subset_size):
  rng = np.random.default_rng(dim + num_subsets)
  real = rng.normal(size=(num_real, dim))
  fake = rng.normal(0.1, 1.2, size=(num_fake, dim))
  mean, std = im.kernel_distance(real, fake, num_subsets, subset_size, seed=7)
  values = _clean_fid_kid(monkeypatch, real, fake, num_subsets, subset_size,
                          seed=7)
  assert mean > 0.01  # Different distributions.
  assert mean == pytest.approx(np.mean(values), rel=1e-10)
  assert std == pytest.approx(np.std(values), rel=1e-8, abs=1e-12)


@pytest.mark.extras
def test_kid_of_float32_features_matches_clean_fid_in_float64(monkeypatch):
  # gan_jax multiplies float32 features in float32 (sgemm); the value must
  # stay that of the exact (float64) computation on the same numbers.
  rng = np.random.default_rng(0)
  real = np.abs(rng.normal(size=(400, 256))).astype(np.float32)
  fake = np.abs(rng.normal(0, 1.1, size=(400, 256))).astype(np.float32)
  mean, _ = im.kernel_distance(real, fake, 4, 200, seed=1)
  values = _clean_fid_kid(monkeypatch, real.astype(np.float64),
                          fake.astype(np.float64), 4, 200, seed=1)
  assert mean == pytest.approx(np.mean(values), rel=1e-6)


# --- FID sanity ---------------------------------------------------------------


def _features(rng, n, dim):
  """Non-negative, correlated features of Inception-like scale."""
  return np.abs(rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))) / 2


@pytest.mark.parametrize('n,dim', [(500, 64), (50, 64)])  # 50: singular.
def test_fid_of_a_mean_shift_is_its_squared_norm(n, dim):
  # Equal covariances: FID(x, x + c v) = c^2 |v|^2 exactly, 0 at c = 0.
  rng = np.random.default_rng(n)
  x = _features(rng, n, dim)
  v = rng.normal(size=dim)
  mu, sigma = reference.gaussian(x)
  scale = np.trace(sigma)
  fids = [im.frechet_distance(mu, sigma, *reference.gaussian(x + c * v))
          for c in (0, 0.01, 0.1, 1, 10)]
  assert abs(fids[0]) < 1e-6 * scale
  assert np.all(np.diff(fids) > 0)
  want = np.array([0, 0.01, 0.1, 1, 10]) ** 2 * (v @ v)
  np.testing.assert_allclose(fids, want, rtol=1e-9, atol=1e-6 * scale)


def test_fid_of_a_scaled_set():
  # FID(x, s x) = |(s - 1) mu|^2 + Tr(S + s^2 S - 2 s S)
  #             = (s - 1)^2 (|mu|^2 + Tr S): the covariance term at work.
  rng = np.random.default_rng(1)
  x = _features(rng, 500, 64)
  mu, sigma = reference.gaussian(x)
  for s in (0.5, 1.001, 1.1, 2):
    want = (s - 1) ** 2 * (mu @ mu + np.trace(sigma))
    got = im.frechet_distance(mu, sigma, *reference.gaussian(s * x))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * np.trace(sigma))
