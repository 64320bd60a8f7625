"""A transposed convolution that XLA:CPU runs fast: the same function, by phases.

`nn.ConvTranspose` with stride s computes a convolution over the input dilated
with s - 1 zeros between pixels (`lax.conv_transpose`). XLA:CPU runs that, and
above all its gradients, slowly: for DCGAN-MNIST's 5x5 stride-2 up-convolution
128 -> 64 at batch 256 the gradient took 1.95 s against 0.35 s by phases on a
2-core CPU (benchmarks/README.md, "Found and fixed: transposed convolutions
on XLA:CPU"; benchmarks/results/cpu_conv_transpose_b256.json).

By phases: output pixel (s*p + r) of a 'SAME' stride-s transposed convolution
only meets the kernel taps whose dilated input is not a zero, so each of the
s*s output phases r is an ordinary stride-1 convolution of the *undilated*
input with a small kernel cut from the big one. All phases run as one
convolution with s*s times the output channels, then a depth-to-space
rearrangement interleaves them. The result is `lax.conv_transpose(x, kernel,
(s, s), 'SAME')` up to float rounding, with the same parameter (`kernel`,
[k, k, in, out]), so checkpoints do not depend on the implementation
(tests/test_conv_transpose.py checks values, gradients and parameter trees).

`ConvTranspose` is named like Flax's module, so a model that swaps it in keeps
its parameter tree ('ConvTranspose_0', ...). `impl(config)` reads
`config.g.conv_transpose`: 'xla' (lax.conv_transpose), 'phases', or 'auto'
(the default: phases on CPU, XLA's elsewhere, where cuDNN and the TPU compiler
handle input dilation natively; not measured there).
"""
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gan_jax.errors import UserError

IMPLS = ('auto', 'xla', 'phases')


def impl(config) -> str:
  """'xla' or 'phases', from `config.g.conv_transpose` (default 'auto')."""
  name = config.g.get('conv_transpose', 'auto')
  if name not in IMPLS:
    raise UserError(f'unknown config.g.conv_transpose {name!r}; use one of: '
                    + ', '.join(IMPLS))
  if name == 'auto':
    return 'phases' if jax.default_backend() == 'cpu' else 'xla'
  return name


def phase_taps(k: int, s: int):
  """For a 'SAME' stride-s transposed convolution with a size-k kernel along
  one axis: (taps, lo), where taps[r, j] is the kernel index that output phase
  r applies to input offset lo + j (k: no tap), j < taps.shape[1]."""
  # lax.conv_transpose's 'SAME' padding of the dilated input, before it.
  pad_before = k - 1 if s > k - 1 else math.ceil((k + s - 2) / 2)
  # Output s*p + r reads dilated index s*p + r + t - pad_before under tap t,
  # which is input p + d when r + t - pad_before = s*d.
  offsets = {(r, t): (r + t - pad_before) // s
             for r in range(s) for t in range(k)
             if (r + t - pad_before) % s == 0}
  lo, hi = min(offsets.values()), max(offsets.values())
  taps = np.full((s, hi - lo + 1), k)
  for (r, t), d in offsets.items():
    taps[r, d - lo] = t
  return taps, lo


def conv_transpose_phases(x, kernel, stride: int, precision=None):
  """`lax.conv_transpose(x, kernel, (stride, stride), 'SAME')` for NHWC `x`
  and HWIO `kernel`, computed by phases (see the module docstring)."""
  k_h, k_w, c_in, c_out = kernel.shape
  s = stride
  (taps_h, lo_h), (taps_w, lo_w) = phase_taps(k_h, s), phase_taps(k_w, s)
  m_h, m_w = taps_h.shape[1], taps_w.shape[1]
  # A zero row and column at index k stand for "no tap".
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  small = padded[taps_h[:, None, :, None], taps_w[None, :, None, :]]
  # [s, s, m_h, m_w, in, out] -> [m_h, m_w, in, out * s * s], phases minor.
  small = jnp.transpose(small, (2, 3, 4, 5, 0, 1)).reshape(
      m_h, m_w, c_in, c_out * s * s)
  y = lax.conv_general_dilated(
      x, small, (1, 1),
      ((-lo_h, m_h - 1 + lo_h), (-lo_w, m_w - 1 + lo_w)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision)
  b, h, w, _ = y.shape
  y = y.reshape(b, h, w, c_out, s, s)
  return jnp.transpose(y, (0, 1, 4, 2, 5, 3)).reshape(b, h * s, w * s, c_out)


class ConvTranspose(nn.Module):
  """A 2-D 'SAME' transposed convolution, Flax's parameters and semantics
  (`nn.ConvTranspose(features, kernel_size, strides, padding='SAME')`), by
  `impl`: 'xla' (lax.conv_transpose) or 'phases'."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = 'xla'

  @nn.compact
  def __call__(self, x):
    if self.strides[0] != self.strides[1]:
      raise ValueError(f'unequal strides {self.strides}')
    kernel = self.param('kernel', self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param('bias', self.bias_init, (self.features,), jnp.float32)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    if self.impl == 'phases':
      y = conv_transpose_phases(x, kernel, self.strides[0])
    elif self.impl == 'xla':
      y = lax.conv_transpose(x, kernel, self.strides, 'SAME',
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      raise ValueError(f'unknown impl {self.impl!r}')
    return y if bias is None else y + bias
