"""Your own images ('images'): a folder of PNG/JPEG files or an .npz array.

`config.data.path` names either

  * a folder: every .png, .jpg and .jpeg file under it, recursively (sorted by
    path, so every host numbers them alike). The folder may be on Cloud
    Storage (`gs://bucket/dir`: listed once, then each file read whole, with
    one GET, whenever it is decoded); it gives what the same folder on a
    local disk gives. Each image is center-cropped to a square (the shorter
    side), resized to `image_size` (PIL's antialiased bicubic filter) and
    converted to `channels` (RGB via PIL's 'L' luminance for 1, gray
    repeated for 3; alpha is dropped; 16-bit grayscale keeps its top 8
    bits). At start-up every file is decoded once, in threads, to find
    the unreadable ones: those are skipped, with one logging.warning that
    counts them and names a few. For very large folders, writing an .npz once
    avoids that scan (and the decoding during training).
  * an .npz file with an array named `images` (loaded into memory), of shape
    N x H x W (grayscale) or N x H x W x C with C = 1 or 3. Values: uint8 (or
    any integer type) in [0, 255]; or float, read as in [0, 1] if no value is
    negative and as in [-1, 1] otherwise (anything outside [-1, 1] is an
    error). The images are used at their stored size: `image_size`, if set,
    must equal H = W.

An .npz may be a `gs://` URL too (read whole, once).

Conditional runs (`config.num_classes > 0`) need labels: in a folder, one
subfolder per class (root/CLASS/*.png; classes numbered by sorted name), in an
.npz an integer array `labels` [N] in [0, num_classes).

Examples are shuffled, sharded over hosts, repeated and batched by
`gan_jax.data.pipeline` (read ahead by grain), exactly as the TFDS datasets
are. An .npz is read a whole batch at a time (fast); folder images are
decoded one by one in reading threads (set num_workers on machines with
spare cores if that is too slow).

Fields read from `config.data` (None or absent: the default):
  path: the folder or .npz (required).
  image_size: output height and width (folder default 64; npz: stored size).
  channels: 1 or 3 (default: the data's own; a folder mixing grayscale and
    color images must set it).
  seed: shuffle seed (default 0).
  num_workers: grain worker processes (default 0: threads only).
"""
import concurrent.futures
import functools
import io
import math
import os
import zipfile

import numpy as np
from absl import logging
from etils import epath
from PIL import Image

from gan_jax import workdir as workdir_lib
from gan_jax.data import pipeline
from gan_jax.errors import UserError

EXTENSIONS = ('.png', '.jpg', '.jpeg')
DEFAULT_FOLDER_SIZE = 64
# PIL modes with one colour channel ('LA': gray + alpha). Every other mode
# (RGB, RGBA, P, CMYK, YCbCr, ...) counts as colour, a palette image too.
_GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L',
                         'I;16N', 'F'})
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # What PIL's 'L' uses.


def _channels_of(image):
  return 1 if image.mode in _GRAY_MODES else 3


def _decode(image, size, channels):
  """An opened PIL image -> uint8 [size, size, channels], center-cropped."""
  mode = 'L' if channels == 1 else 'RGB'
  if image.mode.startswith('I;16'):  # PIL would clip 16-bit values to 255.
    image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
  width, height = image.size
  side = min(width, height)
  # JPEG can decode at 1/2, 1/4 or 1/8 scale directly, much faster; ask for
  # the smallest scale whose crop is still at least `size`. The crop is then
  # placed on the reduced grid, off by at most half a reduced pixel.
  scale = size / side
  image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  # Crop, then resize: resize(box=...) would blend in pixels from outside.
  image = image.convert(mode).crop((left, top, left + side, top + side))
  image = image.resize((size, size), Image.Resampling.BICUBIC)
  return np.asarray(image, np.uint8).reshape(size, size, channels)


def _open(path):
  """`path` opened by PIL; a URL is read whole first (one GET, not the many
  small reads PIL would make of a remote file)."""
  if workdir_lib.is_remote(path):
    return Image.open(io.BytesIO(workdir_lib.read_bytes(path)))
  return Image.open(path)


def _probe(path, size):
  """Decodes `path` once; its channel count (1 or 3), or None if unreadable."""
  try:
    with _open(path) as image:
      channels = _channels_of(image)
      _decode(image, size, channels)
      return channels
  except Exception:  # pylint: disable=broad-except
    # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
    # for bad files; all of them mean "skip this file".
    return None


def load_image(path, size, channels):
  with _open(path) as image:
    return _decode(image, size, channels)


class FolderSource:
  """Random access to decoded images of a list of files (picklable); with
  `labels`, (image, label) pairs."""

  def __init__(self, paths, size, channels, labels=None):
    self.paths, self.size, self.channels = list(paths), size, channels
    self.labels = labels

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    image = load_image(self.paths[index], self.size, self.channels)
    return image if self.labels is None else (image, self.labels[index])


def _folder_labels(root, paths, num_classes):
  """Class of each file: the index of its top-level subfolder, sorted by name."""
  if workdir_lib.is_remote(root):  # list_files' URLs: root/CLASS/...
    tops = [p[len(root) + 1:].split('/')[0] for p in paths]
  else:
    tops = [os.path.relpath(p, root).split(os.sep)[0] for p in paths]
  loose = [p for p, t in zip(paths, tops) if t == os.path.basename(p)]
  if loose:
    raise UserError(
        f'{loose[0]} is not in a class subfolder of {root}; a conditional run '
        '(num_classes > 0) takes one subfolder per class (root/CLASS/*.png), '
        'or an .npz with a labels array')
  names = sorted(set(tops))
  if len(names) != num_classes:
    raise UserError(f'{root} has {len(names)} class subfolders ({", ".join(names[:5])}'
                    f'{", ..." if len(names) > 5 else ""}) but num_classes is '
                    f'{num_classes}; pass --config.num_classes={len(names)}')
  return np.array([names.index(t) for t in tops], np.int32)


def _folder(path, size, channels, num_classes):
  try:
    paths = [p for p in workdir_lib.list_files(path)
             if p.lower().endswith(EXTENSIONS)]
  except workdir_lib.storage_errors() as e:
    raise UserError(f'cannot list data.path {path} '
                    f'({workdir_lib.reason(e, path)})') from None
  if not paths:
    raise UserError(f'no .png/.jpg/.jpeg files under {path} (searched '
                    'recursively); point --config.data.path at a folder of '
                    'images or an .npz file')
  size = DEFAULT_FOLDER_SIZE if size is None else size
  logging.info('Checking %d image files under %s.', len(paths), path)
  workers = min(32, 2 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    found = list(pool.map(functools.partial(_probe, size=size), paths))
  bad = [p for p, c in zip(paths, found) if c is None]
  if len(bad) == len(paths):
    raise UserError(f'none of the {len(paths)} image files under {path} could '
                    f'be read (e.g. {bad[0]}); check that they are valid '
                    'PNG/JPEG files')
  if bad:
    logging.warning('Skipping %d unreadable image file(s) of %d under %s: %s%s',
                    len(bad), len(paths), path, ', '.join(bad[:3]),
                    ', ...' if len(bad) > 3 else '')
  good = [(p, c) for p, c in zip(paths, found) if c is not None]
  if channels is None:
    kinds = {c for _, c in good}
    if len(kinds) > 1:
      gray = sum(c == 1 for _, c in good)
      raise UserError(
          f'{path} mixes {gray} grayscale and {len(good) - gray} color images; '
          'pass --config.data.channels=1 or --config.data.channels=3 to '
          'convert them all')
    channels = kinds.pop()
  paths = [p for p, _ in good]
  labels = _folder_labels(path, paths, num_classes) if num_classes else None
  return FolderSource(paths, size, channels, labels), (size, size, channels)


def read_npz(path, labels):
  """(images, labels) arrays of the .npz `path` (local or gs://); UserError
  if it cannot be read. `labels`: True, required; False, not read (None);
  None, read if present."""
  try:
    # A gs:// URL is read whole (it is loaded whole anyway).
    source = (io.BytesIO(workdir_lib.read_bytes(path))
              if workdir_lib.is_remote(path) else path)
    try:
      loaded = np.load(source, allow_pickle=False)
    except ValueError:  # Neither a zip nor an .npy: numpy tries pickle.
      raise UserError(f'{path} is not an .npz file (not a zip archive of '
                      'arrays); write it with np.savez(path, images=array)'
                      ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise UserError(f'{path} holds a single array (np.save), not an .npz; '
                      'write it with np.savez(path, images=array)')
    with loaded as npz:
      if 'images' not in npz.files:
        raise UserError(
            f"{path} has no array named 'images' (it has: "
            f"{', '.join(npz.files) or 'nothing'}); save it with "
            'np.savez(path, images=array)')
      if not labels and not (labels is None and 'labels' in npz.files):
        return npz['images'], None
      if 'labels' not in npz.files:
        raise UserError(
            f"{path} has no array named 'labels', which a conditional run "
            '(num_classes > 0) needs; save it with np.savez(path, '
            'images=images, labels=labels), or pass --config.num_classes=0')
      return npz['images'], npz['labels']
  except ValueError as e:
    if 'allow_pickle' in str(e):
      raise UserError(
          f"'images' in {path} is an object array (images of different shapes "
          'or channel counts?); save one N x H x W x C array of equally sized '
          'images, or use a folder of image files') from None
    raise UserError(f'cannot read {path} as an .npz: {e}') from None
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise UserError(f'cannot read {path} as an .npz ({e}); write it with '
                    'np.savez(path, images=array)') from None


def _scale(images, path):
  """To uint8 in [0, 255] or float32 in [-1, 1] (see the module docstring)."""
  if images.dtype == np.uint8:
    return images
  if np.issubdtype(images.dtype, np.integer):
    lo, hi = images.min(), images.max()
    if lo < 0 or hi > 255:
      raise UserError(f"integer 'images' in {path} range over [{lo}, {hi}]; "
                      'integer images must be in [0, 255]')
    return images.astype(np.uint8)
  if np.issubdtype(images.dtype, np.floating):
    if not np.all(np.isfinite(images)):
      raise UserError(f"'images' in {path} contains NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 or hi > 1:
      raise UserError(f"float 'images' in {path} range over [{lo:g}, {hi:g}]; "
                      'float images must be in [0, 1] or [-1, 1] (or save '
                      'uint8 in [0, 255])')
    images = images.astype(np.float32)
    return images * 2 - 1 if lo >= 0 else images
  raise UserError(f"'images' in {path} has dtype {images.dtype}; save uint8 in "
                  '[0, 255] or float in [0, 1] or [-1, 1]')


def _to_channels(images, channels):
  have = images.shape[-1]
  if channels is None or channels == have:
    return images
  if channels == 3:
    return np.repeat(images, 3, axis=-1)
  gray = images.astype(np.float32) @ _LUMA
  if images.dtype == np.uint8:
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
  return gray[..., None]


def _npz(path, size, channels, num_classes):
  images, labels = read_npz(path, num_classes > 0)
  shape = images.shape
  if images.ndim == 3:
    if shape[-1] in (1, 3, 4):
      raise UserError(
          f"'images' in {path} has shape {shape}: one H x W x C image, or N "
          'grayscale images? save N x H x W x C (e.g. images[None] for one '
          'image, images[..., None] for grayscale)')
    images = images[..., None]
  elif images.ndim == 4:
    if shape[-1] == 4:
      raise UserError(f"'images' in {path} has 4 channels (RGBA?); keep 1 or 3, "
                      'e.g. images[..., :3]')
    if shape[-1] not in (1, 3):
      hint = (' (channels first? use images.transpose(0, 2, 3, 1))'
              if shape[1] in (1, 3) else '')
      raise UserError(f"'images' in {path} has shape {shape}, {shape[-1]} "
                      f'channels; expected N x H x W x C with C = 1 or 3{hint}')
  else:
    raise UserError(f"'images' in {path} has shape {shape}; expected N x H x W "
                    'or N x H x W x C')
  if shape[0] == 0:
    raise UserError(f"'images' in {path} is empty")
  height, width = images.shape[1:3]
  if size is not None and (height, width) != (size, size):
    raise UserError(
        f'the images in {path} are {height} x {width} but data.image_size is '
        f'{size}; resize them before saving the .npz, or pass '
        f'--config.data.image_size={height if height == width else "None"}')
  images = _to_channels(_scale(images, path), channels)
  if num_classes:
    labels = pipeline.check_labels(labels, num_classes, path)
    if len(labels) != len(images):
      raise UserError(f"{path} has {len(images)} images but {len(labels)} "
                      'labels; save one label per image')
  return pipeline.ArrayBatches(images, labels), images.shape[1:]


def _locate(config):
  """(data.path, whether it is a folder), or a UserError if it is unusable."""
  path = pipeline.field(config, 'path')
  if not path:
    raise UserError('data.path is not set; pass --config.data.path=P with P a '
                    'folder of .png/.jpg images or an .npz with an images array')
  if workdir_lib.is_remote(path):  # gs://bucket/images or .../images.npz
    path = path.rstrip('/')
    try:
      exists = epath.Path(path).exists()
      folder = exists and epath.Path(path).is_dir()
    except workdir_lib.storage_errors() as e:
      raise UserError(f'cannot read data.path {path} '
                      f'({workdir_lib.reason(e, path)})') from None
  else:
    path = os.path.expanduser(path)
    exists, folder = os.path.exists(path), os.path.isdir(path)
  if not exists:
    raise UserError(f'data.path {path} does not exist; pass '
                    '--config.data.path=P with P a folder of .png/.jpg images '
                    'or an .npz with an images array')
  if not folder and not path.lower().endswith('.npz'):
    raise UserError(f'data.path {path} is neither a folder nor an .npz file; '
                    'pass a folder of .png/.jpg images or an .npz with an '
                    'images array')
  return path, folder


def label_counts(config):
  """How many examples of `config.data.path` have each label 0 ..
  num_classes-1 (int64 [num_classes]); read once per path. The evaluation
  of a cluster-conditional run draws its clusters in these proportions
  (gan_jax/labels.py)."""
  path, folder = _locate(config)
  return _label_counts(path, folder, pipeline.num_classes(config))


@functools.lru_cache(maxsize=4)
def _label_counts(path, folder, num_classes):
  if folder:  # Every image file counts, readable or not (they are not probed).
    paths = [p for p in workdir_lib.list_files(path)
             if p.lower().endswith(EXTENSIONS)]
    labels = _folder_labels(path, paths, num_classes)
  else:
    labels = pipeline.check_labels(read_npz(path, True)[1], num_classes, path)
  return np.bincount(labels, minlength=num_classes)


def build(config, host_batch_size, process_index, process_count):
  path, folder = _locate(config)
  channels = pipeline.field(config, 'channels')
  if channels not in (None, 1, 3):
    raise UserError(f'data.channels must be 1 or 3, got {channels!r}; pass '
                    '--config.data.channels=1 or 3')
  size = pipeline.field(config, 'image_size')
  if size is not None and not (isinstance(size, int) and size > 0):
    raise UserError(f'data.image_size must be a positive integer, got {size!r}; '
                    'pass --config.data.image_size=N')
  num_classes = pipeline.num_classes(config)
  if folder:
    source, shape = _folder(path, size, channels, num_classes)
  else:
    source, shape = _npz(path, size, channels, num_classes)
  if isinstance(source, pipeline.ArrayBatches):  # One fancy index a batch.
    read_batch, num = source, len(source.images)
  else:  # Files, decoded one by one.
    read_batch, num = pipeline.read_each(source), len(source)
  pipeline.check_batch(num, host_batch_size, process_count, path)
  return pipeline.build(
      read_batch, num, shape, seed=pipeline.field(config, 'seed', 0),
      host_batch_size=host_batch_size, process_index=process_index,
      process_count=process_count,
      num_workers=pipeline.field(config, 'num_workers', 0))
