"""The image metrics on real images: the numbers a perfect generator gets.

    python tools/eval_real_images.py --config configs/mnist_dcgan.py:data=images \
        --config.data.path=mnist5k.npz \
        --config.eval.metrics=classes_clf_5k,is_clf_5k \
        --config.eval.classifier_checkpoint=runs/mnist5k_classifier

Evaluates `config.eval.metrics` as launch.py's evaluation does, with real
images of `--split` (default: the config's data split) in the place of the
generator's samples, and prints them as JSON (and writes them to --out).
IS and class coverage of real images are the ceiling a generator's numbers
move towards; FID of a split against its own reference statistics is only
the noise of drawing `num_samples` of them (0 when they are the same
images). Nothing is trained; no workdir.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from gan_jax import cli
from gan_jax import evaluate
from gan_jax import workdir
from gan_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, with an optional :argument.',
    lock_config=True)
_SPLIT = flags.DEFINE_string('split', None,
                             'Split of real images (default: data.split).')
_OUT = flags.DEFINE_string('out', None, 'Also write the JSON here.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = cli.config(_CONFIG)
  split = _SPLIT.value or config.data.get('split', 'train')
  try:
    if _OUT.value:
      workdir.check_out_file(_OUT.value)
    results = evaluate.evaluate_real(config, split)
  except UserError as e:
    sys.exit(f'error: {e}')
  text = json.dumps({'split': split, **results}, indent=2, sort_keys=True)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
