"""Sample-quality metrics of image GANs on FID-Inception or classifier features.

Metrics, each computed as its reference implementation does it, since numbers
are only comparable across papers when the protocol is the same:

  fid  Frechet Inception Distance (Heusel et al. 2017) between Gaussians of
       the 2048-d pool features, in float64, exactly as pytorch-fid's
       `calculate_frechet_distance` (scipy.linalg.sqrtm of sigma1 @ sigma2; if
       that is not finite, both covariances get 1e-6 * I added). One
       deviation: where pytorch-fid raises on a large imaginary part of the
       square root, this returns nan, so a bad evaluation does not end a run.
  kid  Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2
       with the kernel k(x, y) = (x.y / d + 1)^3, averaged over `kid_subsets`
       (100) random subsets of `kid_subset_size` (1000) images of each side,
       as the KID paper, clean-fid and torch-fidelity do; 'name/std' is the
       spread over subsets.
  is   Inception Score (Salimans et al. 2016): exp(E KL(p(y|x) || p(y))) over
       `is_splits` (10) consecutive splits, mean and 'name/std'. p(y|x) is the
       softmax over all 1008 logits *without* the fc bias, as the original
       OpenAI code (pool3 @ softmax/logits/MatMul weights), TTUR and
       torch-fidelity ('logits_unbiased') compute it; generated images are
       i.i.d., so torch-fidelity's shuffle before splitting is left out.
  pr   Improved precision and recall (Kynkaenniemi et al. 2019), k = 3: a
       sample is inside a manifold when its distance to some point of it is
       <= that point's distance to its k-th nearest neighbour. Computed on the
       Inception pool features (the paper used VGG-16), with as many real as
       generated images, as in the paper.
  dc   Density and coverage (Naeem et al. 2020), k = 5, with the strict '<'
       of the authors' code, on the same features and sizes.

A metric name states its protocol and its feature space:

  <kind>[_<space>]_<n>_<split>  (kind fid, kid, pr or dc)
  is[_<space>]_<n>
  <kind>[_<space>]              (generic: `config.eval.num_samples` images,
                                 split `config.eval.reference_split`)

`fid_10k_train` is FID of 10,000 generated images against the reference
statistics of the train split (`reference.py`) on FID-Inception features (no
space tag); `is_50k` needs no real images. The space tag `clf` puts the same
metric on the features of the classifier in `config.eval.classifier_checkpoint`
(classifier.py, trained by tools/train_classifier.py; no download):
`fid_clf_10k_train`, `kid_clf`, `is_clf_10k`. So a number in one space never
carries a name of the other, and both can be tracked in one run (the same
generated images go through each extractor). The formulas are the same in
both spaces; the classifier's IS uses its own logits, bias included. Numbers
in `clf` space compare only between runs evaluated with the same checkpoint.
Two-valued metrics report 'name/precision', 'name/recall' and
'name/density', 'name/coverage'.

Costs beyond the Inception passes, all on the host CPU in numpy: FID's
2048x2048 sqrtm takes ~30 s on 2 cores (seconds on 16); KID's 100 subsets are
6e11 multiply-adds; precision/recall and density/coverage at 10k are 2-3
10k x 10k x 2048 distance products each. In a multi-host run every host
draws and embeds its share of the images, the features are gathered
(shards.py), and process 0 computes the numbers and sends them to all.
"""
import dataclasses
import functools
import logging

import jax
import numpy as np
from scipy import linalg

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError
from gan_jax.metrics import classifier
from gan_jax.metrics import inception
from gan_jax.metrics import reference
from gan_jax.metrics import shards

# Fields of `config.eval` read here, with the values used when a config does
# not set them (configs only need `inception_weights` and `metrics`).
DEFAULTS = {
    'inception_weights': '',
    'classifier_checkpoint': '',  # For the `clf` metrics (classifier.py).
    'metrics': (),
    'num_samples': 10_000,  # For the generic names ('fid', 'kid', ...).
    'reference_split': 'train',  # For the generic names.
    'num_reference': 50_000,  # Real images in the reference statistics.
    'cache_dir': '',  # '' is ~/.cache/gan_jax/reference.
    'sample_batch_size': 500,  # Images per `sample_fn` call.
    'inception_batch_size': 100,  # Per device.
    'kid_subsets': 100,
    'kid_subset_size': 1000,
    'is_splits': 10,
    'pr_k': 3,
    'dc_k': 5,
    'seed': 0,  # KID's random subsets.
}


def field(eval_config, name):
  value = eval_config.get(name, None) if eval_config is not None else None
  return DEFAULTS[name] if value is None else value


# --- The metrics on features ------------------------------------------------


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """FID between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid computes it.

  ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), in float64.
  Returns nan (and logs why) where pytorch-fid would raise on a complex
  square root.
  """
  mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(
      np.float64)
  sigma1 = np.atleast_2d(sigma1).astype(np.float64)
  sigma2 = np.atleast_2d(sigma2).astype(np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'mismatched statistics: {mu1.shape} vs {mu2.shape}, '
                     f'{sigma1.shape} vs {sigma2.shape}')
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    # sigma1 @ sigma2 is singular (fewer images than dimensions, or dead
    # features) and has no square root: regularise both, like pytorch-fid.
    logging.warning('FID: singular covariance product; adding %g to the '
                    'diagonals', eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      logging.warning('FID: imaginary component %g in sqrtm; returning nan',
                      np.max(np.abs(covmean.imag)))
      return float('nan')
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * np.trace(covmean))


def _poly_kernel(x, y):
  # Products in the features' precision (float32 features: sgemm, the cost of
  # KID), the cube and the sums in float64.
  return (np.asarray(x @ y.T, np.float64) / x.shape[1] + 1.0) ** 3


def _float(x):
  x = np.asarray(x)
  return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def kernel_distance(real, fake, num_subsets=100, subset_size=1000, seed=0):
  """KID: (mean, std) over subsets of the unbiased MMD^2, cubic kernel.

  Each subset draws m = min(subset_size, len(real), len(fake)) rows of each
  side without replacement; MMD^2 = (sum of off-diagonal k(r, r') + sum of
  off-diagonal k(f, f')) / (m (m - 1)) - 2 mean k(r, f).
  """
  real, fake = _float(real), _float(fake)
  m = min(subset_size, len(real), len(fake))
  if m < 2:
    raise ValueError(f'KID needs at least 2 images per side, got {m}')
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    r = real[rng.choice(len(real), m, replace=False)]
    f = fake[rng.choice(len(fake), m, replace=False)]
    k_rr, k_ff, k_rf = _poly_kernel(r, r), _poly_kernel(f, f), _poly_kernel(r, f)
    same = (k_rr.sum() - np.trace(k_rr) + k_ff.sum() - np.trace(k_ff))
    values.append(same / (m * (m - 1)) - 2 * k_rf.mean())
  return float(np.mean(values)), float(np.std(values))


def inception_score(logits, splits=10):
  """IS: (mean, std) over `splits` consecutive splits of softmax(logits)."""
  logits = np.asarray(logits, np.float64)
  n = len(logits)
  if n < splits:
    raise ValueError(f'IS with {splits} splits needs at least {splits} '
                     f'images, got {n}')
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    lo, hi = i * n // splits, (i + 1) * n // splits
    q = p[lo:hi].mean(axis=0)
    # 0 log 0 = 0: classes no image of the split predicts (their p
    # underflowed to 0) add nothing, rather than a nan.
    log_q = np.log(np.where(q > 0, q, 1.0))
    terms = p[lo:hi] * (log_p[lo:hi] - log_q)
    kl = np.sum(np.where(p[lo:hi] > 0, terms, 0.0), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _row_chunks(n, other):
  """Row blocks whose distance matrices against `other` rows stay ~256 MiB."""
  step = max(1, (1 << 25) // max(other, 1))
  return [(i, min(i + step, n)) for i in range(0, n, step)]


def _distances(a, b):
  """Euclidean distances [len(a), len(b)], in float64 from |a|^2 + |b|^2 - 2ab.

  The products dominate the cost (10k x 10k x 2048 is 2e11 multiply-adds) and
  are done in the features' precision: for float32 features the error is
  ~1e-7 of |a||b|, far below the gaps between neighbours.
  """
  a, b = _float(a), _float(b)
  aa = np.sum(np.square(a, dtype=np.float64), axis=1)[:, None]
  bb = np.sum(np.square(b, dtype=np.float64), axis=1)[None, :]
  ab = np.asarray(a @ b.T, np.float64)
  return np.sqrt(np.maximum(aa + bb - 2 * ab, 0.0))


def knn_radii(x, k):
  """Distance of each row of `x` to its k-th nearest other row."""
  x = np.asarray(x)
  if len(x) <= k:
    raise ValueError(f'k-NN with k={k} needs more than {k} points, got '
                     f'{len(x)}')
  radii = []
  for lo, hi in _row_chunks(len(x), len(x)):
    d = _distances(x[lo:hi], x)
    # The k+1-th smallest, counting the point itself at distance 0.
    radii.append(np.partition(d, k, axis=1)[:, k])
  return np.concatenate(radii)


def _inside_any(points, centres, radii, strict=False):
  """Per point: how many balls B(centre, radius) contain it."""
  counts = np.zeros(len(points), np.int64)
  for lo, hi in _row_chunks(len(centres), len(points)):
    d = _distances(centres[lo:hi], points)
    r = radii[lo:hi, None]
    counts += np.sum(d < r if strict else d <= r, axis=0)
  return counts


def precision_recall(real, fake, k=3):
  """(precision, recall) of Kynkaenniemi et al. 2019 with k-NN balls."""
  real, fake = np.asarray(real), np.asarray(fake)
  precision = np.mean(_inside_any(fake, real, knn_radii(real, k)) > 0)
  recall = np.mean(_inside_any(real, fake, knn_radii(fake, k)) > 0)
  return float(precision), float(recall)


def density_coverage(real, fake, k=5):
  """(density, coverage) of Naeem et al. 2020 with k-NN balls around reals."""
  real, fake = np.asarray(real), np.asarray(fake)
  radii = knn_radii(real, k)
  density = np.mean(_inside_any(fake, real, radii, strict=True)) / k
  covered = np.zeros(len(real), bool)
  for lo, hi in _row_chunks(len(real), len(fake)):
    nearest_fake = _distances(real[lo:hi], fake).min(axis=1)
    covered[lo:hi] = nearest_fake < radii[lo:hi]
  return float(density), float(np.mean(covered))


def class_coverage(logits, confidence=0.9, labels=None):
  """How a labelled-data classifier sorts generated images, from its logits
  [n, N]: {'' : classes covered, 'min_share', 'confident'}; with the `labels`
  [n] a conditional G was asked for, also 'label_acc' and 'label_acc_<c>'.

  A class is covered when at least half its even share of the samples, n/(2N),
  is predicted as it; min_share is the rarest class's share over the even
  share 1/N (1: perfectly balanced, 0: a class missing); confident is the
  fraction of samples with top probability >= `confidence` (recognisable to
  the classifier). A mode-coverage count in the spirit of the "modes" of
  Che et al. 2017 and Srivastava et al. 2017, on a classifier instead of
  mode centres. label_acc is the fraction of samples the classifier puts in
  the class they were asked for (the classification accuracy score's test
  on generated data), label_acc_<c> the same among those asked for class c.
  """
  logits = np.asarray(logits, np.float64)
  n, num_classes = logits.shape
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  predicted = p.argmax(axis=1)
  share = np.bincount(predicted, minlength=num_classes) / n
  out = {'': float(np.sum(share >= 0.5 / num_classes)),
         'min_share': float(share.min() * num_classes),
         'confident': float(np.mean(p.max(axis=1) >= confidence))}
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= num_classes:
      raise UserError(f'{n} samples have labels of shape {labels.shape} in '
                      f'[{labels.min()}, {labels.max()}], not one of the '
                      f"classifier's {num_classes} classes each; set "
                      'num_classes to the classifier\'s')
    hit = predicted == labels
    out['label_acc'] = float(np.mean(hit))
    for c in np.unique(labels):
      out[f'label_acc_{c}'] = float(np.mean(hit[labels == c]))
  return out


# --- The registry -----------------------------------------------------------


def _fid(fake, ref, cfg):
  del cfg
  mu, sigma = reference.gaussian(fake['pool'])
  return {'': frechet_distance(mu, sigma, ref.mu, ref.sigma)}


def _kid(fake, ref, cfg):
  mean, std = kernel_distance(ref.features, fake['pool'],
                              field(cfg, 'kid_subsets'),
                              field(cfg, 'kid_subset_size'),
                              field(cfg, 'seed'))
  return {'': mean, 'std': std}


def _is(fake, ref, cfg):
  del ref
  mean, std = inception_score(fake['logits_unbiased'], field(cfg, 'is_splits'))
  return {'': mean, 'std': std}


def _classes(fake, ref, cfg):
  del ref, cfg
  return class_coverage(fake['logits_unbiased'], labels=fake.get('labels'))


def _pr(fake, ref, cfg):
  real = ref.features[:len(fake['pool'])]  # As many real as generated.
  p, r = precision_recall(real, fake['pool'], field(cfg, 'pr_k'))
  return {'precision': p, 'recall': r}


def _dc(fake, ref, cfg):
  real = ref.features[:len(fake['pool'])]
  d, c = density_coverage(real, fake['pool'], field(cfg, 'dc_k'))
  return {'density': d, 'coverage': c}


@dataclasses.dataclass(frozen=True)
class Metric:
  """A registered metric: `fn(fake_features, reference_stats, eval_config)`.

  `num_samples`/`split` None: taken from config.eval.num_samples /
  reference_split. `needs_real` False: no reference statistics (IS).
  `space`: the feature extractor (a key of EXTRACTORS).
  """
  fn: object
  num_samples: int = None
  split: str = None
  needs_real: bool = True
  space: str = 'inception'


METRICS = {}


def register(name, fn, num_samples=None, split=None, needs_real=True,
             space='inception'):
  METRICS[name] = Metric(fn, num_samples, split, needs_real, space)


# Feature spaces and the tag their metric names carry after the kind.
SPACE_TAGS = {'inception': '', 'classifier': 'clf'}
_KINDS = {'fid': _fid, 'kid': _kid, 'pr': _pr, 'dc': _dc}
_SIZES = ((1_000, '1k'), (5_000, '5k'), (10_000, '10k'), (50_000, '50k'))
for _space, _tag in SPACE_TAGS.items():
  _t = f'_{_tag}' if _tag else ''
  for _kind, _fn in _KINDS.items():
    register(f'{_kind}{_t}', _fn, space=_space)
  register(f'is{_t}', _is, needs_real=False, space=_space)
  for _n, _label in _SIZES:
    for _kind, _fn in _KINDS.items():
      for _split in ('train', 'test'):
        register(f'{_kind}{_t}_{_label}_{_split}', _fn, _n, _split,
                 space=_space)
    register(f'is{_t}_{_label}', _is, _n, needs_real=False, space=_space)
# Class coverage needs a classifier of the data's own classes: not Inception.
register('classes_clf', _classes, needs_real=False, space='classifier')
for _n, _label in _SIZES:
  register(f'classes_clf_{_label}', _classes, _n, needs_real=False,
           space='classifier')


def get(name):
  if name not in METRICS:
    raise UserError(f'unknown image metric {name!r}; known: fid, kid, is, pr, '
                    'dc, or <fid|kid|pr|dc>_<1k|5k|10k|50k>_<train|test>, '
                    'is_<1k|5k|10k|50k>, each also with _clf after the kind '
                    '(classifier features, e.g. fid_clf_10k_train), and '
                    'classes_clf[_<1k|5k|10k|50k>] (class coverage)')
  return METRICS[name]


def spaces(names):
  """The feature spaces (EXTRACTORS keys) that the metrics `names` need."""
  return sorted({get(name).space for name in names})


# --- Evaluation ---------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _extractor(weights_path, batch_size, version):
  # Kept between evaluations: loading the weights and compiling the network
  # take longer than a 10k-image evaluation on an accelerator. `version`: a
  # re-converted file is loaded again (its hash keys the reference stats).
  del version
  return inception.FeatureExtractor(weights_path, batch_size)


def _inception_extractor(eval_config):
  path = inception.resolve_weights_path(field(eval_config,
                                               'inception_weights'))
  return _extractor(path, field(eval_config, 'inception_batch_size'),
                    workdir_lib.version(path))


def _classifier_extractor(eval_config):
  return classifier.get_extractor(field(eval_config, 'classifier_checkpoint'))


# Feature space -> `eval_config -> extractor`: a callable `images ->
# {'pool', 'logits', 'logits_unbiased'}` with a `weights_hash`.
EXTRACTORS = {'inception': _inception_extractor,
              'classifier': _classifier_extractor}


def get_extractor(eval_config, space='inception'):
  """The (cached) extractor of `space` for `config.eval`; UserError without
  its weights (Inception) or checkpoint (classifier)."""
  return EXTRACTORS[space](eval_config)


def generated_features(extracts, sample_rows, num, batch_size):
  """Features of generated images 0 .. num-1, the same on every process.

  `extracts`: {space: extractor}; every extractor sees the same images.
  `sample_rows(start, stop)`: generated images start .. stop-1, at most
  `batch_size` at a time. Each process draws and embeds its rows
  (shards.py), then the features are gathered.
  Returns ({space: {'pool', 'logits_unbiased'}}, (H, W)).
  """
  if num < jax.process_count():  # The same on every host: all raise.
    raise UserError(f'{num} samples cannot be split over '
                    f'{jax.process_count()} hosts; evaluate more samples')
  per = shards.chunk_size(num, batch_size)
  mine = shards.rows(num, per)
  outs, shape = {s: [] for s in extracts}, None
  for lo in range(0, len(mine), per):  # Each piece: consecutive rows.
    start, stop = int(mine[lo]), int(mine[min(lo + per, len(mine)) - 1]) + 1
    images = np.asarray(sample_rows(start, stop), np.float32)
    if images.ndim != 4 or len(images) != stop - start:
      raise ValueError(f'sample_rows returned {images.shape}, expected '
                       f'[{stop - start}, H, W, C] images')
    shape = images.shape[1:3]
    for space, extract in extracts.items():
      out = extract(images)
      outs[space].append({k: out[k] for k in ('pool', 'logits_unbiased')})
  feats = {s: shards.gather({k: np.concatenate([o[k] for o in o_s])
                             for k in o_s[0]}, num, per)
           for s, o_s in outs.items()}
  return feats, tuple(shape)


def metric_names(eval_config):
  """`config.eval.metrics` as a list: a comma-separated string or a sequence."""
  names = field(eval_config, 'metrics')
  if isinstance(names, str):
    names = names.split(',')
  return [n.strip() for n in names if n.strip()]


def check_counts(eval_config):
  """UserError at start-up, not at the first evaluation, where a metric of
  `eval_config` would get too few images: IS fewer than `is_splits`, PR/DC
  no more than their k on either side (their real side is as many reference
  images as generated ones), FID/KID fewer than 2."""
  n_ref = field(eval_config, 'num_reference')
  for name in metric_names(eval_config):
    m = get(name)
    n = _num_samples(eval_config, m)
    setting, need = {_is: ('is_splits', field(eval_config, 'is_splits')),
                     _pr: ('pr_k', field(eval_config, 'pr_k') + 1),
                     _dc: ('dc_k', field(eval_config, 'dc_k') + 1),
                     _classes: (None, 1)}.get(m.fn, (None, 2))
    sides = [('generated', n, None if m.num_samples else 'num_samples')]
    if m.needs_real:
      sides.append(('reference', min(n, n_ref) if m.fn in (_pr, _dc) else n_ref,
                    'num_reference'))
    for side, have, knob in sides:
      if have >= need:
        continue
      fixes = ([f'raise --config.eval.{knob}'] if knob else []) + (
          [f'lower --config.eval.{setting}'] if setting else [])
      rule = f' (eval.{setting} {field(eval_config, setting)})' if setting else ''
      raise UserError(f'metric {name!r} gets {have} {side} images but needs '
                      f'at least {need}{rule}; {" or ".join(fixes)}')


def evaluate_images(eval_config, sample_fn, real_batches_fn, dataset,
                    extractor=None, labels=None):
  """`evaluate_samples` with `sample_fn(n)`: new images every call.

  With several processes each one's `sample_fn` gives its own share of the
  samples (its rows, shards.py), e.g. its shard of a real data split.
  """
  def sample_rows(start, stop):  # Called in order: the next stop - start.
    return sample_fn(stop - start)
  return evaluate_samples(eval_config, sample_rows, real_batches_fn, dataset,
                          extractor, labels)


def evaluate_samples(eval_config, sample_rows, real_batches_fn, dataset,
                     extractor=None, labels=None):
  """Computes the metrics named in `eval_config.metrics`; {name: float}.

  In a multi-host run every process calls this and gets the same numbers:
  each draws and embeds its share of the samples and of the real images
  (shards.py); process 0 computes the metrics on the gathered features and
  alone reads and writes the reference statistics' cache.

  Args:
    eval_config: `config.eval` (fields and defaults: DEFAULTS above).
    sample_rows: `(start, stop) -> float32 [stop - start, H, W, C] in [-1, 1]`,
      C 1 or 3: generated images start .. stop-1 (at most sample_batch_size
      at a time; sampling.make_sample_rows).
    real_batches_fn: `split -> iterable of float32 [b, H, W, C] in [-1, 1]`:
      real images (this host's share of each global batch), read only while
      the split's reference statistics are not cached (up to `num_reference`
      images; an endless iterator is fine).
    dataset: the name the cache is keyed by (include the path for image
      folders).
    extractor: an extractor to use instead of the config's, for every space,
      or {space: extractor} (tests).
    labels: for a conditional G, `num -> int [num]`: the classes samples
      0 .. num-1 were asked for (sampling.row_labels); the metrics see them
      as the features' 'labels'.

  Returns:
    {metric name: value}, plus 'name/std' (KID, IS), 'name/precision',
    'name/recall' (pr) and 'name/density', 'name/coverage' (dc).

  Raises:
    UserError: no weights file (one line: where to get it and how to convert
      it), no classifier checkpoint (how to train one), an unknown metric
      name, or real images of another resolution.
  """
  names = metric_names(eval_config)
  metrics = {name: get(name) for name in names}
  if not metrics:
    return {}
  extracts = {}
  for space in spaces(names):
    given = extractor.get(space) if isinstance(extractor, dict) else extractor
    extracts[space] = given or get_extractor(eval_config, space)
  fake, resolution = generated_features(
      extracts, sample_rows,
      max(_num_samples(eval_config, m) for m in metrics.values()),
      field(eval_config, 'sample_batch_size'))
  if labels is not None:
    for feats in fake.values():
      feats['labels'] = np.asarray(labels(len(feats['pool'])))
  refs = _references(eval_config, metrics, extracts, real_batches_fn, dataset,
                     resolution)
  results = None
  if jax.process_index() == 0:  # Once, on what every host gathered.
    results = _values(eval_config, metrics, fake, refs)
  return shards.broadcast(results)


def _values(eval_config, metrics, fake, refs):
  """{name: float} of `metrics` on the features `fake` and stats `refs`."""
  results = {}
  for name, m in metrics.items():
    n = _num_samples(eval_config, m)
    values = m.fn({k: v[:n] for k, v in fake[m.space].items()},
                  refs[m.space, _split(eval_config, m)] if m.needs_real
                  else None, eval_config)
    for suffix, value in values.items():
      results[f'{name}/{suffix}' if suffix else name] = float(value)
  return results


def _num_samples(eval_config, metric):
  return metric.num_samples or field(eval_config, 'num_samples')


def _split(eval_config, metric):
  return metric.split or field(eval_config, 'reference_split')


def reference_split(eval_config, name):
  """The split the metric `name` compares with; None if it needs none."""
  m = get(name)
  return _split(eval_config, m) if m.needs_real else None


def _references(eval_config, metrics, extracts, real_batches_fn, dataset,
                resolution):
  """{(space, split): ReferenceStats} of the metrics that need real images."""
  refs = {}
  for m in metrics.values():
    key = (m.space, _split(eval_config, m))
    if m.needs_real and key not in refs:
      # weights_hash: the Inception file's or the classifier checkpoint's.
      refs[key] = reference.reference_stats(
          extracts[m.space], real_batches_fn, dataset=dataset, split=key[1],
          resolution=resolution,
          num_images=field(eval_config, 'num_reference'),
          weights_hash=extracts[m.space].weights_hash,
          cache_dir=field(eval_config, 'cache_dir'))
  return refs
