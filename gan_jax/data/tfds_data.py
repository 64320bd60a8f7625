"""Image datasets from TFDS, read without TensorFlow: 'mnist', 'fashion_mnist',
'cifar10', 'celeb_a'.

The data is read with `tfds.data_source` from array_record files that must
already be prepared in `data_dir`; gan_jax never downloads (training machines
are often offline, and TFDS's download would hang or fail with a long
traceback). Prepare a dataset once on a machine with internet, where
TensorFlow is needed for the preparation only:

    pip install tensorflow tensorflow-datasets
    tfds build mnist --file_format=array_record --data_dir=DIR

then copy DIR over (if needed) and pass `--config.data.data_dir=DIR`.

Examples are shuffled, sharded over hosts, repeated and batched by
`gan_jax.data.pipeline` (read ahead by grain threads and, with num_workers,
processes): see its docstring for the exact order. Each example is read and
decoded on its own (about the speed of PIL's decoding): on a GPU machine with
spare cores, num_workers of 4-8 keeps up with small models.
With `config.num_classes` set (10 for mnist, fashion_mnist and cifar10;
celeb_a has no class label) the examples come with their TFDS `label`.
Images come out as float32 [H, W, C] in [-1, 1]:

  mnist, fashion_mnist: 28 x 28 x 1; cifar10: 32 x 32 x 3 (native sizes);
  celeb_a: the 218 x 178 photos are center-cropped to 178 x 178 (rows
    20..197) and resized to `image_size` (default 64) x 3.

Fields read from `config.data` (None or absent: the default):
  name: one of the four datasets above.
  data_dir: where the prepared dataset is (default: TFDS's own default,
    $TFDS_DATA_DIR or ~/tensorflow_datasets).
  split: a TFDS split, e.g. 'train' (default), 'test', 'train[:90%]'.
  image_size: output height and width (default: native; celeb_a: 64). Other
    datasets are resized too if it is set to something else than their size.
  seed: shuffle seed (default 0).
  num_workers: grain worker processes (default 0: threads only).
Resizing uses PIL's antialiased bicubic filter.
"""
import contextlib
import functools
import logging
import os

import numpy as np
from PIL import Image

from gan_jax.data import pipeline
from gan_jax.errors import UserError


# name -> (native image shape, crop (top, left, height, width) or None,
#          default output size or None for the native size).
DATASETS = {
    'mnist': ((28, 28, 1), None, None),
    'fashion_mnist': ((28, 28, 1), None, None),
    'cifar10': ((32, 32, 3), None, None),
    'celeb_a': ((218, 178, 3), (20, 0, 178, 178), 64),
}
# Class counts of the datasets with a 'label' feature (conditional runs).
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10}


def resize(image, size):
  """uint8 [H, W, C] -> uint8 [size, size, C] (PIL bicubic, antialiased)."""
  if image.shape[:2] == (size, size):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))
  return out.reshape(size, size, channels)


def _preprocess(example, crop, size, labels=False):
  """A TFDS example dict -> uint8 [size, size, C] (and its label)."""
  image = np.asarray(example['image'])
  if crop is not None:
    top, left, height, width = crop
    image = image[top:top + height, left:left + width]
  image = resize(image, size) if size is not None else image
  return (image, np.int32(example['label'])) if labels else image


def _default_dir():
  return os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'


def _open_error(name, split, data_dir, error):
  """Turns a failed `tfds.data_source` into a one-line UserError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  shown = data_dir or f'{_default_dir()} (the default data_dir)'
  build = (f'on a machine with internet (and tensorflow) run `tfds build {name} '
           '--file_format=array_record --data_dir=DIR`, or copy a prepared '
           'data_dir here, then pass --config.data.data_dir=DIR')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
    file_format = builder.info.file_format
  except Exception:  # pylint: disable=broad-except
    prepared, file_format = False, None  # Unreadable metadata: not prepared.
  if not prepared:
    return UserError(f'{name} is not prepared in {shown} and gan_jax does not '
                     f'download datasets; {build}')
  if file_format is not None and file_format.value != 'array_record':
    return UserError(f'{name} in {shown} is prepared as {file_format.value}, '
                     'but gan_jax reads array_record files (no TensorFlow); '
                     f'{build}')
  message = ' '.join(str(error).split())[:300]
  return UserError(f'cannot read {name} split {split!r} from {shown}: {message}; '
                   "check --config.data.split (e.g. 'train', 'test')")


def open_source(name, split, data_dir):
  """`tfds.data_source` without any download; UserError if not prepared."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
  with _held_tfds_records():
    try:
      return tfds.data_source(name, split=split, data_dir=data_dir,
                              download=False, try_gcs=False)
    except Exception as e:  # pylint: disable=broad-except
      # TFDS raises many types here (NotImplementedError for a missing
      # dataset, ValueError for a bad split, ...): diagnose and say what to do.
      raise _open_error(name, split, data_dir, e) from e


@contextlib.contextmanager
def _held_tfds_records():
  """Holds back TFDS's own log records: logged when the block ends normally,
  dropped when it raises (the one-line UserError says what is wrong; TFDS
  would first warn, e.g. 'Variant folder ... has no dataset_info.json')."""
  held = []

  def hold(record):
    if 'tensorflow_datasets' in record.pathname:
      held.append(record)
      return False
    return True

  logger = logging.getLogger('absl')  # absl.logging's, which TFDS uses.
  logger.addFilter(hold)
  try:
    yield
  finally:
    logger.removeFilter(hold)
  for record in held:  # Not reached when the block raised.
    logger.handle(record)


def build(config, host_batch_size, process_index, process_count):
  name = config.data.name
  native, crop, default_size = DATASETS[name]
  num_classes = pipeline.num_classes(config)
  if num_classes and num_classes != NUM_CLASSES.get(name):
    raise UserError(
        f'{name} has no class labels; use num_classes=0' if name not in
        NUM_CLASSES else f'{name} has {NUM_CLASSES[name]} classes but '
        f'num_classes is {num_classes}; pass --config.num_classes='
        f'{NUM_CLASSES[name]}')
  split = pipeline.field(config, 'split', 'train')
  source = open_source(name, split, pipeline.field(config, 'data_dir'))
  size = pipeline.field(config, 'image_size', default_size)
  cropped = native if crop is None else (crop[2], crop[3], native[2])
  if size is None:
    if cropped[0] != cropped[1]:
      raise ValueError(f'{name}: non-square images need an image_size')
    size = cropped[0]
  if not (isinstance(size, int) and size > 0):
    raise UserError(f'data.image_size must be a positive integer, got {size!r}; '
                    'pass --config.data.image_size=N')
  pipeline.check_batch(len(source), host_batch_size, process_count,
                       f'{name} split {split!r}')
  preprocess = functools.partial(
      _preprocess, crop=crop,
      size=None if (size, size) == cropped[:2] else size,
      labels=num_classes > 0)
  return pipeline.build(
      pipeline.read_each(source, preprocess), len(source),
      (size, size, native[2]),
      seed=pipeline.field(config, 'seed', 0), host_batch_size=host_batch_size,
      process_index=process_index, process_count=process_count,
      num_workers=pipeline.field(config, 'num_workers', 0))
