"""DCGAN on your own images: a folder of .png/.jpg files or an .npz.

    python launch.py --config configs/own_images.py --config.data.path=DIR_OR_NPZ
    python launch.py --config configs/own_images.py:size=32 --config.data.path=faces/

Folder images are center-cropped and resized to `size` (28, 32 or 64;
default 64); an .npz holds an `images` array of N x H x W (x C) with H = W =
size. Size 28 uses the seeds' MNIST DCGAN, 32 and 64 the DCGAN of Radford et
al., with that paper's recipe (Adam(2e-4, b1=0.5), batch 128).
Arguments: size (28, 32 or 64), loss (a gan_jax.losses name).
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, size='64', loss='non_saturating')
  size = int(args['size'])
  if size not in (28, 32, 64):
    raise ValueError(f'size must be 28, 32 or 64, got {size}')
  config = image_base.image_config(
      data='images', model='dcgan_mnist' if size == 28 else 'dcgan',
      loss=args['loss'], z_dim=100, batch_size=128, num_steps=20_000,
      lr=2e-4, b1=0.5, b2=0.999)
  config.data.image_size = size
  config.g.channels = config.d.channels = 64
  config.g.upsample = 'transpose'
  return config
