"""Feature statistics of a real data split, computed once and cached on disk.

FID/KID/precision-recall compare generated images against a fixed set of real
images. Running Inception over 50k real images takes minutes on an accelerator
and hours on a CPU, and the result only depends on which images went in and
which weights saw them, so it is stored as `<cache_dir>/<key>.npz` with:

  mu [d] float64, sigma [d, d] float64: FID's Gaussian (np.cov of the
    float32 pool features, as pytorch-fid computes it; d = 2048 for
    Inception, the feature width for a classifier);
  features [n, d] float32: the pool features themselves, for KID,
    precision/recall and density/coverage;
  and the key's parts, checked on load.

The key is the dataset name, the split, the image resolution, the number of
images asked for and the extractor's hash: the sha256 of the Inception weights
file, or of the classifier checkpoint's files (classifier.py). Converting
other weights or training another classifier must not reuse statistics of the
old ones.
"""
import dataclasses
import hashlib
import os
import re

import numpy as np

from gan_jax.errors import UserError

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'gan_jax', 'reference')


@dataclasses.dataclass
class ReferenceStats:
  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray
  path: str = ''  # The cache file it was read from or written to.

  @property
  def num_images(self):
    return len(self.features)


def cache_key(dataset, split, resolution, num_images, weights_hash):
  """The cache file's name (without .npz) for these parts.

  Dataset names may be paths (own image folders): characters other than
  letters, digits, '.', '-' and '_' become '_', and a short hash of the exact
  name keeps two names that differ only there apart.
  """
  h, w = resolution
  safe = re.sub(r'[^A-Za-z0-9._-]+', '_', str(dataset)).strip('_')[-48:]
  name_hash = hashlib.sha256(str(dataset).encode()).hexdigest()[:8]
  return (f'{safe}-{name_hash}_{split}_{h}x{w}_n{num_images}_'
          f'{weights_hash[:16]}')


def gaussian(features):
  """(mu, sigma) in float64 of [n, d] features, as pytorch-fid computes them."""
  features = np.asarray(features)
  if len(features) < 2:
    raise ValueError(f'need at least 2 feature vectors, got {len(features)}')
  return (np.mean(features, axis=0, dtype=np.float64),
          np.cov(features, rowvar=False))


def _metadata(dataset, split, resolution, num_images, weights_hash):
  return {'dataset': str(dataset), 'split': str(split),
          'resolution': np.asarray(resolution, np.int64),
          'num_requested': np.int64(num_images),
          'weights_hash': str(weights_hash)}


def _load(path, meta):
  """The stats in `path`, or None if it is missing, unreadable or stale."""
  try:
    with np.load(path) as data:
      for k, v in meta.items():
        if not np.array_equal(data[k], v):
          return None
      return ReferenceStats(mu=data['mu'], sigma=data['sigma'],
                            features=data['features'], path=path)
  except (OSError, KeyError, ValueError, EOFError):
    return None


def _save(path, stats, meta):
  # Write then rename: another process (or a killed run) never leaves a
  # half-written file under the final name.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp.npz'
  np.savez(tmp, mu=stats.mu, sigma=stats.sigma, features=stats.features,
           **meta)
  os.replace(tmp, path)


def extract_real_features(extract, batches, num_images, resolution=None):
  """Pool features of the first `num_images` images of `batches`.

  `extract(images) -> {'pool': ...}`; `batches` is an iterable of float32
  [b, H, W, C] arrays in [-1, 1] (an endless training iterator is fine: it is
  read only up to `num_images`). Fewer images are used if it ends first.
  Batches of labelled data, (images, labels) tuples, give their images.
  """
  feats, count = [], 0
  for batch in batches:
    if isinstance(batch, tuple):
      batch = batch[0]
    batch = np.asarray(batch)
    if resolution is not None and tuple(batch.shape[1:3]) != tuple(resolution):
      raise UserError(
          f'real images are {batch.shape[1]}x{batch.shape[2]} but generated '
          f'ones are {resolution[0]}x{resolution[1]}: the reference statistics '
          'must come from images of the resolution the generator makes')
    batch = batch[:num_images - count]
    feats.append(extract(batch)['pool'])
    count += len(batch)
    if count >= num_images:
      break
  if count < 2:
    raise UserError(f'got {count} real images for the reference statistics; '
                    'need at least 2')
  return np.concatenate(feats).astype(np.float32)


def reference_stats(extract, batches_fn, *, dataset, split, resolution,
                    num_images, weights_hash, cache_dir=''):
  """The real split's statistics: read from the cache, or computed and cached.

  Args:
    extract: `images -> {'pool': [b, d]}` (an inception or classifier
      FeatureExtractor).
    batches_fn: `split -> iterable of float32 [b, H, W, C] batches in [-1, 1]`;
      called only when the statistics are not cached yet.
    dataset, split, resolution (H, W), num_images, weights_hash (the
      extractor's): the key.
    cache_dir: where the .npz files go; '' for ~/.cache/gan_jax/reference.
  """
  cache_dir = os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)
  key = cache_key(dataset, split, resolution, num_images, weights_hash)
  path = os.path.join(cache_dir, key + '.npz')
  meta = _metadata(dataset, split, resolution, num_images, weights_hash)
  stats = _load(path, meta)
  if stats is not None:
    return stats
  feats = extract_real_features(extract, batches_fn(split), num_images,
                                resolution)
  mu, sigma = gaussian(feats)
  stats = ReferenceStats(mu=mu, sigma=sigma, features=feats, path=path)
  try:
    _save(path, stats, meta)
  except OSError as e:
    raise UserError(f'cannot write reference statistics to {path} ({e}); set '
                    'config.eval.cache_dir to a writable folder') from e
  return stats
