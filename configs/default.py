"""Default: an MLP GAN on `ring8`, 8 Gaussians on a circle, generated in-process.

    python launch.py --config configs/default.py
    python launch.py --config configs/default.py:loss=hinge
    python launch.py --config configs/default.py:data=grid25,loss=wgan_gp

The optional argument is `key=value` pairs separated by commas:
  loss: a name from gan_jax.losses (minimax, non_saturating, least_squares,
        wasserstein, wgan_gp, hinge); sets the settings that loss is known to
        need (WGAN: RMSprop-like small learning rate and clipping;
        WGAN-GP: Adam(b1=0.5, b2=0.9) and 5 critic steps).
  data: ring8 or grid25.
Any field can also be set on the command line, e.g. --config.num_steps=500.
"""
import ml_collections
from ml_collections import config_dict


def parse_arg(arg, **defaults):
  """Parses 'k1=v1,k2=v2' into a dict, with `defaults` for missing keys."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ValueError(f'config argument {item!r}: expected key=value with key '
                       f'in {sorted(defaults)}')
    out[key] = value
  return out


def optimizer(lr, b1, b2, eps=1e-8, schedule='constant', warmup_steps=0):
  """Adam; `schedule`: constant, linear or cosine decay to 0 (after warmup)."""
  return ml_collections.ConfigDict(dict(lr=lr, b1=b1, b2=b2, eps=eps,
                                        schedule=schedule,
                                        warmup_steps=warmup_steps))


def get_config(arg=None):
  args = parse_arg(arg, loss='non_saturating', data='ring8')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = 'mlp'
  config.z_dim = 2
  config.batch_size = 256  # Global, over all devices and hosts.
  config.num_steps = 4000
  config.d_steps = 1  # D updates per G update, each on its own batch.
  # 'alternating': D updates, then G's through the updated D (fresh noise);
  # 'simultaneous': both from one forward pass at the same (G, D), as the
  # TensorFlow DCGAN tutorial (d_steps 1; gan_jax/step.py).
  config.updates = 'alternating'
  # Train steps per compiled call (a lax.scan); logging, evaluation and
  # checkpoints still happen at their steps. Helps small, dispatch-bound models.
  config.steps_per_call = 50
  # On CPU, this instead when set (> 0); see gan_jax/step.py steps_per_call.
  config.steps_per_call_on_cpu = 0
  # Compute dtype of the layers, 'float32' or 'bfloat16' (parameters, samples
  # and logits stay float32).
  config.dtype = 'float32'

  config.data = ml_collections.ConfigDict()
  config.data.name = args['data']
  config.data.seed = 0
  # None: the dataset's default (gan_jax/data/toy.py).
  config.data.std = config_dict.placeholder(float)
  config.data.radius = config_dict.placeholder(float)
  config.data.num_modes = config_dict.placeholder(int)
  config.data.grid_size = config_dict.placeholder(int)
  config.data.grid_spacing = config_dict.placeholder(float)

  # Linear decay of the learning rate to 0 sharpens the modes at the end.
  config.g = ml_collections.ConfigDict(dict(
      width=256, depth=3, activation='relu',
      optimizer=optimizer(1e-3, 0.5, 0.999, schedule='linear')))
  config.d = ml_collections.ConfigDict(dict(
      width=256, depth=3, activation='relu',
      optimizer=optimizer(1e-3, 0.5, 0.999, schedule='linear')))
  # Normalisation of each network, e.g. 'none', 'batch', 'layer', 'spectral'
  # (each model's docstring lists its choices); 'default' keeps the model's
  # own (mlp: none; dcgan: batch; dcgan_mnist: G batch, D none; sngan_resnet:
  # G batch, D spectral). A gradient penalty refuses BatchNorm in D.
  config.g.norm = 'default'
  config.d.norm = 'default'
  # PacGAN (Lin et al. 2018): D judges packs of this many samples (1: off);
  # it must divide the per-device batch.
  config.d.pack = 1

  config.loss = ml_collections.ConfigDict(dict(name=args['loss'], clip=0.01))
  # A penalty on D (gan_jax.penalties: gradient_penalty, r1, r2, dragan; ''
  # for the loss's own: wgan_gp's gradient_penalty, else none), with any loss;
  # a name here replaces the loss's own. `every` > 1 makes it lazy: computed
  # every `every` D updates and scaled by `every` (StyleGAN2; e.g. r1 with
  # weight=10, every=16).
  config.penalty = ml_collections.ConfigDict(dict(name='', weight=10.0,
                                                  every=1))
  # DiffAugment (Zhao et al. 2020) of D's input, for images: a comma-separated
  # subset of 'color,translation,cutout' ('' for none).
  config.augment = ml_collections.ConfigDict(dict(policy=''))
  # Exponential moving average of G's weights, to sample from
  # (gan_jax.state.sampling_generator): decay 0 = off (e.g. 0.999); it copies
  # G until start_step steps are done.
  config.ema = ml_collections.ConfigDict(dict(decay=0.0, start_step=0))
  # Class-conditional GANs (gan_jax/models/conditional.py): num_classes > 0
  # takes labels from the data; G gets the one-hot label with z ('concat')
  # or per-class BatchNorm scale and shift ('cbn'), D a 'projection' or
  # 'acgan' head (acgan_weight: its classification loss).
  config.num_classes = 0
  config.conditional = ml_collections.ConfigDict(dict(
      g='concat', d='projection', acgan_weight=1.0))
  # Mode-collapse alarm: train warns when the metric diversity_ratio (pairwise
  # distances of generated vs real samples) falls below this (0: never).
  config.collapse_threshold = 0.1

  # A non-finite loss or gradient: 'stop' (name the step; the last good
  # checkpoint stays the latest) or 'skip' the update and count it.
  config.nonfinite = 'stop'
  # Resuming: 0 = the latest checkpoint; N = the one at step N. A run refuses
  # a config that changes the run (model, loss, data, batch) unless allowed.
  config.resume_from_step = 0
  config.allow_config_change = False

  config.log_every = 200
  config.eval_every = 1000
  # eval.ema: with config.ema on, evaluate the EMA generator (True) or the
  # trained one (False: metrics and files get a '_raw' suffix).
  # eval.standing_stats: > 0 recomputes G's BatchNorm averages over that many
  # batches of noise before sampling (gan_jax/standing_stats.py; for EMA).
  config.eval = ml_collections.ConfigDict(dict(num_samples=2500, seed=0,
                                               ema=True, standing_stats=0))
  config.checkpoint = ml_collections.ConfigDict(dict(
      every=1000, keep=3, keep_every=0, use_async=True))

  if args['loss'] == 'wasserstein':
    config.d_steps = 5
    config.g.optimizer = optimizer(5e-5, 0.5, 0.999, schedule='linear')
    config.d.optimizer = optimizer(5e-5, 0.5, 0.999, schedule='linear')
  elif args['loss'] == 'wgan_gp':
    config.d_steps = 5
    config.g.optimizer = optimizer(1e-4, 0.5, 0.9, schedule='linear')
    config.d.optimizer = optimizer(1e-4, 0.5, 0.9, schedule='linear')
  return config
