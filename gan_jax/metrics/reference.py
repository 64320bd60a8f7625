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

In a multi-host run every host embeds its own shard of the real images
(shards.py) and process 0, which computes the metrics, alone reads and
writes the file: the other hosts need not see cache_dir (~ is per host).

cache_dir may be a `gs://` URL. The file appears whole or not at all (a
local file is renamed into place, an object is uploaded in one request:
workdir.upload), so a writer killed mid-write leaves no file that reads as
valid; one that cannot be read as the key's statistics counts as missing and
is computed and written again.
"""
import dataclasses
import hashlib
import io
import os
import re
import zipfile

import jax
import numpy as np

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError
from gan_jax.metrics import shards

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
    with np.load(io.BytesIO(workdir_lib.read_bytes(path))) as data:
      for k, v in meta.items():
        if not np.array_equal(data[k], v):
          return None
      return ReferenceStats(mu=data['mu'], sigma=data['sigma'],
                            features=data['features'], path=path)
  except (*workdir_lib.storage_errors(), KeyError, EOFError,
          zipfile.BadZipFile):
    return None


def _save(path, stats, meta):
  # Whole or not at all, also when this process is killed mid-write.
  arrays = dict(mu=stats.mu, sigma=stats.sigma, features=stats.features,
                **meta)
  if workdir_lib.is_remote(path):  # One upload.
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    workdir_lib.upload(path, buffer.getvalue())
    return
  # Written under another name, then renamed.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _image_batches(batches, resolution):
  """The images of `batches` ((images, labels) tuples give their images), as
  numpy, checked to be of `resolution`."""
  for batch in batches:
    if isinstance(batch, tuple):
      batch = batch[0]
    batch = np.asarray(batch)
    if resolution is not None and tuple(batch.shape[1:3]) != tuple(resolution):
      raise UserError(
          f'real images are {batch.shape[1]}x{batch.shape[2]} but generated '
          f'ones are {resolution[0]}x{resolution[1]}: the reference statistics '
          'must come from images of the resolution the generator makes')
    yield batch


def extract_real_features(extract, batches, num_images, resolution=None):
  """Pool features of the first `num_images` images of `batches`.

  `extract(images) -> {'pool': ...}`; `batches` is an iterable of float32
  [b, H, W, C] arrays in [-1, 1] (an endless training iterator is fine: it is
  read only up to `num_images`). Batches of labelled data, (images, labels)
  tuples, give their images. One process uses fewer images if `batches` ends
  first. Several processes each read their share of every global batch (a
  data builder's iterator for this process: its rows, shards.py) and all get
  the features of all `num_images`, in the order one process reads them.
  """
  feats, count, mine, per = [], 0, None, None
  for batch in _image_batches(batches, resolution):
    if mine is None:  # This process's rows, known from the first batch.
      per = len(batch)
      mine = len(shards.rows(num_images, per))
    batch = batch[:mine - count]  # Also empty: the features' width.
    feats.append(extract(batch)['pool'])
    count += len(batch)
    if count >= mine:
      break
  if jax.process_count() > 1:
    if not shards.all_true(mine is not None and count == mine):
      raise UserError(f'the real data ended before {num_images} images for '
                      'the reference statistics were read on every host')
    local = np.concatenate(feats).astype(np.float32)
    return shards.gather({'pool': local}, num_images, per)['pool']
  if count < 2:
    raise UserError(f'got {count} real images for the reference statistics; '
                    'need at least 2')
  return np.concatenate(feats).astype(np.float32)


def _store(path, stats, meta):
  """Process 0 writes the cache; UserError on every process if it fails."""
  error = ''
  if jax.process_index() == 0:
    try:
      _save(path, stats, meta)
    except workdir_lib.storage_errors() as e:
      error = workdir_lib.reason(e, path)
  error = shards.broadcast(error)
  if error:
    raise UserError(f'cannot write reference statistics to {path} ({error}); '
                    'set config.eval.cache_dir to a writable folder')


def reference_stats(extract, batches_fn, *, dataset, split, resolution,
                    num_images, weights_hash, cache_dir=''):
  """The real split's statistics: read from the cache, or computed and cached.

  In a multi-host run every process calls this. Process 0 reads the cache;
  without it all processes embed their shards of the images (`batches_fn`
  gives each its own) and process 0 writes it. Process 0 gets the
  statistics, the others None (process 0 computes the metrics).

  Args:
    extract: `images -> {'pool': [b, d]}` (an inception or classifier
      FeatureExtractor).
    batches_fn: `split -> iterable of float32 [b, H, W, C] batches in [-1, 1]`;
      called only when the statistics are not cached yet.
    dataset, split, resolution (H, W), num_images, weights_hash (the
      extractor's): the key.
    cache_dir: where the .npz files go (a folder or a `gs://` URL); '' for
      ~/.cache/gan_jax/reference.
  """
  cache_dir = cache_dir or DEFAULT_CACHE_DIR
  key = cache_key(dataset, split, resolution, num_images, weights_hash)
  if workdir_lib.is_remote(cache_dir):
    path = f'{cache_dir.rstrip("/")}/{key}.npz'
  else:
    path = os.path.join(os.path.expanduser(cache_dir), key + '.npz')
  meta = _metadata(dataset, split, resolution, num_images, weights_hash)
  stats = _load(path, meta) if jax.process_index() == 0 else None
  if shards.broadcast(stats is not None):
    return stats
  feats = extract_real_features(extract, batches_fn(split), num_images,
                                resolution)
  if jax.process_index() == 0:
    mu, sigma = gaussian(feats)
    stats = ReferenceStats(mu=mu, sigma=sigma, features=feats, path=path)
  _store(path, stats, meta)
  return stats
