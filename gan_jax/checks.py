"""Start-up checks of the config, so bad values fail with one clear line."""
import jax

from gan_jax import augment
from gan_jax import losses
from gan_jax import models
from gan_jax import penalties
from gan_jax import step
from gan_jax.errors import UserError



def _positive(value, name):
  if not value > 0:
    raise UserError(f'{name} must be positive, got {value}; pass --config.{name}=N')


def validate(config):
  """Raises UserError for config values that cannot work."""
  for name in ('num_steps', 'batch_size', 'd_steps', 'log_every', 'eval_every',
               'checkpoint.every', 'eval.num_samples', 'z_dim', 'steps_per_call'):
    value = config
    for part in name.split('.'):
      value = value[part]
    _positive(value, name)
  for net in ('g', 'd'):
    _positive(config[net].optimizer.lr, f'{net}.optimizer.lr')
  loss = losses.get(config.loss.name)
  if config.penalty.name:
    penalties.get(config.penalty.name)
  if loss.clip_d_weights:
    _positive(config.loss.clip, 'loss.clip')
  every = config.penalty.get('every', 1)
  if not (isinstance(every, int) and every >= 1):
    raise UserError(f'penalty.every must be a positive integer, got {every!r}; '
                    'pass --config.penalty.every=N (1: every D update)')
  pack = config.d.get('pack', 1)
  if not (isinstance(pack, int) and pack >= 1):
    raise UserError(f'd.pack must be a positive integer, got {pack!r}; pass '
                    '--config.d.pack=M (1: no packing)')
  devices = jax.device_count()
  if config.batch_size % pack or (
      config.batch_size % devices == 0
      and (config.batch_size // devices) % pack):
    raise UserError(
        f'd.pack={pack} must divide the per-device batch '
        f'(batch_size {config.batch_size} over {devices} devices); use a '
        f'batch_size that is a multiple of {pack * devices}')
  mode = step.updates(config)
  if mode not in step.UPDATES:
    raise UserError(f'unknown updates {mode!r}; set config.updates to one of: '
                    + ', '.join(step.UPDATES))
  if mode == 'simultaneous' and config.d_steps != 1:
    raise UserError(f"updates='simultaneous' takes one D update per G update, "
                    f'but d_steps is {config.d_steps}; pass --config.d_steps=1 '
                    "or --config.updates=alternating")
  classes = config.get('num_classes', 0)
  if not (isinstance(classes, int) and classes >= 0):
    raise UserError(f'num_classes must be an integer >= 0 (0: unconditional), '
                    f'got {classes!r}; pass --config.num_classes=N')
  if classes and pack > 1:
    raise UserError(f'd.pack={pack} (PacGAN) and num_classes={classes} cannot '
                    'be combined: a pack mixes examples of different classes; '
                    'drop one (--config.d.pack=1 or --config.num_classes=0)')
  if 'augment' in config:
    augment.parse(config.augment.policy)
  if 'ema' in config:
    decay, start = config.ema.decay, config.ema.start_step
    if not 0 <= decay < 1:
      raise UserError(f'ema.decay must be in [0, 1) (0: off), got {decay}; '
                      'pass e.g. --config.ema.decay=0.999')
    if start < 0:
      raise UserError(f'ema.start_step must be >= 0, got {start}')
  check_model_fields(config)


# Fields of config.g / config.d that the step and state read for every model.
STEP_FIELDS = {'g': ('optimizer',), 'd': ('optimizer', 'pack')}


def check_model_fields(config):
  """Refuses a field under `g` or `d` that the chosen model does not read
  (the model registry declares what each reads)."""
  model = models.get(config.model)
  for net in ('g', 'd'):
    read = STEP_FIELDS[net] + model.fields(net)
    extra = sorted(set(config[net].keys()) - set(read))
    if extra:
      raise UserError(
          f'config.{net}.{extra[0]} is not read by model {config.model!r} '
          f'(it reads {net}.' + f', {net}.'.join(sorted(read)) + '); remove '
          'it from the config, or use a config made for that model')


def uses_batch_norm(model_state) -> bool:
  """Whether a network's non-parameter collections hold BatchNorm statistics.

  BatchNorm keeps `mean` and `var` side by side in 'batch_stats'; spectral
  normalisation keeps its `.../u` and `.../sigma` vectors in the same
  collection, which do not count.
  """
  def visit(tree):
    if not hasattr(tree, 'items'):
      return False
    if 'mean' in tree and 'var' in tree:
      return True
    return any(visit(v) for v in tree.values())
  return visit(model_state.get('batch_stats', {}))


def check_gradient_penalty(config, d_model_state):
  """Refuses a gradient penalty on a discriminator with BatchNorm.

  The penalties differentiate D(x_i) with respect to x_i alone, but BatchNorm
  makes each output depend on the whole batch, so the per-example gradient
  norm is not what the penalty constrains (Gulrajani et al. 2017, Sec. 4, who
  use layer normalisation in the critic instead).
  """
  name = penalties.penalty_name(config, losses.get(config.loss.name))
  if name in penalties.INPUT_GRADIENT and uses_batch_norm(d_model_state):
    fix = ("set --config.d.norm to 'layer', 'spectral' or 'none'"
           if 'norm' in models.get(config.model).d_fields else
           'use a discriminator without BatchNorm (e.g. --config.model=mlp or '
           'sngan_resnet)')
    raise UserError(
        f'penalty {name!r} takes per-example input gradients of D, but the '
        f'discriminator of model {config.model!r} has BatchNorm, which mixes '
        f'the examples of a batch; {fix}, or drop the penalty')


# Fields that may change when a run resumes: they do not change what is trained
# (a top-level name covers its subfields).
HARMLESS = ('num_steps', 'log_every', 'eval_every', 'eval', 'checkpoint',
            'steps_per_call', 'steps_per_call_on_cpu', 'resume_from_step',
            'allow_config_change', 'nonfinite', 'collapse_threshold',
            'g.conv_transpose')


# Fields added after runs may have been saved, with the value that behaves as
# before they existed: a saved config without the field and a current one with
# that value train the same, so resuming is not refused for it.
ADDED_FIELDS = {
    'dtype': 'float32', 'g.norm': 'default', 'd.norm': 'default',
    'd.pack': 1, 'penalty.every': 1, 'augment.policy': '', 'ema.decay': 0.0,
    'ema.start_step': 0, 'num_classes': 0, 'conditional.g': 'concat',
    'conditional.d': 'projection', 'conditional.acgan_weight': 1.0,
    'updates': 'alternating',
}


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def config_changes(saved, current):
  """Lists `field: saved -> current` for fields that change the run."""
  saved, current = _flatten(saved), _flatten(current)
  changes = []
  for name in sorted(set(saved) | set(current)):
    if name in HARMLESS or name.split('.')[0] in HARMLESS:
      continue
    old, new = saved.get(name, '<absent>'), current.get(name, '<absent>')
    if name not in saved and name in ADDED_FIELDS:
      old = ADDED_FIELDS[name]
    if old != new and not (isinstance(old, (int, float))
                           and isinstance(new, (int, float)) and old == new):
      changes.append(f'{name}: {old!r} -> {new!r}')
  return changes
