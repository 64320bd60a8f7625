"""Class-conditional DCGAN-MNIST: the seeds' DCGAN with labels (one grid row per class).

    python launch.py --config configs/mnist_cgan.py --config.data.data_dir=DIR
    python launch.py --config configs/mnist_cgan.py:data=images,head=acgan \
        --config.data.path=digits.npz

configs/mnist_dcgan.py's networks and recipe, with num_classes=10: G takes
the one-hot label with z (--config.conditional.g=cbn: class-conditional
BatchNorm instead), D ends in a projection head (Miyato & Koyama 2018)
or an ACGAN classifier head (Odena et al. 2017). An .npz needs a `labels`
array (tools/make_digits_npz.py writes one); a folder, one subfolder per class.
Arguments (`:key=value,...`):
  data: mnist | fashion_mnist | images; default mnist
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
  head: projection | acgan; default projection
Settings: model=dcgan_mnist, num_classes=10, batch_size=256, z_dim=100,
  updates=simultaneous, g.optimizer.lr=0.0001, d.optimizer.lr=0.0001
"""
from configs import default
from configs import mnist_dcgan


def get_config(arg=None):
  args = default.parse_arg(arg, data='mnist', loss='non_saturating',
                           head='projection')
  config = mnist_dcgan.get_config(f'data={args["data"]},loss={args["loss"]}')
  config.num_classes = 10
  config.conditional.d = default.choice(args, 'head', ('projection', 'acgan'))
  config.eval.grid_rows = 10  # Ten samples per class, one row per class.
  return config
