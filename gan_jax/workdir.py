"""The workdir at start-up: is it writable, and is it ours alone.

One training run writes to a workdir at a time: `lock(workdir)` creates
`WORKDIR/run.lock` atomically (`O_CREAT | O_EXCL`, atomic on local disks and
NFS) with the host, pid and start time of the run, and `release(workdir)`
removes it. A lock that is already there is

  * kept, with one UserError line naming its holder, if that process runs;
  * taken over with a warning if it is of a process on this host that has
    ended (killed, or a crash that skipped the release), or of this very
    process (a call that stopped between start-up and training);
  * kept, with one UserError line, if it is of another host (or of another
    pid namespace, a container on this host): whether that process runs
    cannot be told from here, so the user deletes the file once that run is
    known to be dead (e.g. its machine was preempted).

The lock uses POSIX files (os.open, os.rename, /proc); everything else here
goes through `etils.epath`. On several hosts (which share the workdir)
process 0 takes the lock and the others follow its outcome.
"""
import datetime
import json
import os
import socket
import time
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from gan_jax.errors import UserError

LOCK = 'run.lock'
_HELD = {}  # Lock path -> the text this process wrote there.


def check_writable(folder):
  """Fails early, before anything is written, unless `folder` (the workdir or
  its checkpoints folder) can be created and written to."""
  folder = epath.Path(folder)
  # Hosts sharing the workdir may have the same pid (containers).
  probe = folder / f'.write_test_{jax.process_index()}_{os.getpid()}'
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    reason = ('a file of that name is in the way'
              if isinstance(e, FileExistsError) else e.strerror or str(e))
    raise UserError(f'{str(folder)!r} is not writable ({reason}); pass a '
                    '--workdir you can write to, or move away what is in the '
                    'way') from None


def process_start(pid):
  """When process `pid` started (clock ticks after boot), or None if unknown.

  Tells a live holder from a new process that got the dead holder's pid
  (after a reboot, or a restarted container numbering its processes anew).
  """
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])  # Field 22.
  except (OSError, ValueError, IndexError):
    return None


def _pid_namespace():
  try:
    return os.readlink('/proc/self/ns/pid')
  except OSError:
    return None


def _runs(holder):
  """Whether the process that wrote `holder`, on this host, still runs."""
  try:
    os.kill(holder['pid'], 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Another user's process.
  started, saved = process_start(holder['pid']), holder.get('started')
  return started is None or saved is None or started == saved


def _read(path):
  """(holder dict, text) of the lock file; (None, None) once it is gone."""
  for _ in range(20):  # Its writer may be between creating and writing it.
    try:
      with open(path) as f:
        text = f.read()
    except FileNotFoundError:
      return None, None
    try:
      holder = json.loads(text)
      return {'host': str(holder['host']), 'pid': int(holder['pid']),
              'since': str(holder.get('since')),
              'started': holder.get('started'),
              'pid_namespace': holder.get('pid_namespace')}, text
    except (ValueError, KeyError, TypeError):
      time.sleep(0.05)
  raise UserError(f'the lock file {path} is damaged; if no run uses this '
                  'workdir, delete it and launch again')


def _take_over(path, text):
  """Removes the lock file if it still holds `text`; False if it changed."""
  aside = f'{path}.{uuid.uuid4().hex}'
  try:
    os.rename(path, aside)  # Atomic: of two processes, one moves it.
  except FileNotFoundError:
    return True
  with open(aside) as f:
    moved = f.read()
  if moved != text:  # Another process took it over first: give it back
    os.rename(aside, path)  # (unless a third has: a race too rare to handle).
    return False
  os.remove(aside)
  return True


def _refuse_or_take_over(path, holder, text):
  """Raises UserError for a holder that runs or may run; else removes it."""
  who = f'host {holder["host"]}, pid {holder["pid"]}, since {holder["since"]}'
  namespace = holder['pid_namespace']
  if holder['host'] != socket.gethostname() or namespace not in (
      None, _pid_namespace()):
    raise UserError(
        f'--workdir {os.path.dirname(path)} is locked by a run on another host '
        f'or container ({who}); wait for it to end or use another --workdir. '
        f'If that run is dead, delete {path} and launch again')
  if _runs(holder) and holder['pid'] != os.getpid():
    raise UserError(
        f'--workdir {os.path.dirname(path)} is in use by another run ({who}); '
        f'wait for it to end, stop it (kill {holder["pid"]}), or use another '
        '--workdir')
  if _take_over(path, text):
    logging.warning('Took over %s, left by a run that ended without releasing '
                    'it (%s).', path, who)


def _acquire(workdir):
  path = os.path.join(os.path.abspath(workdir), LOCK)
  pid = os.getpid()
  text = json.dumps({
      'host': socket.gethostname(), 'pid': pid,
      'since': datetime.datetime.now().astimezone().isoformat('T', 'seconds'),
      'started': process_start(pid), 'pid_namespace': _pid_namespace()})
  for _ in range(5):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder, held = _read(path)
      if holder is not None:
        _refuse_or_take_over(path, holder, held)
      continue
    except OSError as e:
      raise UserError(f'cannot create the lock {path} ({e.strerror}); pass a '
                      '--workdir you can write to') from None
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    _HELD[path] = text
    return
  raise UserError(f'cannot take the lock {path}: other runs keep starting in '
                  'this workdir; launch one run per --workdir')


def lock(workdir):
  """Takes `WORKDIR/run.lock` for this run, or raises UserError (see above).

  On several hosts process 0 takes it, and every host raises if it failed.
  """
  if jax.process_count() == 1:
    _acquire(workdir)
    return
  error = None
  if jax.process_index() == 0:
    try:
      _acquire(workdir)
    except UserError as e:
      error = e
  failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
  if error is not None:
    raise error
  if int(failed):
    raise UserError(f'process 0 could not lock --workdir {workdir}; see its '
                    'error line')


def release(workdir):
  """Removes the lock this process holds on `workdir`, if it is still ours."""
  path = os.path.join(os.path.abspath(workdir), LOCK)
  text = _HELD.pop(path, None)
  if text is None:
    return
  try:
    with open(path) as f:
      if f.read() != text:
        return  # Deleted by hand and taken by another run: not ours now.
    os.remove(path)
  except FileNotFoundError:
    pass
