"""Orbax checkpoints of the train state, the input position and the config.

Each checkpoint is a step folder under `WORKDIR/checkpoints/` with three items:
`state` (the whole GANState as numpy arrays), `data` (the input iterator's
state) and `config` (the resolved config). Orbax writes into a temporary folder
and renames it when complete, so a run killed during a save leaves the previous
checkpoint as the latest one.
"""
import os

import jax
import orbax.checkpoint as ocp

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

  def save(self, step, state, data_state, config):
    """Saves `state` (one copy, not replicated) at `step`."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(jax.device_get(state)),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

  def restore(self, step, template):
    """Returns (state, data_state, config_dict) saved at `step`."""
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(jax.device_get(template)),
          data=ocp.args.JsonRestore(),
          config=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises many kinds (ValueError, KeyError, FileNotFoundError, ...)
      # for truncated files or a tree that does not match the model.
      raise UserError(
          f'cannot restore the checkpoint at step {step} in {self.directory} '
          f'({type(e).__name__}: {str(e).splitlines()[0][:200]}); the config '
          'may not match the one it was saved with, or the files are damaged. '
          'Use a new --workdir, or delete that step folder to resume from an '
          'earlier one') from None
    return restored.state, restored.data, restored.config

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
