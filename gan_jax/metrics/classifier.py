"""A small CNN classifier as a feature space that needs no download.

The FID-Inception weights have to be fetched once; for datasets with labels a
classifier trained on them (tools/train_classifier.py) gives an offline
feature space instead. `FeatureExtractor` returns what the Inception one
returns, so FID, KID, precision/recall and density/coverage run on its
128-d feature layer ('pool') and the Inception Score on its logits:

  images [B, H, W, C] in [-1, 1] -> conv 3x3 (stride 1, then 2, 2, ...) with
  ReLU -> flatten -> dense `features` ('pool') -> ReLU -> dense `num_classes`
  ('logits', bias included: the score is the classifier's own p(y|x)).

The features are taken before their ReLU: after it, a trained net has units
that are 0 on every real image (a third of them in tests), which makes FID's
covariances singular. Flattening (no global pooling) keeps where things are
in the image; the network is built for one image shape, stored with the
weights. Numbers in this space compare only with numbers from the same
checkpoint: the metric names say `clf` (image_metrics.py) and the reference
statistics are keyed by the checkpoint's hash.

A checkpoint is a directory: `params/` (orbax) and `classifier.json` (the
architecture and how it was trained), the JSON written last, so a directory
without it is not a (complete) checkpoint. It is read from and written to a
local directory or a `gs://` one.
"""
import dataclasses
import functools
import hashlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError

SPEC_FILE = 'classifier.json'
PARAMS_DIR = 'params'
FORMAT = 1
# Images per device per compiled call when extracting features: the same
# shapes on every device whatever the number of devices or hosts.
DEVICE_BATCH = 64
TRAIN_COMMAND = ('python tools/train_classifier.py --config '
                 'configs/mnist_classifier.py:data=images '
                 '--config.data.path=DATA.npz --workdir DIR')
# float32 matmuls on every backend (TPU/GPU default to bf16/TF32 passes), so
# that features do not depend on the accelerator.
_PRECISION = jax.lax.Precision.HIGHEST


class Classifier(nn.Module):
  """`images -> (features [B, features], logits [B, num_classes])`."""
  num_classes: int
  widths: tuple = (32, 64, 64)
  features: int = 128

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), strides=1 if i == 0 else 2, padding='SAME',
                  precision=_PRECISION)(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    feats = nn.Dense(self.features, precision=_PRECISION)(x)
    logits = nn.Dense(self.num_classes, precision=_PRECISION)(nn.relu(feats))
    return feats, logits


@dataclasses.dataclass(frozen=True)
class Spec:
  """The architecture: what `classifier.json` stores besides training info."""
  image_shape: tuple  # (H, W, C).
  num_classes: int
  widths: tuple = (32, 64, 64)
  features: int = 128

  def model(self):
    return Classifier(self.num_classes, tuple(self.widths), self.features)

  def shapes(self):
    """The params' tree of jax.ShapeDtypeStruct (nothing is computed)."""
    return jax.eval_shape(self.model().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, *self.image_shape), jnp.float32)
                          )['params']

  def init(self, seed):
    """Params as numpy: He-normal kernels (ReLU), zero biases.

    Drawn with numpy, not flax's initialisers: XLA:CPU takes 10+ s to compile
    their threefry sampling, longer than training on a small dataset.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
      if jax.tree_util.keystr(path[-1:]) != "['kernel']":
        return np.zeros(leaf.shape, leaf.dtype)
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in)).astype(
          leaf.dtype)
    return jax.tree_util.tree_map_with_path(draw, self.shapes())


def _missing_error(path):
  return UserError(f'no classifier checkpoint at {path} ({SPEC_FILE} is '
                   f'missing); train one with `{TRAIN_COMMAND}` and pass that '
                   'DIR')


def _damaged_error(path, e):
  first = (str(e).strip().splitlines() or [''])[0][:200]
  return UserError(f'cannot read the classifier checkpoint {path} '
                   f'({type(e).__name__}: {first}); its files are damaged or '
                   f'incomplete: train it again with `{TRAIN_COMMAND}`')


def resolve_path(path):
  """`config.eval.classifier_checkpoint` as an absolute path (a `gs://` URL
  as it is), or UserError."""
  if not path:
    raise UserError(
        'config.eval.classifier_checkpoint is empty: the *_clf metrics need a '
        f'classifier; train one with `{TRAIN_COMMAND}` and set '
        'config.eval.classifier_checkpoint=DIR')
  if workdir_lib.is_remote(path):
    path = path.rstrip('/')
    try:
      found = epath.Path(f'{path}/{SPEC_FILE}').is_file()
    except workdir_lib.storage_errors() as e:
      raise UserError(f'cannot read the classifier checkpoint {path} '
                      f'({workdir_lib.reason(e, path)}); check the bucket and '
                      'its credentials') from None
  else:
    path = os.path.abspath(os.path.expanduser(path))
    found = os.path.isfile(os.path.join(path, SPEC_FILE))
  if not found:
    raise _missing_error(path)
  return path


def save(directory, spec, params, info=None):
  """Writes `params` and `spec` (+ `info`, JSON-able) to `directory` (local,
  or a `gs://` URL).

  An earlier checkpoint there is replaced; its JSON goes first, so a save
  killed half-way leaves no checkpoint rather than a mixed one.
  """
  directory = epath.Path(workdir_lib.absolute(os.path.expanduser(directory)))
  directory.mkdir(parents=True, exist_ok=True)
  spec_path = directory / SPEC_FILE
  if spec_path.exists():
    spec_path.unlink()
  params_dir = directory / PARAMS_DIR
  if params_dir.exists():
    params_dir.rmtree()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(params_dir, jax.device_get(params))
    ckptr.wait_until_finished()
  content = {'format': FORMAT, **dataclasses.asdict(spec), **(info or {})}
  tmp = directory / f'{SPEC_FILE}.tmp'
  tmp.write_text(json.dumps(content, indent=2, sort_keys=True))
  tmp.replace(spec_path)


def load(path):
  """(spec, params as numpy, the whole JSON) of the checkpoint at `path`."""
  path = resolve_path(path)
  try:
    content = json.loads(workdir_lib.read_bytes(f'{path}/{SPEC_FILE}'))
    if content.get('format') != FORMAT:
      raise ValueError(f'format {content.get("format")!r}, expected {FORMAT}')
    spec = Spec(image_shape=tuple(int(d) for d in content['image_shape']),
                num_classes=int(content['num_classes']),
                widths=tuple(int(w) for w in content['widths']),
                features=int(content['features']))
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                            spec.shapes())
    with ocp.StandardCheckpointer() as ckptr:
      params = ckptr.restore(f'{path}/{PARAMS_DIR}', template)
  except Exception as e:  # pylint: disable=broad-except
    # json, KeyError, orbax's many kinds for truncated or mismatched files.
    raise _damaged_error(path, e) from None
  return spec, jax.tree.map(np.asarray, params), content


def _signature(path):
  """(relative path, version) of every file (workdir.version: mtime or
  generation, and size): what the hash depends on."""
  return tuple((full[len(path) + 1:].replace(os.sep, '/'),
                workdir_lib.version(full))
               for full in workdir_lib.list_files(path))


@functools.lru_cache(maxsize=8)
def _hash(path, signature):
  digest = hashlib.sha256(b'gan_jax classifier')
  for rel, _ in signature:
    digest.update(rel.encode() + b'\0')
    digest.update(workdir_lib.read_bytes(f'{path}/{rel}'))
  return digest.hexdigest()


def checkpoint_hash(path):
  """sha256 of the checkpoint's files: part of the reference stats' key."""
  path = resolve_path(path)
  return _hash(path, _signature(path))


@functools.lru_cache(maxsize=None)
def _compiled(spec, devices):
  """(apply, rows' sharding, replicated sharding): the network jitted
  data-parallel over a mesh of `devices`, its weights replicated."""
  mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  rows = jax.NamedSharding(mesh, jax.P('devices'))
  replicated = jax.NamedSharding(mesh, jax.P())
  apply = jax.jit(spec.model().apply, in_shardings=(replicated, rows),
                  out_shardings=rows)
  return apply, rows, replicated


class FeatureExtractor:
  """Classifier features of image batches, like inception.FeatureExtractor.

  Data-parallel over this process's devices (multi-host runs extract on each
  host independently): images go through in fixed chunks of DEVICE_BATCH
  per device (the last one padded), so the network compiles once.
  """

  def __init__(self, path, devices=None):
    self.path = resolve_path(path)
    self.spec, params, self.info = load(self.path)
    self.weights_hash = checkpoint_hash(self.path)
    devices = tuple(devices or jax.local_devices())
    self.chunk = DEVICE_BATCH * len(devices)
    self._apply, self._rows, replicated = _compiled(self.spec, devices)
    self._params = jax.device_put(params, replicated)
    logging.info('classifier features from %s (sha256 %s, held-out accuracy '
                 '%s)', self.path, self.weights_hash[:12],
                 self.info.get('heldout_accuracy'))

  def check_shape(self, shape):
    """UserError unless the classifier takes images of `shape` (H, W, C)."""
    if tuple(shape) != self.spec.image_shape:
      h, w, c = self.spec.image_shape
      raise UserError(
          f'the classifier {self.path} takes {h}x{w}x{c} images, not '
          f'{"x".join(map(str, shape))}: train one on this data '
          '(tools/train_classifier.py) or use metrics without _clf')

  def __call__(self, images):
    """float [n, H, W, C] in [-1, 1] -> {'pool', 'logits', 'logits_unbiased'}
    (the last two the same) as float32 numpy arrays of n rows."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
      raise UserError(f'classifier features need [n, H, W, C] images, got '
                      f'shape {images.shape}')
    self.check_shape(images.shape[1:])
    feats = [np.zeros((0, self.spec.features), np.float32)]
    logits = [np.zeros((0, self.spec.num_classes), np.float32)]
    for start in range(0, len(images), self.chunk):
      chunk = images[start:start + self.chunk]
      count = len(chunk)
      chunk = np.concatenate([chunk, np.zeros(
          (self.chunk - count, *chunk.shape[1:]), np.float32)])
      chunk = jax.device_put(chunk, self._rows)  # jit takes no sharded numpy.
      f, l = self._apply({'params': self._params}, chunk)
      feats.append(np.asarray(f)[:count])
      logits.append(np.asarray(l)[:count])
    logits = np.concatenate(logits)
    return {'pool': np.concatenate(feats), 'logits': logits,
            'logits_unbiased': logits}


@functools.lru_cache(maxsize=2)
def _extractor(path, signature):
  # Kept between evaluations; a checkpoint written again (other files or
  # mtimes) is loaded again.
  del signature
  return FeatureExtractor(path)


def get_extractor(path):
  """The (cached) FeatureExtractor of the checkpoint at `path`; UserError if
  there is none or it cannot be read."""
  path = resolve_path(path)
  return _extractor(path, _signature(path))
