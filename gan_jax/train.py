"""The training loop: `train_and_evaluate(config, workdir)`.

Builds the data, models and state, restores the latest checkpoint in `workdir`
if there is one, then runs the pmapped train step over all local devices,
logging every `config.log_every`, evaluating every `config.eval_every` and
checkpointing every `config.checkpoint.every` steps and at the end.

A trained run's checkpoints: `evaluate_checkpoint` (--mode=eval) and
`sample_checkpoint` (--mode=sample), restored the same way.
"""
import contextlib
import json
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax.jax_utils import unreplicate

from gan_jax import checkpoint
from gan_jax import checks
from gan_jax import data
from gan_jax import distributed
from gan_jax import diversity
from gan_jax import evaluate
from gan_jax import labels as labels_lib
from gan_jax import models
from gan_jax import nonfinite
from gan_jax import plots
from gan_jax import sampling
from gan_jax import standing_stats
from gan_jax import state as state_lib
from gan_jax import step as step_lib
from gan_jax import workdir as workdir_lib
from gan_jax import writers
from gan_jax.axis import AXIS
from gan_jax.errors import UserError
from gan_jax.metrics import shards


def _device_sharding(devices):
  """Splits a leading axis over `devices`, named like the step's pmap axis.

  The pmapped step returns its outputs with this sharding; giving it inputs
  (state and batches) that already have it keeps the first and later calls
  on one compiled program (flax's `replicate` names the axis otherwise, which
  compiles the whole step a second time).
  """
  mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
  return jax.NamedSharding(mesh, jax.P(AXIS))


def _replicate(tree, devices):
  """One copy of `tree` per device, stacked on a leading axis."""
  return jax.device_put(
      jax.tree.map(lambda x: np.stack([np.asarray(x)] * len(devices)), tree),
      _device_sharding(devices))


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
    self.sharding = _device_sharding(devices)

  def next(self, k):
    batches = [next(self.iterator) for _ in range(k * self.d_steps)]

    def split(*parts):  # One array of the batch (images, or labels).
      host = np.stack(parts)
      b = host.shape[1]
      host = host.reshape(k, self.d_steps, self.n, b // self.n, *host.shape[2:])
      return np.moveaxis(host, 2, 0)

    # A batch is an array, or a tuple (images, labels) when conditional.
    host = jax.tree.map(split, *batches)
    return jax.device_put(host, self.sharding), self.iterator.get_state()


def _check_writable(workdir):
  """Fails early, before anything is written, if `workdir` or its metrics
  history cannot be used."""
  workdir_lib.check_writable(workdir)
  writers.check_history(workdir)


class StopSignal:
  """Turns SIGTERM (preemption) and Ctrl-C into a request to save and stop.

  On several hosts, the hosts must stop at the same step: there orbax's
  preemption sync point (`reached_preemption`) decides, since JAX's
  distributed runtime receives the preemption notice on every host; Ctrl-C
  on any host is turned into such a notice (a SIGTERM to itself).
  """

  def __init__(self):
    self.signal = None
    self._previous = {}
    self._checked = 0  # The last step number checked for preemption.
    if threading.current_thread() is threading.main_thread():
      # On several hosts SIGTERM stays with JAX's preemption notifier (set up
      # by jax.distributed.initialize), which `reached_preemption` relies on.
      signals = ((signal.SIGINT,) if jax.process_count() > 1
                 else (signal.SIGTERM, signal.SIGINT))
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      # A second Ctrl-C: stop without saving, by the handler from before
      # (launch.py's exits at once), else as Python does.
      previous = self._previous.get(signal.SIGINT)
      if callable(previous) and previous is not signal.default_int_handler:
        previous(signum, frame)
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name
    if jax.process_count() > 1:
      # The hosts stop at orbax's preemption sync point, which JAX's notifier
      # of SIGTERM sets on every host: Ctrl-C here is relayed to it.
      os.kill(os.getpid(), signal.SIGTERM)
    logging.warning('%s received: saving a checkpoint and stopping.', self.signal)

  def requested(self, ckpt, step):
    """Whether to save and stop after `step` (on several hosts, all agree)."""
    if jax.process_count() > 1:
      # JAX puts the sync point one past the furthest host's last checked step
      # number (at 1 if the notice came before any check, as in the start-up of
      # a resumed run), so every number from 1 on is checked, in order.
      hits = [ckpt.reached_preemption(s)
              for s in range(self._checked + 1, step + 1)]
      self._checked = step
      return any(hits)
    return self.signal is not None

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _restore(ckpt, config, state, data_iter, set_aside=True, step=None):
  """Restores checkpoint `step`, by default the latest (or
  config.resume_from_step), if any."""
  step = step or config.resume_from_step or ckpt.latest_step()
  if step is None:
    return state
  if step not in ckpt.all_steps():
    raise UserError(f'no checkpoint at step {step} in {ckpt.directory}; it has '
                    f'steps {ckpt.all_steps()}; pass --config.resume_from_step=N '
                    'with one of them')
  saved_config = ckpt.restore_config(step)
  changes = checks.config_changes(saved_config, config.to_dict())
  if changes and not config.allow_config_change:
    raise UserError(
        f'the config differs from the one the run in {ckpt.directory} was '
        f'saved with: {"; ".join(changes)}. Use a new --workdir, or pass '
        '--config.allow_config_change=true to continue anyway')
  warning = checks.schedule_warning(saved_config, config.to_dict())
  if warning and set_aside:  # Training goes on from here (not eval/sample).
    logging.warning('%s.', warning)
  state, data_state = ckpt.restore(step, state)
  data_iter.set_state(data_state)
  if set_aside:
    ckpt.set_aside_after(step)
  logging.info('Resumed from the checkpoint at step %d in %s.', step,
               ckpt.directory)
  return state


def _write_config(config, workdir):
  """WORKDIR/config.json, the resolved config, for people and tools to read
  and for --mode=eval/sample to load. `resume_from_step` is written as 0 (the
  latest): it told this launch where to resume, and kept it would send every
  later launch that reads the file back to that step."""
  path = epath.Path(workdir) / 'config.json'
  tree = config.to_dict()
  tree['resume_from_step'] = 0
  try:
    path.write_text(json.dumps(tree, indent=2, sort_keys=True))
  except OSError as e:
    raise UserError(f'cannot write {path} ({e.strerror or e}); remove what is '
                    'in its place, or use another --workdir') from None


def _data_and_state(config):
  """This host's data iterator and the initial state for its example shape
  (the template a checkpoint is restored into)."""
  data_iter = data.build(config, config.batch_size // jax.process_count(),
                         jax.process_index(), jax.process_count())
  shape = data_iter.example_shape
  evaluate.check_image_shape(config, shape)
  generator, discriminator = models.build(config, shape)
  return data_iter, state_lib.create(config, generator, discriminator, shape)


def _start(config, workdir):
  """Checks the config, locks the workdir, builds the data, models and state
  and restores the latest checkpoint: (data iterator, state, checkpointer).
  Nothing is written to `workdir` before all of that has succeeded but the
  lock, the config's copy and the metrics history cut back to the restored
  step. The caller releases the lock (`workdir_lib.release`)."""
  checks.validate(config)
  evaluate.check(config)
  if config.batch_size % jax.device_count():
    raise UserError(
        f'batch_size {config.batch_size} does not divide over '
        f'{jax.device_count()} devices; use a multiple of {jax.device_count()} '
        '(--config.batch_size=N)')
  _check_writable(workdir)
  workdir_lib.lock(workdir)
  try:
    distributed.check_shared_workdir(workdir)  # Then all hosts see one folder.
    logging.info('%d devices (%d on this host, process %d of %d), batch %d per '
                 'device', jax.device_count(), jax.local_device_count(),
                 jax.process_index(), jax.process_count(),
                 config.batch_size // jax.device_count())
    data_iter, state = _data_and_state(config)
    num_examples = data_iter.get_state().get('num_examples')
    distributed.check_same_data(num_examples)
    evaluate.check_reference_data(config, num_examples)
    workdir_lib.check_writable(epath.Path(workdir) / 'checkpoints')
    ckpt = checkpoint.Checkpointer(workdir, config)
    state = _restore(ckpt, config, state, data_iter)
    writers.trim_history(workdir, int(state.step))
    if jax.process_index() == 0:
      _write_config(config, workdir)
  except BaseException:
    workdir_lib.release(workdir)
    raise
  return data_iter, state, ckpt


def _checked_scalars(step, metrics, first_bad, ckpt):
  """The step's metrics as floats; raises UserError on a non-finite step or
  a run of skipped updates (nothing is saved after a bad step)."""
  bad = nonfinite.decode(unreplicate(first_bad))
  if bad:
    raise UserError(
        f'non-finite loss or gradient in {" and ".join(bad[1])} at step '
        f'{bad[0]}; lower the learning rate, add a penalty, or start a new '
        'run with --config.nonfinite=skip (its optimizer state differs). The '
        f'last good checkpoint (step {ckpt.latest_step()}) is left in '
        f'{ckpt.directory}')
  scalars = {name: float(v) for name, v in
             jax.device_get(unreplicate(metrics)).items() if name != 'nonfinite'}
  if scalars.get('skipped_in_a_row', 0) >= state_lib.MAX_CONSECUTIVE_SKIPS:
    raise UserError(
        f'{state_lib.MAX_CONSECUTIVE_SKIPS} non-finite updates in a row '
        f'up to step {step}; the run cannot recover. Lower the learning '
        f'rate; the last good checkpoint is in {ckpt.directory}')
  return scalars


def _log(config, writer, step, scalars, steps_per_sec):
  writer.write_scalars(step, {**scalars, 'steps_per_sec': steps_per_sec})
  ratio = scalars['diversity_ratio']
  if ratio < config.get('collapse_threshold', 0.):
    logging.warning(
        'Possible mode collapse at step %d: diversity_ratio %.3f is below '
        'config.collapse_threshold %g (generated samples are much closer '
        'together than real ones).', step, ratio, config.collapse_threshold)
  eta = (config.num_steps - step) / max(steps_per_sec, 1e-9)
  logging.info('step %d/%d  d_loss %.4f  g_loss %.4f  %.1f steps/s  ETA %s',
               step, config.num_steps, scalars['d_loss'], scalars['g_loss'],
               steps_per_sec, duration(eta))


def duration(seconds):
  """'H:MM:SS', the hours not wrapped at a day: '26:03:00'."""
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}'


def _evaluate(config, generate, state, step, workdir, writer, networks):
  """The metrics of the sampling generator (EMA when on), logged with
  `networks` (`_networks`)."""
  g_eval, tag = evaluate.generator(config, state)
  results = evaluate.evaluate(config, generate, unreplicate(g_eval), step,
                              workdir, writer, tag)
  if results:
    writer.write_scalars(step, results, networks)
    logging.info('eval step %d  %s', step, '  '.join(
        f'{name} {v:.4g}' for name, v in results.items()))


def _networks(config):
  """{'feature_networks': {space: {'path', 'sha256'}}} of the image metrics,
  for their metrics.jsonl rows (a metric's name says `clf`, not which
  classifier); {} for toy data."""
  networks = evaluate.feature_networks(config)
  return {'feature_networks': networks} if networks else {}


def train_and_evaluate(config, workdir):
  """Trains (or resumes) the run in `workdir`; returns the final GANState."""
  data_iter, state, ckpt = _start(config, workdir)
  # Undone in reverse order, each even if one before it raised: the lock,
  # then the signal handlers, so that a SIGTERM while the last checkpoint is
  # written or during the clean-up is noted, not a kill mid-way.
  with contextlib.ExitStack() as cleanup:
    stop = StopSignal()
    cleanup.callback(stop.restore)
    cleanup.callback(workdir_lib.release, workdir)
    cleanup.callback(ckpt.close)  # Bounded: never hangs the exit.
    writer = writers.MetricWriter(workdir, int(state.step))
    cleanup.callback(writer.close)
    cleanup.callback(ckpt.wait)  # A failed save not yet reported raises here.
    state = _loop(config, workdir, data_iter, state, ckpt, writer, stop)
  return unreplicate(state)


def _loop(config, workdir, data_iter, state, ckpt, writer, stop):
  """Trains from `state` to config.num_steps (or a stop request): logs,
  evaluates and saves at their steps. Returns the replicated state."""
  devices = jax.local_devices()
  steps_per_call = step_lib.steps_per_call(config)
  p_step = jax.pmap(step_lib.make_multi_step(config), axis_name=AXIS,
                    donate_argnums=(0,))
  p_diversity = jax.pmap(diversity.make_diversity(config), axis_name=AXIS)
  generate = sampling.make_generate(config)
  networks = _networks(config)  # Once: eval does not change within a run.
  state = _replicate(state, devices)
  feeder = DeviceFeeder(data_iter, config.d_steps, devices)
  periods = (config.log_every, config.eval_every, config.checkpoint.every)
  step = t_step = int(unreplicate(state.step))
  t0 = time.time()
  first_bad = None  # The first non-finite step since the last check, on device.
  while step < config.num_steps:
    # Run up to steps_per_call steps, stopping at the next log/eval/save step.
    k = min([steps_per_call, config.num_steps - step]
            + [p - step % p for p in periods])
    batch, data_state = feeder.next(k)
    state, metrics = p_step(state, batch)
    first_bad = (metrics['nonfinite'] if first_bad is None
                 else jnp.minimum(first_bad, metrics['nonfinite']))
    step += k
    last = step == config.num_steps
    stopping = stop.requested(ckpt, step)
    save = step % config.checkpoint.every == 0 or last or stopping
    if step % config.log_every == 0 or save:
      ckpt.check()  # A failed background save stops the run here.
      # Fetched at log and save steps only, so the host does not wait on the
      # devices in between; a bad state is never saved.
      scalars = _checked_scalars(step, metrics, first_bad, ckpt)
      first_bad = None
      # On the last real batch of the call, with the updated G.
      scalars['diversity_ratio'] = float(unreplicate(p_diversity(
          state, jax.tree.map(lambda b: b[:, -1, -1], batch))))
      now = time.time()
      _log(config, writer, step, scalars, (step - t_step) / max(now - t0, 1e-9))
      t0, t_step = now, step
    if step % config.eval_every == 0 or last:
      _evaluate(config, generate, state, step, workdir, writer, networks)
    if save:
      ckpt.save(step, unreplicate(state), data_state, config)
    if stopping:
      ckpt.wait()
      logging.warning('Stopped by %s at step %d; the checkpoint is saved. '
                      'Launch again with the same --workdir to continue.',
                      stop.signal or 'preemption', step)
      break
  return state


def _saved_steps(config, workdir, steps, verb):
  """(Checkpointer, the steps to `verb`): `steps` (a list, or 'all' kept),
  by default the latest or `config.resume_from_step`. UserError when the
  workdir has no checkpoints, or not at those steps."""
  if not (epath.Path(workdir) / 'checkpoints').is_dir():
    raise UserError(f'no checkpoints in {workdir} to {verb}; pass the '
                    '--workdir of a run')
  ckpt = checkpoint.Checkpointer(workdir, config)
  kept = ckpt.all_steps()
  if not kept:
    raise UserError(f'no checkpoints in {ckpt.directory} to {verb}; pass '
                    'the --workdir of a run that has saved one')
  if steps == 'all':
    steps = kept
  elif not steps:
    steps = [config.resume_from_step or kept[-1]]
  missing = [s for s in steps if s not in kept]
  if missing:
    raise UserError(f'no checkpoint at step(s) {missing} in {ckpt.directory}; '
                    f'it has steps {kept}')
  return ckpt, steps


def evaluate_checkpoint(config, workdir, steps=None):
  """Evaluates checkpoints of the run in `workdir`: the latest (or
  `config.resume_from_step`), or each of `steps` (a list, or 'all' for every
  checkpoint kept). Returns {step: metrics}; nothing is trained or saved.

  Each step's numbers go to `WORKDIR/eval_step_N.json` (with the path and
  sha256 of each feature network the image metrics used; and to metrics.jsonl
  and TensorBoard); the trained G of a run with EMA (`config.eval.ema=False`)
  writes `eval_step_N_raw.json`.

  It takes no lock: it only reads finished checkpoints, so it may run beside
  the run that trains in `workdir` (one that run deletes meanwhile, by
  `checkpoint.keep`, stops it with the one-line restore error).
  """
  checks.validate(config)
  evaluate.check(config)
  ckpt, steps = _saved_steps(config, workdir, steps, 'evaluate')
  data_iter, template = _data_and_state(config)
  generate = sampling.make_generate(config)
  writers.check_history(workdir)
  networks = _networks(config)
  writer = writers.MetricWriter(workdir)
  evaluated = {}
  try:
    for step in steps:
      state = _restore(ckpt, config, template, data_iter, set_aside=False,
                       step=step)
      g_eval, tag = evaluate.generator(config, state)
      results = evaluate.evaluate(config, generate, g_eval, step, workdir,
                                  writer, tag)
      writer.write_scalars(step, results, networks)
      if jax.process_index() == 0:
        (epath.Path(workdir) / f'eval_step_{step}{tag}.json').write_text(
            json.dumps({'step': step, **results, **networks}, indent=2,
                       sort_keys=True))
      logging.info('eval of step %d  %s', step, '  '.join(
          f'{name} {v:.4g}' for name, v in results.items()))
      evaluated[step] = results
  finally:
    writer.close()
    ckpt.close()
  return evaluated


def _check_memory(num_samples, shape):
  """UserError when `num_samples` float32 samples of `shape` would fill more
  than half of this host's memory (every process holds them all), before
  any is drawn: not an out-of-memory kill at the end."""
  per = 4 * math.prod(shape)
  try:
    have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (AttributeError, OSError, ValueError):  # Not a POSIX host: no check.
    return
  if num_samples * per > have // 2:
    raise UserError(
        f'--num_samples={num_samples}: the samples ({"x".join(map(str, shape))}'
        f' float32 each) would take {num_samples * per / 2**30:,.1f} GiB, '
        f'more than half of this machine\'s {have / 2**30:.0f} GiB; ask for '
        f'at most {have // 2 // per:,}')


def _out_problem(out):
  """Why the .npz `out` (and the PNG beside it) cannot be written, or None."""
  if not str(out).endswith('.npz'):
    return f'--out={out}: give a file name ending in .npz'
  try:
    workdir_lib.check_out_file(out, remote_ok=True)
  except UserError as e:
    return str(e)
  return None


def _sample_grid(config, samples):
  """The first images in a grid of `eval.grid_rows` rows (default 8): as many
  per row, or num_classes per row for a conditional run (one column per class
  when the labels are class balanced; cluster labels, drawn in the clusters'
  proportions, are not one per column)."""
  rows = config.eval.get('grid_rows', 8)
  return plots.image_grid(samples, rows,
                          cols=labels_lib.num_classes(config) or rows)


def sample_checkpoint(config, workdir, num_samples, seed=0, out=None):
  """Writes `num_samples` samples of a checkpoint of the run in `workdir`
  (the latest, or `config.resume_from_step`) to the .npz `out`, by default
  WORKDIR/samples_step_N.npz. Returns (its path, {name: array} written).

  The samples are the sampling generator's, as evaluation has it: the EMA
  weights when `config.ema` is on (with `config.eval.ema=False` the trained
  G, and the default file is samples_step_N_raw.npz), its BatchNorm averages
  recomputed when `config.eval.standing_stats` says so. The arrays:
  `samples`, float32 (toy data: points [N, 2]; images [N, H, W, C] in
  [-1, 1]), `step`, and for a conditional run `labels` (int32, as the image
  metrics draw them: `labels.eval_labels`, i % num_classes within each noise
  batch for classes, the clusters' proportions for
  `conditional.labels=clusters`). Images also get a grid of the first ones
  beside it, FILE.png.

  Sample i is noise row i of the batches of `eval.sample_batch_size` drawn
  from PRNGKey(`seed`) (`sampling.make_sample_rows`): the same checkpoint and
  seed give the same file, byte for byte, and seed `eval.seed` gives the
  samples the image metrics evaluate. Nothing else is written, and no lock is
  taken (as `evaluate_checkpoint`). Every process of a multi-host run draws
  its share of the samples; process 0 writes them.
  """
  if num_samples < 1:
    raise UserError(f'--num_samples={num_samples}: ask for 1 or more samples')
  if not 0 <= seed < 2**32:
    raise UserError(f'--sample_seed={seed}: give a seed in [0, 2**32)')
  checks.validate(config)
  if config.eval.get('metrics'):  # Samples need no Inception or classifier.
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.eval.metrics = ''
  evaluate.check(config)
  ckpt, (step,) = _saved_steps(config, workdir, None, 'sample')
  try:
    data_iter, template = _data_and_state(config)
    _check_memory(num_samples, data_iter.example_shape)
    state = _restore(ckpt, config, template, data_iter, set_aside=False,
                     step=step)
  finally:
    ckpt.close()
  g, tag = evaluate.generator(config, state)
  out = out or f'{workdir_lib.absolute(workdir)}/samples_step_{step}{tag}.npz'
  problem = shards.broadcast(
      _out_problem(out) if jax.process_index() == 0 else None)
  if problem:
    raise UserError(problem)
  g = standing_stats.recompute(config, g, config.eval.get('standing_stats', 0))
  samples, labels = sampling.draw(config, g, jax.random.PRNGKey(seed),
                                  num_samples, evaluate.sample_batch_size(config))
  arrays = {'samples': samples, 'step': np.int64(step)}
  if labels is not None:
    arrays['labels'] = labels
  if jax.process_index() == 0:
    png = epath.Path(out).with_suffix('.png')
    try:
      writers.save_npz(out, arrays)
      if samples.ndim == 4:
        plots.save_png(_sample_grid(config, samples), png)
    except workdir_lib.storage_errors() as e:
      raise UserError(f'cannot write {out} ({workdir_lib.reason(e, out)}); '
                      'pass an --out you can write to') from None
    logging.info('Wrote %d samples of step %d%s to %s%s.', num_samples, step,
                 ' (the trained G, not the EMA)' if tag else '', out,
                 f' and {png}' if samples.ndim == 4 else '')
  return out, arrays
