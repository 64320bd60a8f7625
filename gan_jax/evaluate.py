"""Periodic evaluation: sample-quality metrics and pictures of samples."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from gan_jax import data
from gan_jax import plots
from gan_jax import sampling
from gan_jax import standing_stats
from gan_jax import state as state_lib
from gan_jax import labels as labels_lib
from gan_jax import workdir as workdir_lib
from gan_jax import writers
from gan_jax.data import pipeline
from gan_jax.data import toy
from gan_jax.errors import UserError
from gan_jax.metrics import image_metrics
from gan_jax.metrics import shards
from gan_jax.metrics import toy as toy_metrics


def check(config):
  """Fails at start-up, not at the first evaluation, on a bad eval config."""
  batches = config.eval.get('standing_stats', 0)
  if not isinstance(batches, int) or batches < 0:
    raise UserError(f'eval.standing_stats must be a number of batches >= 0 '
                    f'(0: off), got {batches!r}; e.g. '
                    '--config.eval.standing_stats=16')
  if config.data.name in toy.DEFAULTS:
    return
  names = image_metrics.metric_names(config.eval)
  for name in names:
    image_metrics.get(name)
  image_metrics.check_counts(config.eval)
  if config.data.name == 'images':  # Own images: one split, all of them.
    for name in names:
      split = image_metrics.reference_split(config.eval, name)
      if split not in (None, 'train'):
        raise UserError(
            f'metric {name!r} compares with the {split!r} split, but own '
            "images (data.name=images) have one split, 'train'; use the "
            "metric's _train form (or eval.reference_split=train)")
  # UserError without the Inception weights or classifier.
  clf = _extractors(config).get('classifier')
  classes = labels_lib.num_classes(config)
  if (clf and labels_lib.are_classes(config)
      and clf.spec.num_classes != classes
      and any(n.startswith('classes_clf') for n in names)):
    raise UserError(
        f'num_classes is {classes} but the classifier at {clf.path} has '
        f'{clf.spec.num_classes} classes: classes_clf scores a conditional G '
        'by the classes it was asked for; train a classifier on this data '
        '(tools/train_classifier.py) or leave classes_clf out of eval.metrics')


def _extractors(config):
  """{feature space: extractor} of the image metrics ({} for toy data)."""
  if config.data.name in toy.DEFAULTS:
    return {}
  names = image_metrics.metric_names(config.eval)
  return {space: image_metrics.get_extractor(config.eval, space)
          for space in image_metrics.spaces(names)}


def check_image_shape(config, shape):
  """Fails at start-up, once the data's image `shape` (H, W, C) is known,
  where a metric's network cannot take it (a classifier trained on other
  images); Inception resizes any image and has no such limit."""
  for extractor in _extractors(config).values():
    if hasattr(extractor, 'check_shape'):
      extractor.check_shape(shape)


def feature_networks(config):
  """{feature space: {'path', 'sha256'}} of the networks the image metrics
  use ({} for toy data): written beside their numbers, as a metric's name
  says `clf` but not which classifier."""
  out = {}
  for space, extractor in _extractors(config).items():
    # The classifier's checkpoint folder, or the Inception weights file.
    path = getattr(extractor, 'path', None) or extractor.weights_path
    out[space] = {'path': path, 'sha256': extractor.weights_hash}
  return out


def _real_batches(config, split):
  """This host's share of the real images of `split`, for reference
  statistics: its slice of every global batch of the `num_reference` images
  (gan_jax/metrics/shards.py)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.split = split
  try:
    return data.build(config, _reference_batch(config), jax.process_index(),
                      jax.process_count())
  except UserError as e:
    raise _with_eval_hint(e, split) from None


def _reference_batch(config):
  """The host batch the reference images are read in."""
  field = functools.partial(image_metrics.field, config.eval)
  return shards.chunk_size(field('num_reference'), field('sample_batch_size'))


def _with_eval_hint(error, split):
  """`error`, whose fix for training's batches is not this one when it comes
  from the reference images' batches."""
  if 'lower --config.batch_size' not in str(error):
    return error
  return UserError(str(error).replace(
      'add data or lower --config.batch_size',
      f'the image metrics read the {split!r} split in these batches; add '
      'data or lower --config.eval.sample_batch_size'))


def check_reference_data(config, num_examples):
  """Fails at start-up where the real images that a metric compares with
  cannot be read (a split that is not there or not prepared, fewer images
  than one batch of eval.sample_batch_size), not at the first evaluation; on
  every host when one fails. `num_examples`: the training data's size; own
  images have one split, the training images, so they are not read again."""
  if config.data.name in toy.DEFAULTS:
    return
  names = image_metrics.metric_names(config.eval)
  splits = {image_metrics.reference_split(config.eval, n) for n in names}
  error = None
  try:
    for split in sorted(splits - {None}):
      if config.data.name == 'images':
        try:
          pipeline.check_batch(num_examples, _reference_batch(config),
                               jax.process_count(), config.data.path)
        except UserError as e:
          raise _with_eval_hint(e, split) from None
      else:
        batches = _real_batches(config, split)
        getattr(batches, 'close', lambda: None)()
  except UserError as e:
    error = e
  if jax.process_count() > 1 and not shards.all_true(error is None):
    raise error or UserError(
        'another host cannot read the real images that the image metrics '
        'compare with; its own error line says why')
  if error is not None:
    raise error


def evaluate_real(config, split):
  """The image metrics of `config.eval` with real images of `split` in the
  place of samples: what a generator that reproduced the data would score
  (IS and class coverage: a ceiling; FID against its own split: the floor
  that sampling alone leaves). {name: value}."""
  check(config)
  batches = iter(_real_batches(config, split))
  rest = np.zeros((0,), np.float32)

  def sample_fn(n):  # Real images, n at a time, in the data's shuffled order.
    nonlocal rest
    while len(rest) < n:
      batch = next(batches)
      batch = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
      rest = batch if not len(rest) else np.concatenate([rest, batch])
    out, rest = rest[:n], rest[n:]
    return out

  return image_metrics.evaluate_images(
      config.eval, sample_fn, lambda split: _real_batches(config, split),
      _dataset_key(config))


def _dataset_key(config):
  """What the reference statistics are cached under: the data, the channels
  it is read with and the seed that picks the reference images; for an npz
  file its version too (rewritten, it is embedded again)."""
  data_config = config.data
  name = data_config.name
  if name == 'images':
    path = data_config.path
    if '://' in path:  # gs://bucket/images.npz or a folder there
      path = path.rstrip('/')
    else:
      path = os.path.abspath(os.path.expanduser(path))
    key = f'images:{path}'
    if path.lower().endswith('.npz'):
      try:
        key += ':v' + '.'.join(map(str, workdir_lib.version(path)))
      except workdir_lib.storage_errors():
        pass  # Unreadable: the data's own error comes first.
  else:
    key = f'{name}:{data_config.get("image_size") or "native"}'
  channels = data_config.get('channels') or 'native'
  return f'{key}:channels={channels}:seed={data_config.seed}'


def generator(config, state):
  """(G to evaluate, tag): the EMA generator when `config.ema` is on, unless
  `config.eval.ema` is False; then the trained G, tagged '_raw' so that its
  metrics, pictures and files do not overwrite the EMA generator's."""
  use_ema = config.eval.get('ema', True)
  tag = '_raw' if state.g_ema is not None and not use_ema else ''
  return state_lib.sampling_generator(state, use_ema), tag


def _save_picture(image, step, workdir, writer, tag=''):
  """samples/step_XXXXXXX{tag}.png in the workdir (process 0) and TensorBoard."""
  if jax.process_index() == 0:
    path = epath.Path(workdir) / 'samples' / f'step_{step:07d}{tag}.png'
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      plots.save_png(image, path)
    except workdir_lib.storage_errors() as e:
      raise writers.write_error(path, e) from None
  writer.write_image(step, f'samples{tag}', image)


def evaluate(config, generate, g_state, step, workdir, writer, tag=''):
  """Evaluates the generator `g_state` (one copy); returns scalar metrics.

  `generate`: `sampling.make_generate`'s, whose image-metric samples are
  drawn on all of this process's devices, or any `generate(g, key, num,
  labels=None) -> samples` (drawing them on its own terms, the same ones).

  `tag` (see `generator`) is appended to the metric names and the picture's.
  With `config.eval.standing_stats` > 0 G's BatchNorm averages are first
  recomputed for the weights sampled (`standing_stats.py`).

  The noise is drawn from the fixed key `config.eval.seed`, so the pictures of
  successive evaluations show the same z and are comparable over time.
  Toy data: mode coverage of `config.eval.num_samples` samples and a scatter
  plot of generated (red) vs real (grey) points. Images: a grid of
  `config.eval.grid_rows`^2 samples, or with class labels one row of
  `grid_rows` samples per class. A conditional generator is evaluated on
  class-balanced labels (`labels.eval_labels`); one on clusters
  (`conditional.labels=clusters`) is scored as an unconditional one.

  Every process of a multi-host run calls this at the same step: each draws
  and embeds its share of the images for the image metrics, and all return
  the same numbers; process 0 alone writes the picture and the reference
  statistics' cache.
  """
  g_state = standing_stats.recompute(config, g_state,
                                     config.eval.get('standing_stats', 0))
  key = jax.random.PRNGKey(config.eval.seed)
  if config.data.name in toy.DEFAULTS:
    fake = np.asarray(generate(g_state, key, config.eval.num_samples))
    modes, std = toy.mixture(config)
    labels = labels_lib.eval_labels(config, len(fake))  # Conditional: by mode.
    m = toy_metrics.mode_metrics(fake, modes, std, labels=labels)
    real = toy.sample(modes, std, config.eval.num_samples,
                      np.random.default_rng(config.eval.seed))
    _save_picture(plots.scatter(real, fake), step, workdir, writer, tag)
    return {f'{name}{tag}': value for name, value in m.items()}
  rows = cols = config.eval.grid_rows
  labels = labels_lib.eval_labels(config, rows * cols)  # None: unconditional.
  classes = labels_lib.num_classes(config)
  if labels_lib.are_classes(config):  # One row per class.
    rows = classes
    labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), cols)
  fake = np.asarray(generate(g_state, key, rows * cols, labels))
  _save_picture(plots.image_grid(fake, rows, cols=cols), step, workdir, writer,
                tag)
  results = _image_metrics(config, generate, g_state, key)
  return {f'{name}{tag}': value for name, value in results.items()}


def sample_batch_size(config):
  """The noise batch of the numbered samples (`sampling.make_sample_rows`)
  that the image metrics and --mode=sample draw: `eval.sample_batch_size`."""
  return image_metrics.field(config.eval, 'sample_batch_size')


def _image_metrics(config, generate, g_state, key):
  """The image metrics of `config.eval` ({} if none), the same on every host.

  Every process draws and embeds its share of the samples, sample i from the
  same noise whoever draws it; on all its devices with make_generate's
  `generate`.
  """
  if not image_metrics.metric_names(config.eval):
    return {}
  rows = getattr(generate, 'sample_rows', None) or functools.partial(
      sampling.rows_from, generate)
  batch = sample_batch_size(config)
  return image_metrics.evaluate_samples(
      config.eval, rows(g_state, key, batch),
      lambda split: _real_batches(config, split), _dataset_key(config),
      labels=(lambda n: sampling.row_labels(config, 0, n, batch))
      if labels_lib.are_classes(config) else None)
