"""SNGAN (Miyato et al. 2018): the ResNet GAN for CIFAR-10 with spectral norm.

    python launch.py --config configs/cifar10_sngan.py --config.data.data_dir=DIR

As that paper trains it: hinge loss, 5 D updates per G update, Adam(2e-4,
b1=0, b2=0.9) decayed linearly to 0, batch 64, z of 128, 50,000 G updates,
widths 256 (G) and 128 (D). CIFAR-10 must be prepared once as array_record
(gan_jax/data/tfds_data.py says how).
Arguments: loss (a gan_jax.losses name; default hinge).
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, loss='hinge')
  config = image_base.image_config(
      data='cifar10', model='sngan_resnet', loss=args['loss'], z_dim=128,
      batch_size=64, num_steps=50_000, lr=2e-4, b1=0.0, b2=0.9,
      schedule='linear', d_steps=5)
  config.g.channels = 256
  config.d.channels = 128
  return config
