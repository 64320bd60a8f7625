"""Orbax checkpoints of the train state, the input position and the config.

Each checkpoint is a step folder under `WORKDIR/checkpoints/` with four items:
`state` (the whole GANState as numpy arrays), `data` (the input iterator's
state), `config` (the resolved config) and `checksums` (a CRC32 of each array
and of the data and config JSON). Orbax writes into a temporary folder and
renames it when complete (on Cloud Storage, which has no renames, it writes
in place and marks the step complete with a `commit_success.txt`), so a run
killed during a save leaves the previous checkpoint as the latest one. A restore checks that the saved arrays have the
model's shapes and that the restored values match their checksums; a
checkpoint saved before checksums existed restores with a warning.

A save that fails (disk full, permissions, a file in the way) raises a
UserError naming the last complete checkpoint. With asynchronous saves the
error of a background write surfaces at the next `save`, `check` or `wait`.

On several hosts every process calls `save` and `restore` (orbax synchronises
them) on the same directory, which must be on a filesystem all hosts see. The
state given to `save` is a host-local numpy copy, the same on every host (the
step averages gradients over all devices), and orbax writes numpy arrays from
process 0 only; the data state (a global batch index), the config and the
checksums are also the same on every host and also written by process 0. On
restore every host reads and checks the whole state.
"""
import json
import os
import threading
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError

# How long closing waits for orbax's threads after the last save is done (or
# failed): a failed save can leave them blocked for minutes.
CLOSE_TIMEOUT_S = 30
_SHOWN = 3  # Arrays named in a one-line error.


def _name(path):
  """'g/params/Dense_0/kernel' for a pytree key path."""
  keys = (getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))
          for k in path)
  return '/'.join(map(str, keys))


def _named_leaves(tree):
  return {_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _crc(x):
  x = np.asarray(x)
  if x.ndim == 0:  # A step count saved as an int32 array restores as an int.
    return f'{zlib.crc32(repr(x.item()).encode()):08x}'
  return f'{zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8)):08x}'


def _json_crc(item):
  return f'{zlib.crc32(json.dumps(item, sort_keys=True).encode()):08x}'


def _checksums(state, data_state, config):
  return {'algorithm': 'crc32',
          'state': {n: _crc(x) for n, x in _named_leaves(state).items()},
          'data': _json_crc(data_state), 'config': _json_crc(config)}


def _first_line(e):
  return f'{type(e).__name__}: {(str(e).strip().splitlines() or [""])[0][:200]}'


def _listed(parts):
  more = f' and {len(parts) - _SHOWN} more' if len(parts) > _SHOWN else ''
  return '; '.join(parts[:_SHOWN]) + more


def _check_keep(config):
  keep, every = config.checkpoint.keep, config.checkpoint.keep_every
  if not (isinstance(keep, int) and keep >= 1):
    raise UserError(f'checkpoint.keep must be at least 1 (how many of the '
                    f'latest checkpoints are kept), got {keep!r}; pass '
                    '--config.checkpoint.keep=N')
  if not (isinstance(every, int) and every >= 0):
    raise UserError(f'checkpoint.keep_every must be 0 (off) or a number of '
                    f'steps, got {every!r}; pass '
                    '--config.checkpoint.keep_every=N')


class Checkpointer:
  """Saves and restores the run in `WORKDIR/checkpoints`."""

  def __init__(self, workdir, config):
    _check_keep(config)
    # A local path or a URL (gs://bucket/run): orbax takes either.
    self.directory = f"{workdir_lib.absolute(workdir)}/checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.checkpoint.keep,
        keep_period=config.checkpoint.keep_every or None,
        enable_async_checkpointing=config.checkpoint.use_async,
        create=True)
    json_items = ('data', 'config', 'checksums')
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            **{name: ocp.JsonCheckpointHandler() for name in json_items}})
    self._pending = None  # The step of the last save begun.
    self._failed = False  # A save failed (and was reported).
    self._sums = {}  # Step -> its checksums (None for an old checkpoint).

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def set_aside_after(self, step):
    """Moves the checkpoints after `step` to `checkpoints_abandoned/`.

    Resuming from an earlier step (`config.resume_from_step`) starts a new
    trajectory; its saves would collide with the later steps of the old one,
    which are kept beside the run rather than deleted. A step set aside
    before is kept too: the new one goes to `N.1` (`N.2`, ...) beside it.
    """
    later = [s for s in self.all_steps() if s > step]
    if later and jax.process_index() == 0:
      aside = epath.Path(self.directory + '_abandoned')
      aside.mkdir(parents=True, exist_ok=True)
      for s in later:
        target, k = aside / str(s), 0
        while target.exists():
          k += 1
          target = aside / f'{s}.{k}'
        (epath.Path(self.directory) / str(s)).rename(target)
        logging.warning('Set aside the checkpoint at step %d (after step %d, '
                        'where the run resumes) as %s.', s, step, target)
    if later:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('checkpoints set aside')
      self.manager.reload()
    return later

  def reached_preemption(self, step):
    return self.manager.reached_preemption(step)

  def _save_failed(self, step, e):
    self._failed = True
    try:
      self.manager.reload()
      kept = self.all_steps()
    except Exception:  # pylint: disable=broad-except
      kept = []
    last = f'step {kept[-1]}' if kept else 'none'
    raise UserError(
        f'cannot write the checkpoint of step {step} to {self.directory} '
        f'({_first_line(e)}); the last complete checkpoint is {last}. Free '
        'disk space or fix the folder, then launch again with the same '
        '--workdir to resume') from None

  def _probe(self, step):
    """Fails the save before orbax starts it if the folder cannot be written
    (orbax's writer threads would then wait minutes for each other)."""
    probe = (epath.Path(self.directory)
             / f'.write_test_{jax.process_index()}_{os.getpid()}')
    try:
      probe.write_text('ok')
      probe.unlink()
    except workdir_lib.storage_errors() as e:
      self._save_failed(step, e)

  def _clear_unfinished(self, step):
    """Deletes the folder of an unfinished save of `step` on Cloud Storage.

    There orbax writes in place (no renames) and marks a complete step with
    `commit_success.txt`; a run killed mid-save leaves the step's folder
    without it, which orbax does not list but would write into (and fail
    on the half-written OCDBT manifest) when the relaunch saves that step.
    """
    if not workdir_lib.is_remote(self.directory):
      return
    folder = epath.Path(self.directory) / str(step)
    if jax.process_index() == 0:
      try:
        if folder.exists() and not (folder / 'commit_success.txt').exists():
          logging.warning('Deleting %s, an unfinished save of a run that was '
                          'stopped during it.', folder)
          folder.rmtree()
      except workdir_lib.storage_errors() as e:
        self._save_failed(step, e)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'unfinished save {step} cleared')

  def save(self, step, state, data_state, config):
    """Saves `state` (one copy, not replicated) at `step`."""
    state, config = jax.device_get(state), config.to_dict()
    sums = _checksums(state, data_state, config)
    self.wait()  # Surfaces a failed background save as that step's error.
    self._probe(step)
    self._clear_unfinished(step)
    self._pending = step
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          config=ocp.args.JsonSave(config),
          checksums=ocp.args.JsonSave(sums)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(step, e)

  def check(self):
    """Raises UserError if a background save has failed; does not block.

    Orbax's finalize thread takes a failed write's error from where
    `check_for_errors` looks, so a save no longer in progress is also waited
    for (at once: it is over), which re-raises the error it kept."""
    if self._failed:
      return
    try:
      self.manager.check_for_errors()
      if not self.manager.is_saving_in_progress():
        self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      try:  # Let the failed save's threads end, as `wait` does.
        self.manager.wait_until_finished()
      except Exception:  # pylint: disable=broad-except
        pass  # The same failure, reported below.
      self._save_failed(self._pending, e)

  def wait(self):
    """Waits for the save in progress; raises UserError if it failed."""
    if self._failed:
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._save_failed(self._pending, e)

  def close(self, timeout_s=CLOSE_TIMEOUT_S):
    """Closes orbax's manager, waiting at most `timeout_s` seconds.

    Call `wait` first: this is not the place to wait for a save. If orbax's
    threads are stuck (after a failed save), they are left behind.
    """
    errors = []

    def close():
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)

    closer = threading.Thread(target=close, name='checkpoint_close',
                              daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
      logging.error('Orbax did not close within %d s; its threads are left '
                    'running.', timeout_s)
    elif errors and not self._failed:
      self._save_failed(self._pending, errors[0])

  def _damaged(self, step, reason):
    earlier = [s for s in self.all_steps() if s < step]
    fallback = (f'pass --config.resume_from_step={earlier[-1]} to resume from '
                'the previous checkpoint, or ' if earlier else '')
    raise UserError(
        f'cannot restore the checkpoint at step {step} in {self.directory} '
        f'({reason}); its files are damaged or it was saved by a different '
        f'model. {fallback}use a new --workdir') from None

  def _restore_items(self, step, **items):
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises many kinds (ValueError, KeyError, FileNotFoundError, ...)
      # for truncated files or a tree that does not match the model.
      self._damaged(step, _first_line(e))

  def _expected(self, step):
    """The checksums saved at `step`; None (with a warning) if it has none."""
    if step not in self._sums:
      if (epath.Path(self.directory) / str(step) / 'checksums').exists():
        sums = self._restore_items(
            step, checksums=ocp.args.JsonRestore()).checksums
        if not isinstance(sums, dict) or not isinstance(sums.get('state'),
                                                        dict):
          self._damaged(step, 'its checksums item is damaged')
        self._sums[step] = sums
      else:
        logging.warning('The checkpoint at step %d has no checksums (saved by '
                        'an older version); it is restored unchecked.', step)
        self._sums[step] = None
    return self._sums[step]

  def _verify(self, step, part, actual):
    """Raises the damaged-checkpoint error unless `part` matches its sums."""
    sums = self._expected(step)
    if sums is None:
      return
    if part != 'state':
      if sums.get(part) != _json_crc(actual):
        self._damaged(step, f'the {part} item does not match its checksum')
      return
    saved = sums['state']
    bad = [n for n, x in _named_leaves(actual).items()
           if n in saved and saved[n] != _crc(x)]
    if bad:
      self._damaged(step, f'arrays that do not match their checksums: '
                    f'{_listed(bad)}')

  def _check_fit(self, step, template):
    """Raises UserError naming the arrays whose saved shapes are not the
    model's (a change of width or depth, even with allow_config_change)."""
    try:
      saved = self.manager.item_metadata(step)['state']
    except Exception as e:  # pylint: disable=broad-except
      self._damaged(step, _first_line(e))
    if saved is None:
      return  # Let the restore say what is wrong.
    saved = {n: tuple(getattr(m, 'shape', ()))
             for n, m in _named_leaves(saved).items()}
    wanted, misfits = _named_leaves(template), []
    for n, x in wanted.items():
      if n not in saved:
        misfits.append(f'{n} {np.shape(x)} is not in it')
      elif saved[n] != np.shape(x):
        misfits.append(f'{n} is {saved[n]}, the model has {np.shape(x)}')
    misfits += [f'{n} {s} is not in the model' for n, s in saved.items()
                if n not in wanted]
    if misfits:
      raise UserError(
          f'the checkpoint at step {step} in {self.directory} does not fit the '
          f'model: {_listed(misfits)}. A change of the networks\' shapes '
          'cannot resume, even with allow_config_change; use a new --workdir')

  def restore_config(self, step):
    """The config (a dict) saved with the checkpoint at `step`."""
    config = self._restore_items(step, config=ocp.args.JsonRestore()).config
    self._verify(step, 'config', config)
    return config

  def restore(self, step, template):
    """Returns (state, data_state) saved at `step`, shaped like `template`."""
    template = jax.device_get(template)
    self._check_fit(step, template)
    restored = self._restore_items(
        step, state=ocp.args.StandardRestore(template),
        data=ocp.args.JsonRestore())
    self._verify(step, 'state', restored.state)
    self._verify(step, 'data', restored.data)
    index = (restored.data.get('batch_index')
             if isinstance(restored.data, dict) else None)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
      self._damaged(step, f'its data item has batch_index {index!r}, not a '
                    'number of batches')
    return restored.state, restored.data
