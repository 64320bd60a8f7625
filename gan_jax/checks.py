"""Start-up checks of the config, so bad values fail with one clear line."""
from gan_jax import losses
from gan_jax import penalties
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


# Fields that may change when a run resumes: they do not change what is trained.
HARMLESS = ('num_steps', 'log_every', 'eval_every', 'eval', 'checkpoint',
            'steps_per_call', 'resume_from_step', 'allow_config_change',
            'nonfinite')


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
    if name.split('.')[0] in HARMLESS:
      continue
    old, new = saved.get(name, '<absent>'), current.get(name, '<absent>')
    if old != new and not (isinstance(old, (int, float))
                           and isinstance(new, (int, float)) and old == new):
      changes.append(f'{name}: {old!r} -> {new!r}')
  return changes
