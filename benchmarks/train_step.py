"""Times gan_jax's full train iteration for a config at several batch sizes.

    python benchmarks/train_step.py --config configs/mnist_dcgan.py \
        --batch_sizes=64,256,1024 --out=mnist_f32.json
    python benchmarks/train_step.py --config configs/mnist_dcgan.py \
        --config.dtype=bfloat16 --batch_sizes=64,256,1024 --out=mnist_bf16.json

One iteration is what `gan_jax.train` calls a step: `config.d_steps` D updates
then one G update, optimizer updates included. The benchmark runs the project's
own code path: `state.create`, then `step.make_multi_step` under
`jax.pmap(..., axis_name=step.AXIS, donate_argnums=(0,))` over all local
devices, called with `config.steps_per_call` iterations per call exactly as
the train loop does (`--config.steps_per_call=N` changes it). The batches are
synthetic, uniform in [-1, 1] and already on the devices (two sets, used in
turn), so data loading and the host-to-device copy are NOT timed; nor are
logging, evaluation or checkpoints.

Per batch size it reports:
  ms_per_iter: the median over `--repeats` of (wall time of `--iterations`
      iterations, dispatched back to back and ended by `block_until_ready`) /
      iterations, after `--warmup_calls` untimed calls.
  images_per_s: batch * iterations/s, the images G is trained on (the PyTorch
      peer's convention). real_images_per_s counts the real images D sees:
      d_steps * batch per iteration (the same when d_steps is 1).
  compile_s: tracing, lowering and XLA compilation: the wall time of
      `p_step.lower(...)` (and of its `.compile()` with --check_dtypes, which
      the first call then reuses) plus the first call's less one steady
      call's. compile2_s: the same for the second call, which compiles again
      when the state the first call returns is sharded otherwise than the
      one it was given (--replicate=flax: `flax.jax_utils.replicate`, as
      gan_jax.train did before); about 0 when it is not (--replicate=axis_mesh,
      the default, as gan_jax.train does). xla_compiles_s lists the
      seconds of each XLA compilation JAX reports, by phase (ahead of time,
      first call, second call, timed calls: the last should be empty), which
      does not depend on the timing noise of a busy machine.
  flops_per_iter, tflops: 2 * multiply-adds of the convolutions and matrix
      products of one iteration (counted on the jaxpr after dead-code
      elimination, scans multiplied by their length, the zeros of input
      dilation and padding not counted: what XLA's HloCostAnalysis counts for
      those ops), and that over the measured time. Element-wise work is not
      counted. xla_flops_per_call is XLA's own `cost_analysis()['flops']` of
      the lowered call, which counts each loop body once whatever its trip
      count; it is kept as a cross-check, not used for TFLOP/s.
With `--check_dtypes` (default), the first batch size is also compiled ahead
of time to count the dtypes of the convolutions and matrix products in the
optimized HLO (`hlo_dtypes`), and the state's floating-point leaves are listed
by dtype (`state_dtypes`), to check mixed precision.

--flops_only counts without compiling or timing.

It prints a markdown table and writes the numbers, the versions and the device
as JSON to `--out`.
"""
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  # For gan_jax, and for the config files, which import configs.default.
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import jaxlib
from ml_collections import config_flags
import numpy as np
import optax

from benchmarks import bench_util
from gan_jax import cli
from gan_jax import models
from gan_jax import nonfinite
from gan_jax import state as state_lib
from gan_jax import step as step_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, with an optional :argument.',
    lock_config=True)
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '256', '1024'],
                                 'Global batch sizes to time.')
_ITERATIONS = flags.DEFINE_integer(
    'iterations', 200, 'Iterations per timed repeat (rounded up to whole '
    'calls of steps_per_call iterations).')
_REPEATS = flags.DEFINE_integer('repeats', 5,
                                'Timed repeats; the median counts.')
_WARMUP = flags.DEFINE_integer(
    'warmup_calls', 2, 'Untimed calls after the first two (compiling) ones.')
_CHECK_DTYPES = flags.DEFINE_bool(
    'check_dtypes', True, 'Count conv/dot dtypes in the optimized HLO of the '
    'first batch size (one extra ahead-of-time compilation).')
_EXAMPLE_SHAPE = flags.DEFINE_list(
    'example_shape', None, 'One example\'s shape, e.g. 28,28,1 (default: from '
    'config.data).')
_OUT = flags.DEFINE_string('out', None, 'Where to write the JSON results.')
_FLOPS_ONLY = flags.DEFINE_bool(
    'flops_only', False, 'Only count FLOPs and dtypes on the jaxpr: no '
    'compilation, no timing.')
_REPLICATE = flags.DEFINE_enum(
    'replicate', 'axis_mesh', ['flax', 'axis_mesh'],
    'How the state goes onto the devices: axis_mesh (device_put onto a mesh '
    'whose axis is named step.AXIS, as the pmap returns it and as '
    'gan_jax.train does) or flax (flax.jax_utils.replicate, gan_jax.train\'s '
    'earlier way, which compiles the step a second time).')

_SHAPE = [None]  # --example_shape, parsed.
# Set from argv before absl parses it (_take_dtype): config.dtype may not exist
# in an older config, and then `--config.dtype=...` would be rejected.
_DTYPE_OVERRIDE = []
_ARGV = []  # The command line, for the JSON.

# XLA compilations as JAX reports them: (seconds, function name), appended by
# the listener that main() registers.
_COMPILES = []


def _on_duration(event, duration, **kwargs):
  if event == '/jax/core/compile/backend_compile_duration':
    _COMPILES.append((duration, kwargs.get('fun_name')))


def _compiles_since(mark):
  """Seconds of each XLA compilation since `len(_COMPILES)` was `mark`."""
  return [round(d, 3) for d, _ in _COMPILES[mark:]]


def time_batch_size(config, batch_size, devices, check_dtypes):
  """Builds the state and pmapped multi-step for `batch_size` and times it."""
  config.unlock()
  config.batch_size = batch_size
  config.lock()
  n = len(devices)
  if batch_size % n:
    raise ValueError(f'batch {batch_size} does not divide over {n} devices')
  shape = _SHAPE[0] or bench_util.example_shape(config)
  generator, discriminator = models.build(config, shape)
  state = state_lib.create(config, generator, discriminator, shape)
  result = dict(batch=batch_size, dtype=config.get('dtype', 'float32'),
                replicate=_REPLICATE.value,
                d_steps=config.d_steps, steps_per_call=config.steps_per_call,
                example_shape=list(shape))
  if check_dtypes:
    result['state_dtypes'] = bench_util.state_dtypes(state)
  k = config.steps_per_call
  multi_step = step_lib.make_multi_step(config)
  local = (k, config.d_steps, batch_size // n, *shape)
  flops, jaxpr_ops = bench_util.count_flops(
      multi_step, state, jax.ShapeDtypeStruct(local, jnp.float32))
  result['flops_per_iter'] = flops / k
  result['jaxpr_conv_dot_dtypes'] = jaxpr_ops
  if _FLOPS_ONLY.value:
    return result

  # As train.py: the replicated state, donated, and [devices, k, ...] batches.
  if _REPLICATE.value == 'flax':
    state = flax.jax_utils.replicate(state, devices)
  else:
    axis_mesh = jax.sharding.Mesh(np.array(devices), (step_lib.AXIS,))
    state = jax.device_put(
        jax.tree.map(lambda x: jnp.stack([x] * n), state),
        jax.NamedSharding(axis_mesh, jax.P(step_lib.AXIS)))
  p_step = jax.pmap(multi_step, axis_name=step_lib.AXIS, donate_argnums=(0,))
  mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  sharding = jax.NamedSharding(mesh, jax.P('devices'))
  rng = np.random.default_rng(batch_size)
  batches = [jax.device_put(rng.uniform(-1, 1, (n, *local)).astype(np.float32),
                            sharding) for _ in range(2)]
  t, mark = time.perf_counter(), len(_COMPILES)
  lowered = p_step.lower(state, batches[0])
  try:
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    result['xla_flops_per_call'] = float(cost['flops'])
  except Exception:  # pylint: disable=broad-except
    result['xla_flops_per_call'] = None
  if check_dtypes:
    text = lowered.compile().as_text()
    result['hlo_dtypes'] = bench_util.hlo_dtypes(text)
  # The first call below reuses this compilation when there was one.
  ahead_s = time.perf_counter() - t
  compiles = {'ahead': _compiles_since(mark)}

  def call(state, i):
    return p_step(state, batches[i % 2])

  # The first two calls are timed apart: the second compiles again when the
  # state that the first returns is laid out otherwise than the replicated one
  # it was given (see compile2_s).
  first_calls = []
  for i, phase in enumerate(('first_call', 'second_call')):
    t, mark = time.perf_counter(), len(_COMPILES)
    state, metrics = call(state, i)
    jax.block_until_ready((state, metrics))
    first_calls.append(time.perf_counter() - t)
    compiles[phase] = _compiles_since(mark)
  for i in range(_WARMUP.value):
    state, metrics = call(state, i)
  jax.block_until_ready((state, metrics))
  calls = max(1, -(-_ITERATIONS.value // k))
  times, mark = [], len(_COMPILES)
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    for i in range(calls):
      state, metrics = call(state, i)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - t) / (calls * k))
  per_iter = statistics.median(times)
  compiles['timed'] = _compiles_since(mark)  # Should be none.
  metrics = jax.device_get(flax.jax_utils.unreplicate(metrics))
  result.update(
      ms_per_iter=per_iter * 1e3,
      ms_per_iter_min=min(times) * 1e3,
      ms_per_iter_max=max(times) * 1e3,
      timed_iterations=calls * k * _REPEATS.value,
      images_per_s=batch_size / per_iter,
      real_images_per_s=batch_size * config.d_steps / per_iter,
      compile_s=ahead_s + max(first_calls[0] - per_iter * k, 0.0),
      compile2_s=max(first_calls[1] - per_iter * k, 0.0),
      xla_compiles_s=compiles,
      tflops=flops / k / per_iter / 1e12,
      finite=nonfinite.decode(metrics['nonfinite']) is None,
      d_loss=float(metrics['d_loss']), g_loss=float(metrics['g_loss']),
      loadavg_after=[round(x, 2) for x in os.getloadavg()])
  return result


def environment(devices):
  """Versions, backend and device, for the JSON."""
  info = dict(jax=jax.__version__, jaxlib=jaxlib.__version__,
              flax=flax.__version__, optax=optax.__version__,
              python=sys.version.split()[0], backend=jax.default_backend(),
              device_kind=devices[0].device_kind, num_devices=len(devices),
              # Other work on the machine skews CPU timings: worth knowing.
              loadavg_at_start=[round(x, 2) for x in os.getloadavg()])
  try:  # E.g. the CUDA and cuDNN versions on a GPU.
    info['platform_version'] = devices[0].client.platform_version
  except AttributeError:
    pass
  return info


def markdown(results):
  lines = ['| batch | dtype | d_steps | steps/call | ms/iter | images/s | '
           'compile s | GFLOP/iter | TFLOP/s |',
           '|---:|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in results:
    lines.append(
        f"| {r['batch']} | {r['dtype']} | {r['d_steps']} | "
        f"{r['steps_per_call']} | {r['ms_per_iter']:.3f} | "
        f"{r['images_per_s']:,.0f} | {r['compile_s']:.1f} | "
        f"{r['flops_per_iter'] / 1e9:.2f} | {r['tflops']:.2f} |")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _OUT.value:
    cli.check_out(_OUT.value)
  config = cli.config(_CONFIG)
  jax.monitoring.register_event_duration_secs_listener(_on_duration)
  if _DTYPE_OVERRIDE or 'dtype' not in config:
    config.unlock()
    config.dtype = (_DTYPE_OVERRIDE or [config.get('dtype', 'float32')])[-1]
    config.lock()
  devices = jax.local_devices()
  try:
    if _EXAMPLE_SHAPE.value:
      _SHAPE[0] = tuple(int(s) for s in _EXAMPLE_SHAPE.value)
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  except ValueError:
    cli.fail('--batch_sizes and --example_shape take whole numbers, e.g. '
             '--batch_sizes=64,256')
  if not batch_sizes or any(b < 1 or b % len(devices) for b in batch_sizes):
    cli.fail(f'--batch_sizes={",".join(_BATCH_SIZES.value)}: give sizes of 1 '
             f'or more that divide over the devices ({len(devices)})')
  env = environment(devices)
  print(json.dumps(env), flush=True)
  results = []
  for i, b in enumerate(batch_sizes):
    r = time_batch_size(config, b, devices, _CHECK_DTYPES.value and i == 0)
    print(json.dumps(r), flush=True)
    results.append(r)
  source = flags.FLAGS['config'].config_filename
  print(f'\n{source} ({config.model}, loss {config.loss.name}) on '
        f'{env["num_devices"]} x {env["device_kind"]} ({env["backend"]}), '
        f'jax {env["jax"]}:')
  if _FLOPS_ONLY.value:
    for r in results:
      print(f"batch {r['batch']}: {r['flops_per_iter'] / 1e9:.2f} GFLOP/iter")
  else:
    print(markdown(results), flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, 'w') as f:
      json.dump(dict(command=' '.join(['benchmarks/train_step.py'] + _ARGV),
                     config=source, model=config.model, loss=config.loss.name,
                     environment=env, results=results), f, indent=2)


def _take_dtype(argv):
  """Removes --config.dtype=X from argv (applied after parsing; see above)."""
  _ARGV.extend(argv[1:])
  kept, i = [], 0
  while i < len(argv):
    a = argv[i]
    if a.startswith('--config.dtype='):
      _DTYPE_OVERRIDE.append(a.split('=', 1)[1])
    elif a == '--config.dtype' and i + 1 < len(argv):
      _DTYPE_OVERRIDE.append(argv[i + 1])
      i += 1
    else:
      kept.append(a)
    i += 1
  return kept


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(_take_dtype(argv)))
