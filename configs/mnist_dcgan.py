"""The seeds' DCGAN on MNIST: the TensorFlow DCGAN tutorial's network and step.

    python launch.py --config configs/mnist_dcgan.py --config.data.data_dir=DIR
    python launch.py --config configs/mnist_dcgan.py:data=fashion_mnist
    python launch.py --config configs/mnist_dcgan.py:data=images \
        --config.data.path=digits.npz

Non-saturating BCE from logits, Adam(1e-4) for each network (Keras' betas),
batch 256, 50 epochs of the 60,000 training images (11,700 steps), and the
tutorial's simultaneous step: both gradients from one forward pass
(--config.updates=alternating updates D first, then G through the new D).
MNIST must be prepared once as array_record (gan_jax/data/tfds_data.py says
how); `images` takes your own 28x28 images (a folder or an .npz).
A loss whose recipe takes several D steps updates alternately.
Arguments (`:key=value,...`):
  data: mnist | fashion_mnist | images; default mnist
  loss: any gan_jax.losses name, with its recipe (configs/default.py
    LOSS_RECIPES); default non_saturating
Settings: model=dcgan_mnist, batch_size=256, num_steps=11700, z_dim=100,
  d_steps=1, g.optimizer.lr=0.0001, g.optimizer.b1=0.9, d.optimizer.lr=0.0001,
  d.optimizer.b1=0.9, g.upsample=transpose, updates=simultaneous
"""
from configs import default
from configs import image_base


def get_config(arg=None):
  args = default.parse_arg(arg, data='mnist', loss='non_saturating')
  default.choice(args, 'data', ('mnist', 'fashion_mnist', 'images'))
  config = image_base.image_config(
      data=args['data'], model='dcgan_mnist', loss=args['loss'], z_dim=100,
      batch_size=256, num_steps=11_700, lr=1e-4, b1=0.9, b2=0.999,
      # 'transpose' is the tutorial's (computed by phases on CPU, see
      # image_base.CONV_TRANSPOSE); 'resize_conv' has the same shapes and
      # parameter count (gan_jax/models/dcgan_mnist.py).
      g_fields=dict(upsample='transpose',
                    conv_transpose=image_base.CONV_TRANSPOSE))
  if args['data'] == 'images':
    config.data.image_size = 28
  # The tutorial's step takes one D update per G update.
  config.updates = 'simultaneous' if config.d_steps == 1 else 'alternating'
  return config
