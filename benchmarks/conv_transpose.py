"""Times the transposed convolutions of the DCGAN generators by implementation.

    python benchmarks/conv_transpose.py --batch=256 --out=ct.json

For each 'SAME' transposed convolution of dcgan_mnist's G (5x5) and of
dcgan's G at 32x32 with ch=64 (4x4), the forward pass and the gradient of a
scalar loss with respect to input and kernel, by `lax.conv_transpose` ('xla')
and by phases ('phases', gan_jax/models/conv_transpose.py). Each number is the
fastest of `--repeats` jitted calls after one warm-up call (which compiles).
It prints a markdown table and writes the numbers as JSON to `--out`.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gan_jax import cli  # pylint: disable=g-import-not-at-top
from gan_jax.models import conv_transpose  # pylint: disable=g-import-not-at-top

flags.DEFINE_integer('batch', 256, 'Batch size.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per case; the fastest counts.')
flags.DEFINE_string('out', '', 'JSON output path ("" for none).')
FLAGS = flags.FLAGS

# (model, input size, in channels, out channels, kernel, stride)
LAYERS = [('dcgan_mnist', 7, 256, 128, 5, 1), ('dcgan_mnist', 7, 128, 64, 5, 2),
          ('dcgan_mnist', 14, 64, 1, 5, 2), ('dcgan 32', 4, 256, 128, 4, 2),
          ('dcgan 32', 8, 128, 64, 4, 2), ('dcgan 32', 16, 64, 3, 4, 2)]
IMPLS = {
    'xla': lambda x, w, s: lax.conv_transpose(x, w, (s, s), 'SAME'),
    'phases': conv_transpose.conv_transpose_phases,
}


def best_ms(fn, *args):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * min(times)


def main(_):
  if FLAGS.out:
    cli.check_out(FLAGS.out)
  rows = []
  for model, size, c_in, c_out, k, s in LAYERS:
    x = jax.random.normal(jax.random.PRNGKey(0), (FLAGS.batch, size, size, c_in))
    w = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (k, k, c_in, c_out))
    row = dict(model=model, layer=f'{size}x{size}x{c_in} -> {c_out}, {k}x{k} '
               f'stride {s}')
    for name, f in IMPLS.items():
      loss = lambda x, w, f=f: jnp.sum(f(x, w, s) ** 2)  # pylint: disable=cell-var-from-loop
      row[f'{name}_fwd_ms'] = best_ms(lambda x, w, f=f: f(x, w, s), x, w)  # pylint: disable=cell-var-from-loop
      row[f'{name}_grad_ms'] = best_ms(jax.grad(loss, (0, 1)), x, w)
    rows.append(row)
    print(row, flush=True)
  print(f'\nbatch {FLAGS.batch} on {jax.devices()[0].device_kind}, '
        f'jax {jax.__version__}:')
  print('| model | layer | fwd ms, xla | fwd ms, phases | grad ms, xla '
        '| grad ms, phases |\n|---|---|---:|---:|---:|---:|')
  for r in rows:
    print(f"| {r['model']} | {r['layer']} | {r['xla_fwd_ms']:.1f} | "
          f"{r['phases_fwd_ms']:.1f} | {r['xla_grad_ms']:.1f} | "
          f"{r['phases_grad_ms']:.1f} |")
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      json.dump(dict(command=' '.join(sys.argv), batch=FLAGS.batch,
                     device=jax.devices()[0].device_kind,
                     jax=jax.__version__, rows=rows), f, indent=2)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
