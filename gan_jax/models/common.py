"""Pieces shared by the image models: compute dtype, BatchNorm, shapes, resizing."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.errors import UserError
# The step's pmap axis, which BatchNorm names to average its statistics over
# all devices.
from gan_jax.axis import AXIS

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(config):
  """The dtype layers compute in, from `config.dtype` (default float32).

  Parameters stay float32 whatever this is; models cast their outputs (samples,
  logits) back to float32.
  """
  name = config.get('dtype', 'float32')
  if name not in DTYPES:
    raise UserError(f'unknown dtype {name!r}; set config.dtype to one of: '
                    + ', '.join(DTYPES))
  return DTYPES[name]


def batch_norm(train: bool, dtype, momentum: float = 0.9,
               epsilon: float = 1e-5, name=None,
               affine: bool = True) -> nn.BatchNorm:
  """BatchNorm over the last axis, cross-replica when training.

  In training (inside the step's pmap) the batch statistics are averaged over
  all devices of axis `AXIS`, so the layer sees the global batch whatever the
  device count; in evaluation (outside pmap) the running averages are used and
  no axis is named. `momentum` is the running averages' decay (Keras' and
  Flax's convention; PyTorch's momentum 0.1 is 0.9 here). `affine=False`:
  no learned scale and shift (a conditional BatchNorm brings its own).
  """
  return nn.BatchNorm(use_running_average=not train,
                      axis_name=AXIS if train else None, momentum=momentum,
                      epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
                      use_scale=affine, use_bias=affine, name=name)


def norm_name(config, net: str, model: str, norms, default: str) -> str:
  """`config.{net}.norm` checked against `norms`; 'default' (or absent) is
  `default`, the model's published choice."""
  name = config[net].get('norm', 'default')
  name = default if name == 'default' else name
  if name not in norms:
    what = {'g': 'generator', 'd': 'discriminator'}[net]
    raise UserError(f'unknown norm {name!r} for the {model} {what}; set '
                    f'config.{net}.norm to one of: ' + ', '.join(norms))
  return name


def square_image(example_shape: Sequence[int], sizes: Sequence[int],
                 model: str) -> tuple[int, int]:
  """(size, channels) of a square [size, size, channels] example.

  Raises UserError unless the example is one of the `sizes` the model supports.
  """
  shape = tuple(example_shape)
  if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in sizes:
    raise UserError(
        f'model {model!r} takes square images of size '
        + ' or '.join(f'{s}x{s}' for s in sizes)
        + f' (example shape [H, W, C]), but the data has examples of shape '
        f'{list(shape)}; pick a dataset of that size or another config.model')
  return shape[0], shape[2]


def upsample_nearest(x, factor: int = 2):
  """Nearest-neighbour upsampling of [B, H, W, C] by an integer factor."""
  if factor == 1:
    return x
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
  return x.reshape(b, h * factor, w * factor, c)


def avg_pool2(x):
  """2x2 average pooling with stride 2 of [B, H, W, C]."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))
