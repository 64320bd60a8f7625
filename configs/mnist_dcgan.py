"""The seeds' DCGAN on MNIST: the TensorFlow DCGAN tutorial's network and recipe.

    python launch.py --config configs/mnist_dcgan.py --config.data.data_dir=DIR
    python launch.py --config configs/mnist_dcgan.py:data=fashion_mnist
    python launch.py --config configs/mnist_dcgan.py:data=images \
        --config.data.path=digits.npz

Non-saturating BCE from logits, Adam(1e-4) for each network (Keras' betas),
batch 256, 50 epochs of the 60,000 training images (11,700 steps). The
tutorial takes both gradients from one forward pass
(--config.updates=simultaneous does that); the default alternates. MNIST must
be prepared once as array_record (gan_jax/data/tfds_data.py says how); `images`
takes your own 28x28 images (a folder or an .npz).
Arguments: data (mnist, fashion_mnist or images), loss (a gan_jax.losses name).
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, data='mnist', loss='non_saturating')
  config = image_base.image_config(
      data=args['data'], model='dcgan_mnist', loss=args['loss'], z_dim=100,
      batch_size=256, num_steps=11_700, lr=1e-4, b1=0.9, b2=0.999)
  if args['data'] == 'images':
    config.data.image_size = 28
  # 'transpose' is the tutorial's (computed by phases on CPU, see
  # config.g.conv_transpose); 'resize_conv' has the same shapes and parameter
  # count (gan_jax/models/dcgan_mnist.py).
  config.g.upsample = 'transpose'
  return config
