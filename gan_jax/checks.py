"""Start-up checks of the config, so bad values fail with one clear line.

Each field's type and range is one row of FIELDS; what a row cannot say
(registered names, relations between fields) is checked after the table.
"""
import math
from typing import Any, Callable, NamedTuple

import jax

from gan_jax import augment
from gan_jax import labels as labels_lib
from gan_jax import losses
from gan_jax import models
from gan_jax import penalties
from gan_jax import step
from gan_jax.errors import UserError
from gan_jax.models import common
from gan_jax.models import conditional
from gan_jax.models import conv_transpose
from gan_jax.models import dcgan_mnist

# The step counter and optax's update counts are int32.
INT32_END = 2**31
# gan_jax/state.py learning_rate (which imports this module).
SCHEDULES = ('constant', 'linear', 'cosine')


class Rule(NamedTuple):
  """What a value must be besides its type, as an error says it."""
  ok: Callable[[Any], bool]
  text: str  # Follows 'must be': 'positive', 'in [0, 1)', ...
  choices: tuple = ()  # For a field that takes names: the valid ones.


POSITIVE = Rule(lambda v: v > 0, 'positive')
AT_LEAST_0 = Rule(lambda v: v >= 0, '>= 0')
FRACTION = Rule(lambda v: 0 <= v < 1, 'in [0, 1)')


def up_to(high, why):
  """1 .. `high`: a count that start-up or compilation loops over."""
  return Rule(lambda v: 1 <= v <= high, f'in [1, {high}] ({why})')


def one_of(*choices):
  """One of the names (or numbers) `choices`."""
  return Rule(lambda v: v in choices,
              'one of: ' + ', '.join(map(str, choices)), choices)


# The types of the table: (what a value must be, the flag's placeholder). A
# '?' after the type also allows None (unset: the reader's default).
TYPES = {
    'int': ('an integer in [-2**31, 2**31) (int32, as JAX counts)', 'N'),
    'float': ('a finite number', 'X'),
    'str': ('a string', 'NAME'),
    'bool': ('true or false', 'true'),
    'names': ('a comma-separated string of names', 'NAME,NAME'),
}

# Every field of the configs: {dotted name: (type, rule or None)}. A field a
# config lacks is not checked (the image configs have no g.width). Names that
# registries hold are checked by their registry (model, loss.name,
# penalty.name, data.name, augment.policy; norm and activation by the model).
FIELDS = {
    'seed': ('int', AT_LEAST_0),
    'model': ('str', None),
    'z_dim': ('int', POSITIVE),
    'batch_size': ('int', POSITIVE),
    'num_steps': ('int', POSITIVE),
    'd_steps': ('int', up_to(100, 'the step unrolls the D updates')),
    'updates': ('str', one_of(*step.UPDATES)),
    'steps_per_call': ('int', POSITIVE),
    'steps_per_call_on_cpu': ('int', AT_LEAST_0),  # 0: steps_per_call.
    'dtype': ('str', one_of(*common.DTYPES)),
    'num_classes': ('int', AT_LEAST_0),  # 0: unconditional.
    'collapse_threshold': ('float', AT_LEAST_0),  # 0: never warn.
    'nonfinite': ('str', one_of('stop', 'skip')),
    'resume_from_step': ('int', AT_LEAST_0),  # 0: the latest checkpoint.
    'allow_config_change': ('bool', None),
    'log_every': ('int', POSITIVE),
    'eval_every': ('int', POSITIVE),
    'data.name': ('str', None),
    'data.seed': ('int', AT_LEAST_0),  # numpy refuses negative seeds.
    'data.std': ('float?', POSITIVE),
    'data.radius': ('float?', POSITIVE),
    'data.num_modes': ('int?', POSITIVE),
    'data.grid_size': ('int?', POSITIVE),
    'data.grid_spacing': ('float?', POSITIVE),
    'data.split': ('str', None),
    'data.data_dir': ('str?', None),
    'data.path': ('str?', None),
    'data.image_size': ('int?', POSITIVE),
    'data.channels': ('int?', one_of(1, 3)),
    'data.num_workers': ('int', AT_LEAST_0),
    # The same rows under g and d.
    **{f'{net}.{field}': row for net in ('g', 'd') for field, row in {
        'optimizer.lr': ('float', POSITIVE),
        'optimizer.b1': ('float', FRACTION),
        'optimizer.b2': ('float', FRACTION),
        'optimizer.eps': ('float', POSITIVE),
        'optimizer.schedule': ('str', one_of(*SCHEDULES)),
        'optimizer.warmup_steps': ('int', AT_LEAST_0),
        'width': ('int', POSITIVE),
        'depth': ('int', up_to(100, 'a Python loop builds the layers')),
        'channels': ('int', POSITIVE),
        'activation': ('str', None),
        'norm': ('str', None),
    }.items()},
    'g.conv_transpose': ('str', one_of(*conv_transpose.IMPLS)),
    'g.upsample': ('str', one_of(*dcgan_mnist.UPSAMPLE)),
    'd.pack': ('int', POSITIVE),  # 1: no packing.
    'd.pieces': ('int', POSITIVE),  # Maxout pieces (model pacgan).
    # Kernels from N(0, init_std^2); 0: Flax's default (model pacgan).
    'g.init_std': ('float', AT_LEAST_0),
    'd.init_std': ('float', AT_LEAST_0),
    'loss.name': ('str', None),
    'loss.clip': ('float', None),  # Positive where used: _check_relations.
    'penalty.name': ('str', None),
    'penalty.weight': ('float', AT_LEAST_0),
    'penalty.every': ('int', POSITIVE),  # 1: every D update.
    'augment.policy': ('str', None),
    'ema.decay': ('float', FRACTION),  # 0: off.
    'ema.start_step': ('int', AT_LEAST_0),
    'conditional.g': ('str', one_of(*conditional.G_MODES)),
    'conditional.d': ('str', one_of(*conditional.D_HEADS)),
    'conditional.acgan_weight': ('float', AT_LEAST_0),
    'conditional.labels': ('str', one_of(*labels_lib.LABEL_KINDS)),
    'eval.num_samples': ('int', POSITIVE),
    'eval.seed': ('int', AT_LEAST_0),
    'eval.ema': ('bool', None),
    'eval.standing_stats': ('int', AT_LEAST_0),  # 0: off.
    'eval.grid_rows': ('int', POSITIVE),
    'eval.metrics': ('names', None),
    'eval.inception_weights': ('str', None),
    'eval.classifier_checkpoint': ('str', None),
    'eval.reference_split': ('str', None),
    'eval.num_reference': ('int', POSITIVE),
    'eval.cache_dir': ('str', None),
    'eval.sample_batch_size': ('int', POSITIVE),
    'eval.inception_batch_size': ('int', POSITIVE),
    'checkpoint.every': ('int', POSITIVE),
    'checkpoint.keep': ('int', POSITIVE),
    'checkpoint.keep_every': ('int', AT_LEAST_0),  # 0: none.
    'checkpoint.use_async': ('bool', None),
}


def _has_type(value, kind):
  if value is None:
    return kind.endswith('?')
  kind = kind.rstrip('?')
  if isinstance(value, bool) or kind == 'bool':  # A bool is also an int.
    return isinstance(value, bool) and kind == 'bool'
  if kind == 'int':
    return isinstance(value, int) and -INT32_END <= value < INT32_END
  if kind == 'float':
    return isinstance(value, (int, float)) and math.isfinite(value)
  if kind == 'names':
    return isinstance(value, (str, list, tuple))
  return isinstance(value, str)


def _shown(value):
  """`value` for a one-line error: its repr, cut short."""
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + '...'


def field_error(name, value, text, flag_value):
  """The one-line error of field `name` whose `value` is not `text`."""
  return UserError(f'{name} must be {text}, got {_shown(value)}; pass '
                   f'--config.{name}={flag_value}')


_ABSENT = object()


def _lookup(config, name):
  """The value of dotted field `name` in `config`, or _ABSENT."""
  node = config
  for part in name.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return _ABSENT
    node = node[part]
  return node


def check_fields(config):
  """Raises UserError for the first field of FIELDS in `config` whose value
  has the wrong type or breaks its rule."""
  for name, (kind, rule) in FIELDS.items():
    value = _lookup(config, name)
    if value is _ABSENT:
      continue
    text, flag_value = TYPES[kind.rstrip('?')]
    if not _has_type(value, kind):
      unset = ' or unset' if kind.endswith('?') else ''
      raise field_error(name, value, text + unset, flag_value)
    if value is None or rule is None or rule.ok(value):
      continue
    if rule.choices:  # The form of the registries' errors.
      raise UserError(f'unknown {name} {_shown(value)}; {name} must be '
                      f'{rule.text}; pass --config.{name}={rule.choices[0]}')
    raise field_error(name, value, rule.text, flag_value)


def validate(config):
  """Raises UserError for config values that cannot work."""
  check_fields(config)
  loss = losses.get(config.loss.name)
  if config.penalty.name:
    penalties.get(config.penalty.name)
  if 'augment' in config:
    augment.parse(config.augment.policy)
  check_model_fields(config)
  _check_relations(config, loss)


def _check_relations(config, loss):
  """The rules between fields, which one row of FIELDS cannot say."""
  if loss.clip_d_weights and not config.loss.clip > 0:
    raise field_error('loss.clip', config.loss.clip, 'positive (loss '
                      f'{config.loss.name!r} clips D weights to it)', 'X')
  if config.num_steps * config.d_steps >= INT32_END:
    raise UserError(
        f'num_steps * d_steps ({config.num_steps} * {config.d_steps}) must be '
        "below 2**31 (D's optimizer counts its updates in int32); pass a "
        'smaller --config.num_steps=N')
  pack, devices = config.d.get('pack', 1), jax.device_count()
  if config.batch_size % pack or (
      config.batch_size % devices == 0
      and (config.batch_size // devices) % pack):
    raise UserError(
        f'd.pack={pack} must divide the per-device batch '
        f'(batch_size {config.batch_size} over {devices} devices); use a '
        f'batch_size that is a multiple of {pack * devices}')
  if step.updates(config) == 'simultaneous' and config.d_steps != 1:
    raise UserError(f"updates='simultaneous' takes one D update per G update, "
                    f'but d_steps is {config.d_steps}; pass --config.d_steps=1 '
                    "or --config.updates=alternating")
  classes = config.get('num_classes', 0)
  if classes and pack > 1:
    raise UserError(f'd.pack={pack} (PacGAN) and num_classes={classes} cannot '
                    'be combined: a pack mixes examples of different classes; '
                    'drop one (--config.d.pack=1 or --config.num_classes=0)')
  if labels_lib.label_kind(config) == 'clusters' and (
      not classes or config.data.name != 'images'):
    raise UserError(
        'conditional.labels=clusters needs your own images labelled with '
        'clusters and their number: write them with tools/cluster_npz.py '
        '--clusters K and pass --config.data.name=images '
        '--config.data.path=THAT.npz --config.num_classes=K (toy data and '
        'tensorflow-datasets have no clusters)')


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
# (a top-level name covers its subfields). Not `nonfinite`: `skip` adds
# optax.apply_if_finite's counters to the optimizer state, so a checkpoint
# saved with the other value does not fit.
HARMLESS = ('num_steps', 'log_every', 'eval_every', 'eval', 'checkpoint',
            'steps_per_call', 'steps_per_call_on_cpu', 'resume_from_step',
            'allow_config_change', 'collapse_threshold',
            'g.conv_transpose', 'conditional.labels')


# Fields added after runs may have been saved, with the value that behaves as
# before they existed: a saved config without the field and a current one with
# that value train the same, so resuming is not refused for it.
ADDED_FIELDS = {
    'dtype': 'float32', 'g.norm': 'default', 'd.norm': 'default',
    'd.pack': 1, 'penalty.every': 1, 'augment.policy': '', 'ema.decay': 0.0,
    'ema.start_step': 0, 'num_classes': 0, 'conditional.g': 'concat',
    'conditional.d': 'projection', 'conditional.acgan_weight': 1.0,
    'conditional.labels': 'classes',
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


def schedule_warning(saved, current):
  """A warning when a resumed run's num_steps changes a decaying learning-rate
  schedule (it decays to 0 at num_steps), else None. Not refused: training on
  past a finished run's end is what a new num_steps is for."""
  if saved.get('num_steps') == current['num_steps']:
    return None
  decaying = [f'{net}.optimizer.schedule={current[net]["optimizer"]["schedule"]}'
              for net in ('g', 'd')
              if current[net]['optimizer']['schedule'] != 'constant']
  if not decaying:
    return None
  return (f'num_steps {saved.get("num_steps")} -> {current["num_steps"]} with '
          f'{", ".join(decaying)}: from here the learning rate is that of a '
          f'{current["num_steps"]}-step run (decaying to 0 at its end), a jump '
          'from the old schedule\'s value')


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
