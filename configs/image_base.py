"""Shared settings of the image configs (not a config to launch by itself).

Each image config calls `image_config(...)`, which starts from
configs/default.py (so every field exists, and a fork that adds a field there
gets it everywhere) and replaces the data and model settings.
"""
import ml_collections
from ml_collections import config_dict

from configs import default


def data_config(name, **fields):
  """The fields every image dataset reads (see gan_jax/data/)."""
  data = ml_collections.ConfigDict(dict(
      name=name,
      seed=0,
      split='train',  # A TFDS split, e.g. 'train', 'test', 'train[:90%]'.
      # Where the prepared TFDS dataset is (None: $TFDS_DATA_DIR or
      # ~/tensorflow_datasets). gan_jax never downloads.
      data_dir=config_dict.placeholder(str),
      # Your own images ('images'): a folder of .png/.jpg or an .npz.
      path=config_dict.placeholder(str),
      image_size=config_dict.placeholder(int),  # None: the dataset's own.
      channels=config_dict.placeholder(int),  # None: the data's own.
      num_workers=0,  # grain worker processes for decoding.
  ))
  data.update(fields)
  return data


# The image models whose D has BatchNorm, which a gradient penalty refuses
# (gan_jax/checks.py): with a loss that brings one (wgan_gp) their critic uses
# LayerNorm instead, as Gulrajani et al. 2017 do.
BATCH_NORM_D = ('dcgan',)


def image_config(*, data, model, loss, z_dim, batch_size, num_steps, lr, b1,
                 b2, schedule='constant', d_steps=1, g_fields=None,
                 d_fields=None):
  """A config for `model` on image dataset `data` (a name or a ConfigDict).

  `g_fields` / `d_fields`: the fields of config.g / config.d the model reads
  besides its optimizer and norm (gan_jax/models/registry.py).
  """
  config = default.get_config()
  config.model = model
  config.data = data if isinstance(data, ml_collections.ConfigDict) else (
      data_config(data))
  config.z_dim = z_dim
  config.batch_size = batch_size
  config.num_steps = num_steps
  config.d_steps = d_steps
  # Image models are big enough not to be dispatch-bound.
  config.steps_per_call = 10
  # On CPU, one step per call: XLA:CPU runs convolution gradients inside a
  # loop ~8x slower (gan_jax/step.py, steps_per_call).
  config.steps_per_call_on_cpu = 1
  config.g = default.net(default.optimizer(lr, b1, b2, schedule=schedule),
                        norm='default', **(g_fields or {}))
  config.d = default.net(default.optimizer(lr, b1, b2, schedule=schedule),
                        norm='default', pack=1, **(d_fields or {}))
  config.log_every = 100
  config.eval_every = 1000
  # Sample grids: grid_rows x grid_rows images from fixed noise.
  config.eval.grid_rows = 8
  # Sample-quality metrics on FID-Inception features (gan_jax/metrics/), e.g.
  # 'fid_10k_train,kid_10k_train,is_10k'; they need the converted pytorch-fid
  # weights (docs/evaluation.md). '' : sample grids only.
  config.eval.metrics = ''
  config.eval.inception_weights = ''
  # Metrics with the tag 'clf' (fid_clf_10k_train, kid_clf, is_clf_10k, ...)
  # are computed on the features of a classifier instead of Inception, for
  # labelled data and no download: the --workdir of tools/train_classifier.py
  # (docs/evaluation.md). Numbers compare only with the same checkpoint.
  config.eval.classifier_checkpoint = ''
  config.eval.num_samples = 10_000  # For the generic names 'fid', 'kid', ...
  config.eval.reference_split = 'train'  # For the generic names.
  config.eval.num_reference = 50_000  # Real images in the reference stats.
  config.eval.cache_dir = ''  # Reference stats; '' is ~/.cache/gan_jax/reference.
  config.eval.sample_batch_size = 500
  config.eval.inception_batch_size = 100  # Per device.
  config.checkpoint.every = 1000
  default.set_loss(config, loss)
  if loss == 'wgan_gp' and model in BATCH_NORM_D:
    config.d.norm = 'layer'
  return config


# How transposed convolutions compute: 'auto' (by phases on CPU, where that is
# ~4x faster, XLA's elsewhere), 'xla' or 'phases': the same function and
# parameters (gan_jax/models/conv_transpose.py). For the models that read it.
CONV_TRANSPOSE = 'auto'

