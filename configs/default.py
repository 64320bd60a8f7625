"""Default: an MLP GAN on `ring8`, 8 Gaussians on a circle, generated in-process.

    python launch.py --config configs/default.py
    python launch.py --config configs/default.py:loss=hinge
    python launch.py --config configs/default.py:data=grid25,loss=wgan_gp

Arguments (`:key=value,...`; tests/test_configs.py checks what they promise):
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
  data: ring8 | grid25 | ring_pacgan; default ring8
The recipes (LOSS_RECIPES below): WGAN 5 critic steps and Adam(5e-5, 0.5);
WGAN-GP 5 critic steps and Adam(1e-4, 0.5, 0.9); on every config.
Settings: model=mlp, batch_size=256, num_steps=4000, z_dim=2, d_steps=1,
  g.optimizer.lr=0.001, g.optimizer.b1=0.5, g.optimizer.schedule=linear,
  d.optimizer.lr=0.001, d.optimizer.b1=0.5, updates=alternating
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


def choice(args, key, options):
  """args[key], refused in one line unless it is one of `options`."""
  if args[key] not in options:
    raise ValueError(f'config argument {key}={args[key]}: expected one of '
                     f'{", ".join(options)}')
  return args[key]


def positive_int(args, key):
  """args[key] as an int, refused in one line unless it is one >= 1."""
  value = args[key]
  if not (value.isdigit() and int(value) >= 1):
    raise ValueError(f'config argument {key}={value}: expected a whole number '
                     '>= 1')
  return int(value)


def optimizer(lr, b1, b2, eps=1e-8, schedule='constant', warmup_steps=0):
  """Adam; `schedule`: constant, linear or cosine decay to 0 (after warmup)."""
  return ml_collections.ConfigDict(dict(lr=lr, b1=b1, b2=b2, eps=eps,
                                        schedule=schedule,
                                        warmup_steps=warmup_steps))


def net(optimizer_config, **fields):
  """`config.g` / `config.d`: the network's optimizer and the fields its model
  reads (gan_jax/models/registry.py; any other field is refused)."""
  return ml_collections.ConfigDict(dict(optimizer=optimizer_config, **fields))


# What `:loss=NAME` sets besides config.loss.name, on every config: the
# settings the loss's paper trains with (the config's schedule is kept).
LOSS_RECIPES = {
    # WGAN (Arjovsky et al. 2017): 5 critic steps, a small learning rate.
    'wasserstein': dict(d_steps=5, lr=5e-5, b1=0.5, b2=0.999),
    # WGAN-GP (Gulrajani et al. 2017): 5 critic steps, Adam(1e-4, 0.5, 0.9).
    'wgan_gp': dict(d_steps=5, lr=1e-4, b1=0.5, b2=0.9),
}


def set_loss(config, name):
  """Sets `config.loss.name` and that loss's recipe (LOSS_RECIPES)."""
  config.loss.name = name
  recipe = LOSS_RECIPES.get(name)
  if recipe:
    config.d_steps = recipe['d_steps']
    for opt in (config.g.optimizer, config.d.optimizer):
      opt.lr, opt.b1, opt.b2 = recipe['lr'], recipe['b1'], recipe['b2']
  return config


def get_config(arg=None):
  args = parse_arg(arg, loss='non_saturating', data='ring8')
  choice(args, 'data', ('ring8', 'grid25', 'ring_pacgan'))
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
  # Normalisation of each network, e.g. 'none', 'batch', 'layer', 'spectral'
  # (each model's docstring lists its choices); 'default' keeps the model's
  # own (mlp: none; dcgan: batch; dcgan_mnist: G batch, D none; sngan_resnet:
  # G batch, D spectral). A gradient penalty refuses BatchNorm in D.
  config.g = net(optimizer(1e-3, 0.5, 0.999, schedule='linear'), width=256,
                 depth=3, activation='relu', norm='default')
  config.d = net(optimizer(1e-3, 0.5, 0.999, schedule='linear'), width=256,
                 depth=3, activation='relu', norm='default')
  # PacGAN (Lin et al. 2018): D judges packs of this many samples (1: off);
  # it must divide the per-device batch.
  config.d.pack = 1

  config.loss = ml_collections.ConfigDict(dict(name='', clip=0.01))
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
  # 'acgan' head (acgan_weight: its classification loss). labels: what the
  # labels are, 'classes' or 'clusters' (k-means ids from
  # tools/cluster_npz.py: evaluated as an unconditional G, gan_jax/labels.py).
  config.num_classes = 0
  config.conditional = ml_collections.ConfigDict(dict(
      g='concat', d='projection', acgan_weight=1.0, labels='classes'))
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

  return set_loss(config, args['loss'])
