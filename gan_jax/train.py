"""The training loop: `train_and_evaluate(config, workdir)`.

Builds the data, models and state, restores the latest checkpoint in `workdir`
if there is one, then runs the pmapped train step over all local devices,
logging every `config.log_every`, evaluating every `config.eval_every` and
checkpointing every `config.checkpoint.every` steps and at the end.
"""
import collections
import json
import os
import time

import flax
import jax
import numpy as np
from absl import logging
from flax.jax_utils import unreplicate

from gan_jax import checkpoint
from gan_jax import checks
from gan_jax import data
from gan_jax import evaluate
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from gan_jax import writers
from gan_jax.errors import UserError


def device_batches(iterator, d_steps, devices):
  """Yields (batch on the devices, iterator state after it).

  A batch is `d_steps` consecutive host batches, laid out as
  `[devices, d_steps, per-device batch, ...]` so that device `i` holds the
  `i`-th slice of each.
  """
  n = len(devices)
  sharding = jax.NamedSharding(jax.sharding.Mesh(np.array(devices), ('d',)),
                               jax.P('d'))
  while True:
    host = np.stack([next(iterator) for _ in range(d_steps)])
    host = host.reshape(d_steps, n, host.shape[1] // n, *host.shape[2:])
    host = np.swapaxes(host, 0, 1)
    yield jax.device_put(host, sharding), iterator.get_state()


def prefetch(iterator, size=2):
  """Keeps `size` items in flight so host-to-device copies overlap the step."""
  queue = collections.deque()
  for item in iterator:
    queue.append(item)
    if len(queue) >= size:
      yield queue.popleft()


def _prepare_workdir(workdir, config):
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, '.write_test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable ({e.strerror}); pass '
                    'a --workdir you can write to') from None
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True)


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`; returns the final GANState."""
  checks.validate(config)
  devices = jax.local_devices()
  if config.batch_size % jax.device_count():
    raise UserError(
        f'batch_size {config.batch_size} does not divide over '
        f'{jax.device_count()} devices; use a multiple of {jax.device_count()} '
        '(--config.batch_size=N)')
  _prepare_workdir(workdir, config)

  host_batch = config.batch_size // jax.process_count()
  data_iter = data.build(config, host_batch, jax.process_index(),
                         jax.process_count())
  generator, discriminator = models.build(config, data_iter.example_shape)
  state = state_lib.create(config, generator, discriminator,
                           data_iter.example_shape)

  ckpt = checkpoint.Checkpointer(workdir, config)
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state, _ = ckpt.restore(latest, state)
    data_iter.set_state(data_state)
    logging.info('Resumed from the checkpoint at step %d in %s.', latest,
                 ckpt.directory)
  start = int(state.step)

  p_step = jax.pmap(step_lib.make_train_step(config), axis_name=step_lib.AXIS,
                    donate_argnums=(0,))
  generate = step_lib.make_generate(config)
  state = flax.jax_utils.replicate(state, devices)
  batches = prefetch(device_batches(data_iter, config.d_steps, devices))
  writer = writers.MetricWriter(workdir)

  t0, t_step = time.time(), start
  metrics = None
  for step in range(start + 1, config.num_steps + 1):
    batch, data_state = next(batches)
    state, metrics = p_step(state, batch)
    last = step == config.num_steps
    if step % config.log_every == 0 or last:
      scalars = jax.device_get(unreplicate(metrics))
      bad = [k for k, v in scalars.items() if not np.isfinite(v)]
      if bad:
        raise UserError(f'non-finite {", ".join(bad)} at step {step}; lower the '
                        'learning rate or add a penalty. The last checkpoint is '
                        f'left in {ckpt.directory}')
      now = time.time()
      sps = (step - t_step) / max(now - t0, 1e-9)
      t0, t_step = now, step
      writer.write_scalars(step, {**scalars, 'steps_per_sec': sps})
      eta = (config.num_steps - step) / max(sps, 1e-9)
      logging.info('step %d/%d  d_loss %.4f  g_loss %.4f  %.1f steps/s  ETA %s',
                   step, config.num_steps, scalars['d_loss'], scalars['g_loss'],
                   sps, time.strftime('%H:%M:%S', time.gmtime(eta)))
    if step % config.eval_every == 0 or last:
      results = evaluate.evaluate(config, generate, unreplicate(state.g), step,
                                  workdir, writer)
      if results:
        writer.write_scalars(step, results)
        logging.info('eval step %d  %s', step, '  '.join(
            f'{k} {v:.4g}' for k, v in results.items()))
    if step % config.checkpoint.every == 0 or last:
      ckpt.save(step, unreplicate(state), data_state, config)

  ckpt.wait()
  ckpt.close()
  writer.close()
  return unreplicate(state)
