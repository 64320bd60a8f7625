"""DCGAN (Radford et al. 2015) on CIFAR-10, 32x32, with the paper's recipe.

    python launch.py --config configs/cifar10_dcgan.py --config.data.data_dir=DIR
    python launch.py --config configs/cifar10_dcgan.py:loss=hinge

Adam(2e-4, b1=0.5), batch 128, z of 100, base width 64. CIFAR-10 must be
prepared once as array_record (gan_jax/data/tfds_data.py says how).
With loss=wgan_gp the critic uses LayerNorm (a gradient penalty refuses
BatchNorm in D).
Arguments (`:key=value,...`):
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
Settings: model=dcgan, data.name=cifar10, batch_size=128, z_dim=100,
  num_steps=50000, g.optimizer.lr=0.0002, g.optimizer.b1=0.5,
  d.optimizer.lr=0.0002, d.optimizer.b1=0.5, g.channels=64, d.channels=64
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, loss='non_saturating')
  config = image_base.image_config(
      data='cifar10', model='dcgan', loss=args['loss'], z_dim=100,
      batch_size=128, num_steps=50_000, lr=2e-4, b1=0.5, b2=0.999,
      g_fields=dict(channels=64, conv_transpose=image_base.CONV_TRANSPOSE),
      d_fields=dict(channels=64))
  return config
