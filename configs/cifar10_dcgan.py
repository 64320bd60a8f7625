"""DCGAN (Radford et al. 2015) on CIFAR-10, 32x32, with the paper's recipe.

    python launch.py --config configs/cifar10_dcgan.py --config.data.data_dir=DIR
    python launch.py --config configs/cifar10_dcgan.py:loss=hinge

Adam(2e-4, b1=0.5), batch 128, z of 100, base width 64. CIFAR-10 must be
prepared once as array_record (gan_jax/data/tfds_data.py says how).
Arguments: loss (a gan_jax.losses name).
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, loss='non_saturating')
  config = image_base.image_config(
      data='cifar10', model='dcgan', loss=args['loss'], z_dim=100,
      batch_size=128, num_steps=50_000, lr=2e-4, b1=0.5, b2=0.999)
  config.g.channels = config.d.channels = 64
  return config
