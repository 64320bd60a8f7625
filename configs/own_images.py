"""DCGAN on your own images: a folder of .png/.jpg files or an .npz.

    python launch.py --config configs/own_images.py --config.data.path=DIR_OR_NPZ
    python launch.py --config configs/own_images.py:size=32 --config.data.path=faces/

Folder images are center-cropped and resized to `size` (28, 32 or 64;
default 64); an .npz holds an `images` array of N x H x W (x C) with H = W =
size. Size 28 uses the seeds' MNIST network (model dcgan_mnist), 32 and 64
the DCGAN of Radford et al.; every size trains with that paper's recipe
(Adam(2e-4, b1=0.5), batch 128, alternating updates).
Arguments (`:key=value,...`):
  size: 28 | 32 | 64; default 64
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
Settings: model=dcgan, data.name=images, data.image_size=64, batch_size=128,
  z_dim=100, g.optimizer.lr=0.0002, g.optimizer.b1=0.5
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, size='64', loss='non_saturating')
  size = int(default.choice(args, 'size', ('28', '32', '64')))
  if size == 28:
    model, g_fields, d_fields = 'dcgan_mnist', dict(upsample='transpose'), {}
  else:
    model, g_fields, d_fields = 'dcgan', dict(channels=64), dict(channels=64)
  g_fields['conv_transpose'] = image_base.CONV_TRANSPOSE
  config = image_base.image_config(
      data='images', model=model, loss=args['loss'], z_dim=100,
      batch_size=128, num_steps=20_000, lr=2e-4, b1=0.5, b2=0.999,
      g_fields=g_fields, d_fields=d_fields)
  config.data.image_size = size
  return config
