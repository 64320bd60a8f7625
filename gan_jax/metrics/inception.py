"""The FID Inception-v3 in Flax: the 2015-12-05 TF graph as pytorch-fid builds it.

FID, KID and the Inception Score are only comparable across papers when they
use this exact network: the TF `inception-2015-12-05` graph, which differs from
torchvision's Inception-v3 in its weights and in four details that pytorch-fid
patches in (`FIDInceptionA/C/E_1/E_2`): the 3x3 average pools of the A, C and
first E blocks leave the zero padding out of the average, and the last E block
max-pools instead. The head is the graph's 1008-way `softmax/logits` layer.

Module and parameter names mirror the keys of pytorch-fid's state dict
(`Mixed_5b.branch1x1.conv.weight` is `params/Mixed_5b/branch1x1/conv/kernel`),
so that `from_torch_state_dict` is a rename plus transposes, and the weights
file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` converted once by
`tools/convert_inception_weights.py` (torch is needed only there).

Inputs are NHWC float images in [-1, 1] at any resolution; `resize` brings them
to 299x299 like pytorch-fid's `F.interpolate(mode='bilinear',
align_corners=False)` (no antialiasing, also when shrinking).

`config.eval.inception_weights` may be a local path or a `gs://` URL (read
whole, ~95 MB, when an extractor is made, and again for its sha256 only when
the object's generation changes).
"""
import functools
import hashlib
import io
import os
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError

INPUT_SIZE = 299
POOL_DIM = 2048
NUM_LOGITS = 1008
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
               'fid_weights/pt_inception-2015-12-05-6726825d.pth')
# Where tools/convert_inception_weights.py writes by default: the value to
# give `config.eval.inception_weights`.
DEFAULT_WEIGHTS = os.path.join('~', '.cache', 'gan_jax',
                               'fid_inception_v3-2015-12-05.npz')
CONVERT_COMMAND = ('python tools/convert_inception_weights.py '
                   'pt_inception-2015-12-05-6726825d.pth')

# float32 everywhere: TPUs (bf16 passes) and GPUs (TF32) would otherwise
# compute the convolutions at a lower precision than the reference, and FID
# differences of a fraction of a point are what papers compare.
_PRECISION = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU."""
  features: int
  kernel_size: tuple = (1, 1)
  strides: tuple = (1, 1)
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=_PRECISION, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TF's average pool leaves the padding out of the count (pytorch-fid's patch).
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), (2, 2), 'VALID')


class InceptionA(nn.Module):
  """Mixed_5b/c/d (pytorch-fid's FIDInceptionA)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, name='branch1x1')(x)
    b5 = BasicConv2d(48, name='branch5x5_1')(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision's InceptionB, unpatched)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), (2, 2), name='branch3x3')(x)
    bd = BasicConv2d(64, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, (3, 3), (2, 2), name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b/c/d/e (pytorch-fid's FIDInceptionC)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, name='branch1x1')(x)
    b7 = BasicConv2d(c7, name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision's InceptionD, unpatched)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, name='branch3x3_1')(x)
    b3 = BasicConv2d(320, (3, 3), (2, 2), name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, (3, 3), (2, 2), name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, `max_pool=False`) and Mixed_7c (FIDInceptionE_2).

  The TF graph max-pools in the last block's pool branch (most likely a bug in
  that graph, kept because every published FID comes from it).
  """
  max_pool: bool

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, name='branch1x1')(x)
    b3 = BasicConv2d(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
    ], axis=-1)
    bd = BasicConv2d(448, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
    ], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv2d(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """[N, 299, 299, 3] in [-1, 1] -> {'pool': [N, 2048], 'logits': [N, 1008],
  'logits_unbiased': [N, 1008]}.

  `logits_unbiased` leaves out the fc bias: it is what the original Inception
  Score code (OpenAI's improved-gan, TTUR, torch-fidelity) takes the softmax
  of, since it multiplied pool3 by the `softmax/logits/MatMul` weights only.
  """

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, (3, 3), (2, 2), name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(max_pool=False, name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    pool = jnp.mean(x, axis=(1, 2))
    fc = nn.Dense(NUM_LOGITS, precision=_PRECISION, name='fc')
    logits = fc(pool)
    unbiased = logits - fc.variables['params']['bias']
    return {'pool': pool, 'logits': logits, 'logits_unbiased': unbiased}


def resize(images, size=INPUT_SIZE):
  """Bilinear resize of NHWC images to `size` x `size`, as torch does it.

  `F.interpolate(mode='bilinear', align_corners=False)` samples at half-pixel
  centres, clamps at the borders and never antialiases; `jax.image.resize`
  with `antialias=False` computes the same (tests/test_inception.py checks it
  against torch for up- and down-sampling). With the default antialias=True it
  would differ when shrinking.
  """
  n, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  return jax.image.resize(images, (n, size, size, c), 'bilinear',
                          antialias=False)


# --- Weights -----------------------------------------------------------------

_TORCH_LEAF = {  # torch suffix -> (flax collection, flax leaf name)
    'conv.weight': ('params', 'conv', 'kernel'),
    'bn.weight': ('params', 'bn', 'scale'),
    'bn.bias': ('params', 'bn', 'bias'),
    'bn.running_mean': ('batch_stats', 'bn', 'mean'),
    'bn.running_var': ('batch_stats', 'bn', 'var'),
}


def from_torch_state_dict(state_dict):
  """pytorch-fid's state dict (name -> array) -> {'collection/path/leaf': array}.

  The inverse naming of this module; conv kernels go OIHW -> HWIO and the fc
  weight is transposed. `num_batches_tracked` is dropped; any other unknown key
  is an error, so that a wrong .pth (torchvision's Inception, with AuxLogits)
  is caught here rather than as a silently different network.
  """
  out = {}
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked'):
      continue
    value = np.asarray(value, np.float32)
    if key == 'fc.weight':
      out['params/fc/kernel'] = value.T
      continue
    if key == 'fc.bias':
      out['params/fc/bias'] = value
      continue
    for suffix, (collection, module, leaf) in _TORCH_LEAF.items():
      if key.endswith('.' + suffix):
        path = key[:-len(suffix) - 1].split('.')
        if leaf == 'kernel':
          value = value.transpose(2, 3, 1, 0)
        out['/'.join([collection, *path, module, leaf])] = value
        break
    else:
      raise ValueError(f'unexpected key {key!r} in the Inception state dict '
                       '(expected pytorch-fid\'s FID Inception weights)')
  _check_shapes(out)
  return out


@functools.lru_cache(maxsize=None)
def _expected_shapes():
  shapes = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in flat}


def _check_shapes(flat):
  expected = _expected_shapes()
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  wrong = sorted(k for k in set(expected) & set(flat)
                 if tuple(flat[k].shape) != expected[k])
  if missing or extra or wrong:
    raise ValueError(
        'Inception weights do not fit FIDInceptionV3: '
        f'missing {missing[:3]}, unexpected {extra[:3]}, '
        f'wrong shape {[(k, flat[k].shape, expected[k]) for k in wrong[:3]]}')


def _unflatten(flat):
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def resolve_weights_path(path):
  """The weights file of `config.eval.inception_weights`, or a UserError.

  The error is one line saying where to get pytorch-fid's file and how to
  convert it, since nothing here can download it. A `gs://` URL is returned
  as it is if the object is there.
  """
  if path and workdir_lib.is_remote(path):
    try:
      if epath.Path(path).is_file():
        return path
    except workdir_lib.storage_errors() as e:
      raise UserError(f'cannot read the Inception weights {path} '
                      f'({workdir_lib.reason(e, path)}); check the bucket and '
                      'its credentials') from None
    raise UserError(f'Inception weights not found at {path}: download '
                    f'{WEIGHTS_URL}, run `{CONVERT_COMMAND} OUT.npz` and '
                    f'`gcloud storage cp OUT.npz {path}`')
  target = os.path.expanduser(path) if path else os.path.expanduser(
      DEFAULT_WEIGHTS)
  if path and os.path.isfile(target):
    return target
  if path:
    raise UserError(f'Inception weights not found at {target}: download '
                    f'{WEIGHTS_URL} and run `{CONVERT_COMMAND} {target}`')
  raise UserError(
      f'config.eval.inception_weights is empty: download {WEIGHTS_URL}, run '
      f'`{CONVERT_COMMAND} {target}` and set config.eval.inception_weights='
      f'{target}')


def load_variables(path):
  """The Flax variables {"params", "batch_stats"} (numpy) of a converted .npz."""
  path = resolve_weights_path(path)
  try:
    source = (io.BytesIO(workdir_lib.read_bytes(path))
              if workdir_lib.is_remote(path) else path)
    with np.load(source) as data:
      flat = {k: data[k] for k in data.files}
    _check_shapes(flat)
  except (*workdir_lib.storage_errors(), zipfile.BadZipFile) as e:
    raise UserError(f'{path} is not a converted FID Inception weights file '
                    f'({e}); make it with `{CONVERT_COMMAND} {path}`') from e
  return _unflatten(flat)


@functools.lru_cache(maxsize=8)
def _file_hash(path, version):
  del version  # Only the cache key: a rewritten file is hashed again.
  digest = hashlib.sha256()
  with epath.Path(path).open('rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def weights_hash(path):
  """sha256 of the weights file: part of the reference statistics' cache key."""
  path = resolve_weights_path(path)
  if not workdir_lib.is_remote(path):
    path = os.path.abspath(path)
  return _file_hash(path, workdir_lib.version(path))


# --- Feature extraction ------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _compiled(devices):
  """(net, resize, replicated sharding) jitted for a mesh of `devices`.

  Shared by all extractors on these devices, so that a second one (other
  weights, or the same file loaded again) reuses the compiled network.
  """
  mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  batch_sharding = jax.NamedSharding(mesh, jax.P('devices'))
  replicated = jax.NamedSharding(mesh, jax.P())
  net = jax.jit(FIDInceptionV3().apply,
                in_shardings=(replicated, batch_sharding),
                out_shardings=batch_sharding)
  return net, jax.jit(resize, out_shardings=batch_sharding), replicated


class FeatureExtractor:
  """Inception features of image batches, data-parallel over the local devices.

  The network is compiled once, for `batch_size` images per device at 299x299,
  with the batch sharded over a mesh of this process's devices and the weights
  replicated (multi-host runs extract on each host independently). Resizing
  is a separate small jit per input resolution, so a new resolution does not
  recompile the network; the last partial batch is padded. Grayscale images
  are repeated to RGB, as pytorch-fid's loader (`convert('RGB')`) does.
  """

  def __init__(self, weights_path, batch_size=50, devices=None):
    self.weights_path = resolve_weights_path(weights_path)
    devices = tuple(devices or jax.local_devices())
    self.batch_size = batch_size
    self.global_batch = batch_size * len(devices)
    self._net, self._resize, replicated = _compiled(devices)
    self._variables = jax.device_put(load_variables(self.weights_path),
                                     replicated)

  @property
  def weights_hash(self):
    return weights_hash(self.weights_path)

  def __call__(self, images):
    """float [n, H, W, C in (1, 3)] in [-1, 1] -> {'pool', 'logits',
    'logits_unbiased'} as float32 numpy arrays of n rows."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f'expected [n, H, W, 1 or 3] images, got {images.shape}')
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    step = self.global_batch
    outs = []
    for start in range(0, len(images), step):
      chunk = images[start:start + step]
      count = len(chunk)
      if count < step:
        pad = np.zeros((step - count, *chunk.shape[1:]), chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      out = self._net(self._variables, self._resize(chunk))
      outs.append({k: np.asarray(v)[:count] for k, v in out.items()})
    if not outs:
      return {'pool': np.zeros((0, POOL_DIM), np.float32),
              'logits': np.zeros((0, NUM_LOGITS), np.float32),
              'logits_unbiased': np.zeros((0, NUM_LOGITS), np.float32)}
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
