"""Checks what a config's train step computes in, for a target platform.

    python benchmarks/check_dtypes.py --config configs/mnist_dcgan.py \
        --config.dtype=bfloat16 --platform=cuda

Lowers the project's `step.make_multi_step(config)` (one train step per call,
vmapped over a device axis named `step.AXIS` in place of the pmap) to
StableHLO for `--platform` (default cuda; no GPU is needed to lower for one),
then prints, as JSON:
  stablehlo: the convolutions and dot products counted by operand dtypes;
  state: the dtypes of every floating-point leaf of the train state (params,
      optimizer state, BatchNorm / spectral-norm statistics), in and out;
  metrics: the dtypes of the losses and other metrics the step returns.
Gradients have their parameters' dtype (JAX gives a cotangent its primal's
dtype), so float32 parameters mean float32 gradients.
With config.dtype=bfloat16 it exits 1 unless every convolution is bf16 x bf16
and every state leaf and metric is float32 (dot products may be float32: the
step's diversity metric computes in float32 on purpose).

This is the program before XLA's own optimization passes; `train_step.py
--check_dtypes` reads the optimized HLO of the backend it runs on.
"""
import collections
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from benchmarks import bench_util
from gan_jax import cli
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, with an optional :argument.',
    lock_config=True)
_PLATFORM = flags.DEFINE_string('platform', 'cuda',
                                'Platform to lower for: cuda, rocm, tpu, cpu.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Per-device batch to lower with.')

_OP = re.compile(r'stablehlo\.(convolution|dot_general)\b[^\n]*?:\s*'
                 r'\(tensor<([^>]*)>, tensor<([^>]*)>\)')


def stablehlo_dtypes(text):
  counts = collections.Counter()
  for m in _OP.finditer(text):
    a, b = (t.split('x')[-1] for t in m.group(2, 3))
    counts[f'{m.group(1)} {a}x{b}'] += 1
  return dict(counts)


def leaf_dtypes(tree):
  return dict(collections.Counter(
      str(x.dtype) for x in jax.tree.leaves(tree)
      if jnp.issubdtype(x.dtype, jnp.floating)))


def check(config, platform, batch):
  """The dtype report (see the module docstring) of `config` on `platform`."""
  config.unlock()
  config.steps_per_call = 1
  config.lock()
  shape = bench_util.example_shape(config)
  generator, discriminator = models.build(config, shape)
  state = state_lib.create(config, generator, discriminator, shape)
  state = jax.tree.map(lambda x: jnp.asarray(x)[None], state)
  batches = jax.ShapeDtypeStruct((1, 1, config.d_steps, batch, *shape),
                                 jnp.float32)
  step = jax.jit(jax.vmap(step_lib.make_multi_step(config),
                          axis_name=step_lib.AXIS))
  traced = step.trace(state, batches)
  text = traced.lower(lowering_platforms=(platform,)).as_text()
  new_state, metrics = jax.eval_shape(step, state, batches)
  state_in = {f: leaf_dtypes([getattr(state.g, f), getattr(state.d, f)])
              for f in ('params', 'opt_state', 'model_state')}
  state_out = {f: leaf_dtypes([getattr(new_state.g, f),
                               getattr(new_state.d, f)])
               for f in ('params', 'opt_state', 'model_state')}
  return dict(config_dtype=config.get('dtype', 'float32'), platform=platform,
              stablehlo=stablehlo_dtypes(text), state_in=state_in,
              state_out=state_out,
              metrics={k: str(v.dtype) for k, v in metrics.items()})


def problems(report):
  """What is not as mixed precision wants it, for a bfloat16 report."""
  out = []
  for op, n in report['stablehlo'].items():
    if op.startswith('convolution') and op != 'convolution bf16xbf16':
      out.append(f'{n} x {op}')
  for side in ('state_in', 'state_out'):
    for field, dtypes in report[side].items():
      if set(dtypes) - {'float32'}:
        out.append(f'{side}.{field}: {dtypes}')
  for name, dtype in report['metrics'].items():
    if jnp.issubdtype(jnp.dtype(dtype), jnp.floating) and dtype != 'float32':
      out.append(f'metric {name}: {dtype}')
  if not any(op.endswith('bf16xbf16') for op in report['stablehlo']):
    out.append('no bf16 convolution or dot product at all')
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.config(_CONFIG)
  if 'dtype' not in config:
    config.unlock()
    config.dtype = 'float32'
    config.lock()
  report = check(config, _PLATFORM.value, _BATCH.value)
  if report['config_dtype'] == 'bfloat16':
    report['problems'] = problems(report)
  print(json.dumps(report, indent=2))
  return 1 if report.get('problems') else 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
