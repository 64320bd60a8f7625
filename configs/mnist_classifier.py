"""A small CNN classifier whose features the `clf` metrics use (no download).

    python tools/train_classifier.py --config configs/mnist_classifier.py \
        --config.data.data_dir=DIR --workdir runs/mnist_classifier
    python tools/train_classifier.py --config configs/mnist_classifier.py:data=images \
        --config.data.path=digits.npz --workdir runs/digits_classifier

then evaluate a GAN on that data with e.g. --config.eval.metrics=fid_clf_10k_train
--config.eval.classifier_checkpoint=runs/digits_classifier (docs/evaluation.md).
Adam(1e-3), batch 128, 5 epochs; accuracy on the test split (TFDS) or on a
held-out 10% of your own labelled images (`images`: an .npz with `labels`, or
one subfolder per class), which have no splits.
Arguments (`:key=value,...`):
  data: mnist | fashion_mnist | cifar10 | images; default mnist
Settings: batch_size=128, num_epochs=5, lr=0.001, num_classes=10
"""
import ml_collections

from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, data='mnist')
  default.choice(args, 'data', ('mnist', 'fashion_mnist', 'cifar10', 'images'))
  config = ml_collections.ConfigDict()
  config.data = image_base.data_config(args['data'])  # Read by gan_jax.data.
  if args['data'] == 'images':
    config.data.image_size = 28  # As configs/mnist_dcgan.py.
  config.num_classes = 10
  config.seed = 0
  config.batch_size = 128
  config.num_epochs = 5
  config.lr = 1e-3
  # Conv widths (the first at stride 1, the rest at stride 2) and the width of
  # the feature layer the metrics use.
  config.classifier = dict(widths=(32, 64, 64), features=128)
  # Accuracy on this split of the data; '' holds out `holdout_fraction` of the
  # training split instead (own images have no splits).
  config.eval_split = '' if args['data'] == 'images' else 'test'
  config.holdout_fraction = 0.1
  config.log_every = 100
  return config
