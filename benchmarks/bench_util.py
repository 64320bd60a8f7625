"""Helpers of the benchmarks: example shapes, FLOP counting on the jaxpr,
reading dtypes off compiled HLO and train states, and the commit results are
made at."""
import collections
import os
import re
import subprocess

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from gan_jax import step as step_lib
from gan_jax.data import tfds_data


def example_shape(config):
  """The shape of one example of `config.data`, without reading the data."""
  name = config.data.name
  if name in ('ring8', 'grid25'):
    return (2,)
  size = config.data.get('image_size')
  if name in tfds_data.DATASETS:
    native, crop, default_size = tfds_data.DATASETS[name]
    size = size or default_size or native[0]
    channels = native[2]
  else:  # 'images': your own, of config.data.image_size and channels.
    size, channels = size or 28, config.data.get('channels') or 3
  return (size, size, channels)


# --- FLOP counting on the jaxpr ----------------------------------------------


def _valid_pairs(out_size, in_size, kernel, stride, pad_lo, lhs_dil, rhs_dil):
  """(output position, kernel tap) pairs of one spatial dimension that land on
  a real input element (not padding, not a hole of input dilation)."""
  o = np.arange(out_size)[:, None]
  k = np.arange(kernel)[None, :]
  idx = o * stride + k * rhs_dil - pad_lo
  valid = (idx >= 0) & (idx <= (in_size - 1) * lhs_dil) & (idx % lhs_dil == 0)
  return int(valid.sum())


def _conv_flops(eqn):
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  out = eqn.outvars[0].aval.shape
  p = eqn.params
  dn = p['dimension_numbers']
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  macs = out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]]
  for d in range(len(lhs_spec) - 2):
    macs *= _valid_pairs(out[out_spec[d + 2]], lhs[lhs_spec[d + 2]],
                         rhs[rhs_spec[d + 2]], p['window_strides'][d],
                         p['padding'][d][0], p['lhs_dilation'][d],
                         p['rhs_dilation'][d])
  return 2 * macs


def _dot_flops(eqn):
  lhs = eqn.invars[0].aval.shape
  (contract, _), _ = eqn.params['dimension_numbers']
  return 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(
      np.prod([lhs[d] for d in contract]))


def _sub_jaxprs(value):
  if isinstance(value, jax_core.ClosedJaxpr):
    return [value.jaxpr]
  if isinstance(value, jax_core.Jaxpr):
    return [value]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def jaxpr_flops(jaxpr, dtypes=None, mult=1):
  """FLOPs of the convolutions and dot products of `jaxpr`; tallies in `dtypes`
  (a Counter) the count of such ops by their operands' dtypes."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in ('conv_general_dilated', 'dot_general'):
      total += _conv_flops(eqn) if name == 'conv_general_dilated' else (
          _dot_flops(eqn))
      if dtypes is not None:
        kind = 'conv' if name == 'conv_general_dilated' else 'dot'
        operands = 'x'.join(str(v.aval.dtype) for v in eqn.invars[:2])
        dtypes[f'{kind} {operands}'] += mult
      continue
    inner = mult * eqn.params['length'] if name == 'scan' else mult
    subs = [jaxpr_flops(j, dtypes, inner) for value in eqn.params.values()
            for j in _sub_jaxprs(value)]
    if subs:
      # A scan's body runs `length` times; of a cond's branches, count the
      # largest; anything else (pjit, custom_jvp, remat) runs its body once.
      times = eqn.params['length'] if name == 'scan' else 1
      total += times * (max(subs) if name == 'cond' else sum(subs))
  return total


def count_flops(multi_step, state, batch):
  """FLOPs of one call of `multi_step` on one device's `state` and `batch`,
  after dead-code elimination, and its conv/dot ops tallied by dtype."""
  # pylint: disable=g-import-not-at-top
  from jax._src.interpreters import partial_eval as pe
  closed = jax.make_jaxpr(multi_step, axis_env=[(step_lib.AXIS, 1)])(
      state, batch)
  jaxpr = closed.jaxpr
  try:
    jaxpr, _ = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
  except Exception:  # pylint: disable=broad-except
    pass  # A JAX without this private helper: count without DCE.
  dtypes = collections.Counter()
  return jaxpr_flops(jaxpr, dtypes), dict(dtypes)


_HLO_DEF = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = \(?(\w+)\[')
_HLO_OP = re.compile(
    r' (convolution|dot|custom-call)\(%([\w.\-]+), %([\w.\-]+)')
_HLO_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def hlo_dtypes(hlo_text):
  """Counts convolutions and matrix products of optimized HLO by operand dtypes
  (XLA ops, cuDNN convolution and cuBLAS GEMM custom calls, fused or not)."""
  dtype_of = {}
  for line in hlo_text.splitlines():
    m = _HLO_DEF.match(line)
    if m:
      dtype_of[m.group(1)] = m.group(2)
  counts = collections.Counter()
  for line in hlo_text.splitlines():
    m = _HLO_OP.search(line)
    if not m:
      continue
    op = m.group(1)
    if op == 'custom-call':
      target = _HLO_TARGET.search(line)
      target = target.group(1) if target else ''
      if 'conv' in target:
        op = 'cudnn_conv'
      elif 'gemm' in target or 'matmul' in target:
        op = 'cublas_gemm'
      else:
        continue
    a, b = (dtype_of.get(name, '?') for name in m.group(2, 3))
    counts[f'{op} {a}x{b}'] += 1
  return dict(counts)


def state_dtypes(state):
  """{'params': {dtype: leaves}, 'opt_state': ..., 'model_state': ...} of G and
  D together: all floating-point leaves should be float32."""
  out = {}
  for field in ('params', 'opt_state', 'model_state'):
    counts = collections.Counter()
    for net in (state.g, state.d):
      for leaf in jax.tree.leaves(getattr(net, field)):
        counts[str(jnp.asarray(leaf).dtype)] += 1
    out[field] = dict(counts)
  return out


def git_commit():
  """The git commit of this checkout (+ '-dirty' with local changes to
  tracked files): the code that numbers were made with."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           cwd=root, text=True, capture_output=True).stdout
    return head + ('-dirty' if dirty.strip() else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
