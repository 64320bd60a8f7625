"""Trains the classifier whose features the `clf` metrics use (no download).

    python tools/train_classifier.py --config configs/mnist_classifier.py:data=images \
        --config.data.path=digits.npz --workdir runs/digits_classifier

The labelled data comes through gan_jax.data, so the TFDS datasets (mnist,
fashion_mnist, cifar10) and your own .npz or class folders all work. One pass
of the training split is read into host memory (MNIST/CIFAR-sized data), in
batches of `batch_size` (the last n mod batch_size examples of the shuffled
order are left out). The model (gan_jax/metrics/classifier.py) is trained with
Adam on softmax cross-entropy for `num_epochs`, then its accuracy is measured
on `eval_split` or on a held-out `holdout_fraction` of the training pass.
WORKDIR gets the checkpoint (`params/` and `classifier.json`, which records
the accuracy); an earlier one there is replaced. WORKDIR may be a `gs://`
URL. Pass WORKDIR as --config.eval.classifier_checkpoint of launch.py.

Single device: the jitted steps run on jax's default device (the others,
if any, stay idle); the network is small enough for that.
"""
import functools
import logging as logging_lib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import optax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gan_jax import cli
from gan_jax import data
from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError
from gan_jax.metrics import classifier
# pylint: enable=g-import-not-at-top,wrong-import-position


def _define_flags():
  # Here, not at import: tests import `train` next to launch.py's flags.
  config = config_flags.DEFINE_config_file(
      'config', None, 'Path to a config file, with an optional :argument.',
      lock_config=True)
  workdir = flags.DEFINE_string(
      'workdir', None, 'Where the classifier checkpoint goes.')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir


def read_split(config, split):
  """One pass of `split`: (images float32 [n, H, W, C], labels int32 [n])."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.split = split
  batches = data.build(config, config.batch_size)
  try:
    num = batches.get_state()['num_examples'] // config.batch_size
    parts = [next(batches) for _ in range(num)]
  finally:
    batches.close()
  return (np.concatenate([p[0] for p in parts]),
          np.concatenate([p[1] for p in parts]))


def _check(config):
  if not config.get('num_classes'):
    raise UserError('the classifier needs labelled data: set '
                    '--config.num_classes=N (N classes in the labels)')
  if config.data.name == 'images' and config.eval_split:
    raise UserError("own images ('images') have no splits: pass "
                    "--config.eval_split='' to hold out "
                    'config.holdout_fraction of them')
  if not config.eval_split and not 0 < config.holdout_fraction < 1:
    raise UserError(f'holdout_fraction is {config.holdout_fraction}; pass '
                    '--config.holdout_fraction=F with 0 < F < 1')


def train(config, workdir):
  """Trains, evaluates and saves the classifier; returns its JSON record."""
  _check(config)
  workdir_lib.check_writable(workdir)  # Before training, not after it.
  images, labels = read_split(config, config.data.split)
  if config.eval_split:
    test_images, test_labels = read_split(config, config.eval_split)
    heldout = config.eval_split
  else:  # The pass is shuffled: its tail is a random held-out set.
    num_test = max(1, int(round(len(images) * config.holdout_fraction)))
    test_images, test_labels = images[-num_test:], labels[-num_test:]
    images, labels = images[:-num_test], labels[:-num_test]
    heldout = f'held-out {config.holdout_fraction:g} of {config.data.split}'
  batch = config.batch_size
  steps_per_epoch = len(images) // batch
  if not steps_per_epoch:
    raise UserError(f'{len(images)} training images are fewer than one batch '
                    f'of {batch}; lower --config.batch_size')
  spec = classifier.Spec(
      image_shape=tuple(images.shape[1:]), num_classes=config.num_classes,
      widths=tuple(config.classifier.widths),
      features=config.classifier.features)
  model = spec.model()
  tx = optax.adam(config.lr)
  params = spec.init(config.seed)
  opt_state = tx.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, x, y):
    def loss_fn(p):
      _, logits = model.apply({'params': p}, x)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (logits.argmax(-1) == y).mean()
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, acc

  @jax.jit
  def predict(params, x):
    return model.apply({'params': params}, x)[1].argmax(-1)

  rng = np.random.default_rng(config.seed)
  num_steps = config.num_epochs * steps_per_epoch
  logging.info('%d training images %s, %d held out (%s); %d steps',
               len(images), images.shape[1:], len(test_images), heldout,
               num_steps)
  start = time.time()
  for epoch in range(config.num_epochs):
    order = rng.permutation(len(images))
    for k in range(steps_per_epoch):
      idx = order[k * batch:(k + 1) * batch]
      params, opt_state, loss, acc = train_step(params, opt_state,
                                                images[idx], labels[idx])
      step = epoch * steps_per_epoch + k + 1
      if step % config.log_every == 0 or step == num_steps:
        logging.info('step %d/%d  loss %.4f  batch accuracy %.3f', step,
                     num_steps, float(loss), float(acc))
  correct = 0
  for lo in range(0, len(test_images), batch):
    x = test_images[lo:lo + batch]
    pad = np.zeros((batch - len(x), *x.shape[1:]), x.dtype)
    pred = np.asarray(predict(params, np.concatenate([x, pad])))[:len(x)]
    correct += int(np.sum(pred == test_labels[lo:lo + batch]))
  accuracy = correct / len(test_images)
  info = {'dataset': config.data.name, 'data_path': config.data.path or '',
          'train_split': config.data.split, 'heldout': heldout,
          'num_train': len(images), 'num_heldout': len(test_images),
          'heldout_accuracy': accuracy, 'steps': num_steps,
          'seed': config.seed, 'train_seconds': round(time.time() - start, 1)}
  classifier.save(workdir, spec, params, info)
  logging.info('held-out accuracy %.4f on %d images (%s); saved to %s',
               accuracy, len(test_images), heldout,
               workdir_lib.absolute(workdir))
  return {**info, 'image_shape': list(spec.image_shape)}


class _OnlyOurs(logging_lib.Filter):
  """INFO lines from here and gan_jax; libraries (orbax) only warn and worse."""

  def filter(self, record):
    return (record.levelno >= logging_lib.WARNING or 'gan_jax' in
            record.pathname or record.pathname == __file__)


def main(config_flag, workdir_flag, argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_OnlyOurs())
  try:
    train(cli.config(config_flag), workdir_flag.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(functools.partial(main, *_define_flags()),
          flags_parser=cli.parse_flags)
