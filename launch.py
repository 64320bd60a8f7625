"""Trains a GAN: python launch.py --config configs/<name>.py[:args] [--workdir DIR].

Any config field can be overridden: --config.batch_size=128 --config.loss.name=hinge

A trained run: --mode=eval evaluates a checkpoint, --mode=sample writes
samples of one to an .npz (`--num_samples`, `--sample_seed`, `--out`); both
take the run's own config (WORKDIR/config.json) when --config is not given.

Several hosts: run the same command on each, adding --multihost on Cloud TPU
VMs, or --coordinator_address/--num_processes/--process_id elsewhere
(gan_jax/distributed.py).
"""
import datetime
import logging as logging_lib
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gan_jax import cli
from gan_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, with an optional :argument.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, metrics and samples go; a run resumes '
    'from it. Default: runs/<config>_<time>.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'sample'], 'train: train (or resume) '
    'the run in --workdir. eval: evaluate its latest checkpoint (or '
    '--config.resume_from_step=N, or --eval_steps) and write '
    'eval_step_N.json. sample: write --num_samples samples of that '
    'checkpoint to --out. eval and sample read the run\'s config.json when '
    'there is no --config.')
_EVAL_STEPS = flags.DEFINE_string(
    'eval_steps', None, "With --mode=eval: the checkpoint steps to evaluate, "
    "comma-separated (1000,2000), or 'all' that the run kept.")
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', 64, 'With --mode=sample: how many samples to write.')
_SAMPLE_SEED = flags.DEFINE_integer(
    'sample_seed', 0, 'With --mode=sample: the seed of the noise; the same '
    'checkpoint and seed give the same samples.')
_OUT = flags.DEFINE_string(
    'out', None, 'With --mode=sample: the .npz to write (images also get a '
    'PNG grid beside it, FILE.png). Default: WORKDIR/samples_step_N.npz.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Start jax.distributed, detecting the coordinator, the '
    'number of processes and the process id (Cloud TPU VMs, SLURM, Open MPI).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0, the same on every '
    'host; makes the run multi-host. Default: $JAX_COORDINATOR_ADDRESS.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes (hosts) of a multi-host run. '
    'Default: $JAX_NUM_PROCESSES.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, "This process's id, 0 .. num_processes - 1. Default: "
    '$JAX_PROCESS_ID.')
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    'coordinator_timeout', 300, 'Seconds to wait at start-up for the '
    'coordinator and all the processes of a multi-host run.')


def default_workdir(config_path):
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join('runs', f'{name}_{datetime.datetime.now():%Y%m%d_%H%M%S}')


_ROOT = os.path.dirname(os.path.realpath(__file__))


def _module_name(record):
  """The dotted name of the module that logged `record`; '' for a library's.

  A logger named after its module (logging.getLogger(__name__), as jax's)
  says it in record.name. But absl's `logging.info` logs through the logger
  'absl' for every caller (gan_jax, orbax, ...), and `logging.info` through
  'root': then the module is the caller's file (record.pathname) as a path
  under the checkout, if every part of that path is a Python identifier. A
  library's file is not: it is outside the checkout, or inside it in a venv
  (.venv/lib/python3.11/site-packages/...).
  """
  if record.name not in ('absl', 'root'):
    return record.name
  path = os.path.relpath(os.path.realpath(record.pathname), _ROOT)
  parts = os.path.splitext(path)[0].split(os.sep)
  return '.'.join(parts) if all(p.isidentifier() for p in parts) else ''


class _OnlyOurs(logging_lib.Filter):
  """INFO and up of gan_jax and launch.py; of libraries (orbax, jax) WARNING."""

  def filter(self, record):
    if record.levelno >= logging_lib.WARNING:
      return True
    name = _module_name(record)
    return (name in ('__main__', 'launch', 'gan_jax')
            or name.startswith('gan_jax.'))


def main(argv):
  try:
    _main(argv)
  except KeyboardInterrupt:  # A second Ctrl-C while the first one saves.
    _interrupted()


def _interrupted(signum=signal.SIGINT, frame=None):
  """Ctrl-C or SIGTERM at start-up, or a second Ctrl-C while the first
  saves: one line, the lock released.

  The first Ctrl-C (or SIGTERM) of a training run saves and stops
  (gan_jax/train.py, StopSignal); this is any other. Checkpoints become
  visible only when complete, so the workdir holds the last complete one.
  Until training starts this is the SIGINT handler itself (and SIGTERM's,
  for training on one host, from the parsed flags on): a KeyboardInterrupt
  raised inside an import can be swallowed by a library's bare `except:`,
  and nothing needs saving yet. os._exit, since a checkpoint write or a
  worker left mid-way must not hold the exit up.
  """
  del frame
  what = ('terminated (SIGTERM)' if signum == signal.SIGTERM
          else 'interrupted (Ctrl-C)')
  print(f'error: {what}; the workdir keeps its last complete '
        'checkpoint: launch again with the same --workdir to resume',
        file=sys.stderr, flush=True)
  workdir_lib = sys.modules.get('gan_jax.workdir')
  if workdir_lib is not None:
    for path in list(workdir_lib._HELD):  # pylint: disable=protected-access
      workdir_lib.release(os.path.dirname(path))
  os._exit(128 + signum)  # pylint: disable=protected-access


def _closed_loop_is_quiet(unraisable, default=sys.__unraisablehook__):
  """sys.unraisablehook without orbax's closed-loop noise.

  When a checkpoint restore fails part-way (a damaged manifest, say), orbax
  closes its asyncio loop while tensorstore still completes the other reads;
  each completion calls into the closed loop from a tensorstore thread, and
  Python prints that RuntimeError as an unraisable traceback beside the one
  error line. Those, and only those, are logged at debug level instead.
  """
  e = unraisable.exc_value
  if isinstance(e, RuntimeError) and str(e) == 'Event loop is closed':
    logging.debug('ignored after a failed checkpoint read: %s', e)
  else:
    default(unraisable)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_OnlyOurs())
  sys.unraisablehook = _closed_loop_is_quiet
  from gan_jax import distributed  # pylint: disable=g-import-not-at-top
  try:  # Before anything else uses JAX.
    multihost = distributed.initialize(
        _MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value,
        _PROCESS_ID.value, _COORDINATOR_TIMEOUT.value)
  except UserError as e:
    cli.fail(str(e))
  if not multihost and _MODE.value == 'train':
    # Until training takes it; on several hosts SIGTERM is JAX's preemption
    # notice, and eval and sample hold no lock that a kill would leave.
    signal.signal(signal.SIGTERM, _interrupted)
  if multihost and not _WORKDIR.value:
    cli.fail('a multi-host run needs --workdir: the same directory on every '
             'host, on a filesystem they all see')
  if _EVAL_STEPS.value is not None and _MODE.value != 'eval':
    cli.fail('--eval_steps goes with --mode=eval')
  given = [f'--{f}' for f in ('num_samples', 'sample_seed', 'out')
           if flags.FLAGS[f].present]
  if given and _MODE.value != 'sample':
    cli.fail(f'{"/".join(given)} goes with --mode=sample')
  from gan_jax import backend  # pylint: disable=g-import-not-at-top
  backend.check()  # 'backend gpu: 8 x NVIDIA H100 ...', or a GPU left unused.
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  workdir = (_WORKDIR.value
             or default_workdir(flags.FLAGS['config'].config_filename))
  if '://' not in workdir:  # gs://bucket/run is a URL, not a local path.
    workdir = os.path.expanduser(workdir)
  logging.info('workdir: %s', workdir)
  config = cli.config(_CONFIG)  # A config file that failed to load: here.
  try:
    distributed.check_same_config(config.to_dict(), workdir, {
        f'--{f}': flags.FLAGS[f].value
        for f in ('mode', 'num_samples', 'sample_seed', 'eval_steps')})
    from gan_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    # gcsfs logs each HTTP error it raises (401, 403) with a traceback, for a
    # gs:// workdir, data path or weights alike; the error, if not handled,
    # is reported anyway (here in one line).
    logging_lib.getLogger('gcsfs').setLevel(logging_lib.CRITICAL)
    if workdir_lib.is_remote(workdir):  # A bad bucket or credentials: now.
      workdir_lib.check_readable(workdir)
    if _MODE.value == 'eval':
      train.evaluate_checkpoint(config, workdir, _eval_steps(_EVAL_STEPS.value))
    elif _MODE.value == 'sample':
      out = _OUT.value
      if out and '://' not in out:
        out = os.path.expanduser(out)
      train.sample_checkpoint(config, workdir, _NUM_SAMPLES.value,
                              _SAMPLE_SEED.value, out)
    else:
      train.train_and_evaluate(config, workdir)
  except UserError as e:
    cli.fail(str(e))


def _eval_steps(value):
  """--eval_steps as None, 'all' or a list of steps."""
  if value is None or value == 'all':
    return value
  try:
    return [int(v) for v in value.split(',')]
  except ValueError:
    raise UserError(f"--eval_steps={value}: give steps like 1000,2000 or 'all'"
                    ) from None


_RUN_CONFIG = os.path.join(_ROOT, 'gan_jax', 'run_config.py')


def _with_run_config(argv):
  """`argv`, with the run's own config (`--config=gan_jax/run_config.py:
  WORKDIR`, its config.json) where --mode=eval or sample has no --config.

  It goes first, before any --config.x=... override of it.
  """
  mode = cli.flag_value(argv, 'mode')
  if mode not in ('eval', 'sample'):
    if cli.config_source(argv) is None and not any(
        a.split('=')[0] in ('--help', '-h', '--helpfull', '--helpshort')
        for a in argv[1:]):
      cli.fail('--config is missing: pass the config to train, e.g. --config '
               'configs/default.py (to resume a run, the same one again); '
               '--mode=eval and --mode=sample use the run\'s config.json '
               'without it')
    return argv
  workdir = cli.flag_value(argv, 'workdir')
  if not workdir:
    cli.fail(f'--mode={mode} needs --workdir: the run to '
             f'{"evaluate" if mode == "eval" else "sample from"}')
  if cli.config_source(argv) is not None:
    return argv
  return [argv[0], f'--config={_RUN_CONFIG}:{workdir}', *argv[1:]]


def parse_flags(argv):
  """absl's parser, with config errors reported in one line instead of a
  traceback (gan_jax/cli.py); eval and sample take the run's config."""
  return cli.parse_flags(_with_run_config(argv))


if __name__ == '__main__':
  signal.signal(signal.SIGINT, _interrupted)  # Until training takes it over.
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)
