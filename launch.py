"""Trains a GAN: python launch.py --config configs/<name>.py[:args] [--workdir DIR].

Any config field can be overridden: --config.batch_size=128 --config.loss.name=hinge
"""
import datetime
import logging as logging_lib
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gan_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, with an optional :argument.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, metrics and samples go; a run resumes '
    'from it. Default: runs/<config>_<time>.')


def default_workdir(config_path):
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', f'{name}_{datetime.datetime.now():%Y%m%d_%H%M%S}')


class _OnlyOurs(logging_lib.Filter):
  """Keeps INFO lines from gan_jax; libraries (orbax, jax) only warn and worse."""

  def filter(self, record):
    return record.levelno >= logging_lib.WARNING or 'gan_jax' in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_OnlyOurs())
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
  logging.info('workdir: %s', workdir)
  try:
    train.train_and_evaluate(_CONFIG.value, workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
