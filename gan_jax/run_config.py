"""A run's own config, read back from `WORKDIR/config.json`.

`launch.py --mode=sample` and `--mode=eval` without `--config` load this file
as the config, `--config=gan_jax/run_config.py:WORKDIR`, so `--config.x=...`
overrides work on it as on a config file. Training writes config.json
(`train._write_config`) with every field resolved; JSON keeps no field types,
so a field that is None there (an unset placeholder such as data.data_dir)
comes back as a placeholder that takes a value of any type from the command
line. The result builds the same train state as the config it was written
from: the configs hold numbers, strings, booleans and nested fields only
(tests/test_sample.py).
"""
import json
import os

import ml_collections
from etils import epath
from ml_collections import config_dict

from gan_jax.errors import UserError

CONFIG_FILE = 'config.json'


def _with_placeholders(tree):
  return {k: (_with_placeholders(v) if isinstance(v, dict) else
              config_dict.placeholder(object) if v is None else v)
          for k, v in tree.items()}


def load(workdir):
  """The ConfigDict of `WORKDIR/config.json`; UserError if there is none."""
  path = epath.Path(workdir) / CONFIG_FILE
  try:
    if not epath.Path(workdir).is_dir():
      raise UserError(f'no run in {workdir}: no such folder; pass the '
                      '--workdir of a trained run')
    if not path.is_file():
      raise UserError(f'no {CONFIG_FILE} in {workdir} (a run writes it when it '
                      'starts); pass the --workdir of a trained run, or its '
                      '--config as it was trained')
    tree = json.loads(path.read_text())
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # OSError, JSON errors, and Cloud Storage's HTTP and credential errors.
    first = (str(e).strip().splitlines() or [''])[0][:200]
    raise UserError(f'cannot read {path} ({type(e).__name__}: {first}); pass '
                    'the --workdir of a trained run, or its --config') from None
  if not isinstance(tree, dict):
    raise UserError(f'{path} is not a config (a JSON object); pass the run\'s '
                    '--config')
  return ml_collections.ConfigDict(_with_placeholders(tree))


def get_config(workdir):
  """The config of the run in `workdir` (ml_collections' config file API)."""
  if '://' not in workdir:  # gs://bucket/run is a URL, not a local path.
    workdir = os.path.expanduser(workdir)
  return load(workdir)
