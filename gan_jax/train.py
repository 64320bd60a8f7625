"""The training loop: `train_and_evaluate(config, workdir)`.

Builds the data, models and state, restores the latest checkpoint in `workdir`
if there is one, then runs the pmapped train step over all local devices,
logging every `config.log_every`, evaluating every `config.eval_every` and
checkpointing every `config.checkpoint.every` steps and at the end.
"""
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


class DeviceFeeder:
  """Puts `k` train steps' worth of this host's batches on the local devices.

  A step's batch is `d_steps` consecutive host batches. `next(k)` returns them
  as `[devices, k, d_steps, per-device batch, ...]`, so device `i` holds the
  `i`-th slice of every global batch, together with the iterator's state after
  them (what a checkpoint taken after these steps must store). The copy is
  asynchronous: it overlaps the step already dispatched.
  """

  def __init__(self, iterator, d_steps, devices):
    self.iterator, self.d_steps, self.n = iterator, d_steps, len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
    self.sharding = jax.NamedSharding(mesh, jax.P('devices'))

  def next(self, k):
    host = np.stack([next(self.iterator) for _ in range(k * self.d_steps)])
    b = host.shape[1]
    host = host.reshape(k, self.d_steps, self.n, b // self.n, *host.shape[2:])
    host = np.moveaxis(host, 2, 0)
    return jax.device_put(host, self.sharding), self.iterator.get_state()


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
  logging.info('%d devices (%d on this host, process %d of %d), batch %d per '
               'device', jax.device_count(), len(devices), jax.process_index(),
               jax.process_count(), config.batch_size // jax.device_count())

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

  p_step = jax.pmap(step_lib.make_multi_step(config), axis_name=step_lib.AXIS,
                    donate_argnums=(0,))
  generate = step_lib.make_generate(config)
  state = flax.jax_utils.replicate(state, devices)
  feeder = DeviceFeeder(data_iter, config.d_steps, devices)
  writer = writers.MetricWriter(workdir)
  periods = (config.log_every, config.eval_every, config.checkpoint.every)

  t0, t_step = time.time(), start
  step = start
  while step < config.num_steps:
    # Run up to steps_per_call steps, stopping at the next log/eval/save step.
    k = min([config.steps_per_call, config.num_steps - step]
            + [p - step % p for p in periods])
    batch, data_state = feeder.next(k)
    state, metrics = p_step(state, batch)
    step += k
    last = step == config.num_steps
    if step % config.log_every == 0 or last:
      scalars = jax.device_get(unreplicate(metrics))
      bad = [name for name, v in scalars.items() if not np.isfinite(v)]
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
            f"{name} {v:.4g}" for name, v in results.items()))
    if step % config.checkpoint.every == 0 or last:
      ckpt.save(step, unreplicate(state), data_state, config)

  ckpt.wait()
  ckpt.close()
  writer.close()
  return unreplicate(state)
