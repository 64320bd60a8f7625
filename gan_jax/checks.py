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
