"""SNGAN (Miyato et al. 2018): the ResNet GAN for CIFAR-10 with spectral norm.

    python launch.py --config configs/cifar10_sngan.py --config.data.data_dir=DIR

As that paper trains it: hinge loss, 5 D updates per G update, Adam(2e-4,
b1=0, b2=0.9) decayed linearly to 0, batch 64, z of 128, 50,000 G updates,
widths 256 (G) and 128 (D). CIFAR-10 must be prepared once as array_record
(gan_jax/data/tfds_data.py says how).
Arguments (`:key=value,...`):
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default hinge
Settings: model=sngan_resnet, loss.name=hinge, d_steps=5, batch_size=64,
  z_dim=128, g.optimizer.lr=0.0002, g.optimizer.b1=0.0, g.optimizer.b2=0.9,
  g.optimizer.schedule=linear, g.channels=256, d.channels=128
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, loss='hinge')
  config = image_base.image_config(
      data='cifar10', model='sngan_resnet', loss=args['loss'], z_dim=128,
      batch_size=64, num_steps=50_000, lr=2e-4, b1=0.0, b2=0.9,
      schedule='linear', d_steps=5, g_fields=dict(channels=256),
      d_fields=dict(channels=128))
  return config
