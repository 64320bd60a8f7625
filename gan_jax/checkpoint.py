"""Orbax checkpoints of the train state, the input position and the config.

Each checkpoint is a step folder under `WORKDIR/checkpoints/` with three items:
`state` (the whole GANState as numpy arrays), `data` (the input iterator's
state) and `config` (the resolved config). Orbax writes into a temporary folder
and renames it when complete, so a run killed during a save leaves the previous
checkpoint as the latest one.

On several hosts every process calls `save` and `restore` (orbax synchronises
them) on the same directory, which must be on a filesystem all hosts see. The
state given to `save` is a host-local numpy copy, the same on every host (the
step averages gradients over all devices), and orbax writes numpy arrays from
process 0 only; the data state (a global batch index) is also the same on
every host and also written by process 0. On restore every host reads the
whole state.
"""
import os
import shutil

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gan_jax.errors import UserError


class Checkpointer:
  """Saves and restores the run in `WORKDIR/checkpoints`."""

  def __init__(self, workdir, config):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.checkpoint.keep,
        keep_period=config.checkpoint.keep_every or None,
        enable_async_checkpointing=config.checkpoint.use_async,
        create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=('state', 'data', 'config'))

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return sorted(self.manager.all_steps())

  def set_aside_after(self, step):
    """Moves the checkpoints after `step` to `checkpoints_abandoned/`.

    Resuming from an earlier step (`config.resume_from_step`) starts a new
    trajectory; its saves would collide with the later steps of the old one,
    which are kept beside the run rather than deleted.
    """
    later = [s for s in self.all_steps() if s > step]
    if later and jax.process_index() == 0:
      aside = self.directory + '_abandoned'
      os.makedirs(aside, exist_ok=True)
      for s in later:
        target = os.path.join(aside, str(s))
        if os.path.exists(target):
          shutil.rmtree(target)
        os.replace(os.path.join(self.directory, str(s)), target)
    if later:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('checkpoints set aside')
      self.manager.reload()
    return later

  def reached_preemption(self, step):
    return self.manager.reached_preemption(step)

  def save(self, step, state, data_state, config):
    """Saves `state` (one copy, not replicated) at `step`."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(jax.device_get(state)),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

  def _fail(self, step, e):
    earlier = [s for s in self.all_steps() if s < step]
    fallback = (f'pass --config.resume_from_step={earlier[-1]} to resume from '
                'the previous checkpoint, or ' if earlier else '')
    # Orbax raises many kinds (ValueError, KeyError, FileNotFoundError, ...)
    # for truncated files or a tree that does not match the model.
    first = (str(e).strip().splitlines() or [''])[0][:200]
    raise UserError(
        f'cannot restore the checkpoint at step {step} in {self.directory} '
        f'({type(e).__name__}: {first}); its files are damaged or it was saved '
        f'by a different model. {fallback}use a new --workdir') from None

  def restore_config(self, step):
    """The config (a dict) saved with the checkpoint at `step`."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore())).config
    except Exception as e:  # pylint: disable=broad-except
      self._fail(step, e)

  def restore(self, step, template):
    """Returns (state, data_state) saved at `step`, shaped like `template`."""
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(jax.device_get(template)),
          data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      self._fail(step, e)
    return restored.state, restored.data

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
