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

The lock uses POSIX files (os.open, os.rename, /proc) for a local workdir.
On Cloud Storage (`gs://bucket/run`) both of its writes are conditional,
checked atomically by the bucket: the create is an exclusive one (gcsfs
`open(path, 'xb')`: ifGenerationMatch=0), and a lock left by a dead run is
deleted only if it is still the very object that was read (the generation
that came with its content: ifGenerationMatch=G), so that of two runs taking
it over at once one deletes it and the other finds it replaced.
Everything else here goes through `etils.epath`, which reads and writes
local and `gs://` paths alike. On several hosts (which share the workdir)
process 0 takes the lock and the others follow its outcome.

`read_bytes`, `upload`, `list_files` and `version` let the data and metrics
code read and write `gs://` paths as they do local ones.
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


def is_remote(path):
  """Whether `path` is a URL (gs://bucket/run) rather than a local path."""
  return '://' in str(path)


def absolute(path):
  """`path` made absolute if local; a URL as it is (without a trailing /)."""
  path = str(path)
  return path.rstrip('/') if is_remote(path) else os.path.abspath(path)


def storage_errors():
  """The exceptions a filesystem or Cloud Storage call raises for a path that
  cannot be used: OSError (FileNotFoundError for a missing bucket), and the
  HTTP, API and credential errors of gcsfs and the Google client libraries."""
  errors = [OSError, ValueError]
  for module, name in (('gcsfs.retry', 'HttpError'),
                       ('google.api_core.exceptions', 'GoogleAPIError'),
                       ('google.auth.exceptions', 'GoogleAuthError')):
    try:
      errors.append(getattr(__import__(module, fromlist=[name]), name))
    except (ImportError, AttributeError):
      pass
  return tuple(errors)


def reason(e, path=''):
  """A short reason for a storage error `e` on `path`, for a UserError."""
  if isinstance(e, FileExistsError):
    return 'a file of that name is in the way'
  if is_remote(path) and isinstance(e, FileNotFoundError):
    return 'no such bucket, or no access to it'
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = (str(e).strip().splitlines() or [''])[0][:200]
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def filesystem(path):
  """The fsspec filesystem of the URL `path` (gcsfs for gs://)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  return fsspec.core.url_to_fs(path)[0]


def read_bytes(path):
  """The content of the file `path` (local or a URL); FileNotFoundError if
  there is none. A URL is one GET, whatever listing gcsfs has cached."""
  if not is_remote(path):
    with open(path, 'rb') as f:
      return f.read()
  return filesystem(path).cat_file(path)


def upload(url, data):
  """Writes the bytes `data` to the object `url` so that no reader sees a
  part of them, as a local write then rename does.

  An object is visible only once its upload is complete: `data` goes up in
  one request (one resumable upload of 50 MiB pieces when larger, finalised
  by its last piece), not through a buffered file (`epath.Path.write_bytes`),
  whose close, which also runs when the writer is interrupted, would
  finalise what it holds.
  """
  filesystem(url).pipe_file(url, data)


def list_files(folder):
  """Every file under `folder`, recursively (local: following links), sorted;
  [] if there is no such folder. On Cloud Storage one listing of the
  prefix (not one per subfolder, as a walk would)."""
  if not is_remote(folder):
    return sorted(os.path.join(root, name) for root, _, names
                  in os.walk(folder, followlinks=True) for name in names)
  protocol, name = folder.split('://', 1)
  prefix = name.rstrip('/') + '/'  # find() of an object's name gives it.
  return sorted(f'{protocol}://{found}'
                for found in filesystem(folder).find(folder)
                if found.startswith(prefix))


def version(path):
  """What changes when the file `path` is written again: (mtime in ns, size)
  of a local file, (generation, size) of a Cloud Storage object. A key for
  caches of what was computed from the file."""
  if not is_remote(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size
  fs = filesystem(path)
  fs.invalidate_cache(path)
  info = fs.info(path)
  return info.get('generation') or info.get('mtime'), info['size']


def _probe(folder):
  """Creates `folder` (an epath.Path) and writes and removes a file in it."""
  # Hosts sharing the workdir may have the same pid (containers).
  probe = folder / f'.write_test_{jax.process_index()}_{os.getpid()}'
  folder.mkdir(parents=True, exist_ok=True)
  probe.write_text('ok')
  probe.unlink()


def check_writable(folder):
  """Fails early, before anything is written, unless `folder` (the workdir or
  its checkpoints folder) can be created and written to."""
  folder = epath.Path(folder)
  try:
    _probe(folder)
  except storage_errors() as e:
    more = (' (gcloud auth application-default login, or a service account '
            'with write access to the bucket)' if is_remote(folder) else '')
    raise UserError(f'{str(folder)!r} is not writable ({reason(e, folder)}); '
                    f'pass a --workdir you can write to{more}, or move away '
                    'what is in the way') from None


def check_out_file(path, flag='--out', remote_ok=False):
  """Fails early, before a tool's or benchmark's work, unless the file `path`
  can be written: its folder is created if missing and written to, and
  `path` is not a folder. So a long job does not end in a traceback and
  lose its results at the last line. A `gs://` URL only if `remote_ok` (the
  caller writes through epath); the tools write local files."""
  if is_remote(path) and not remote_ok:
    raise UserError(f'{flag} {str(path)!r}: this writes local files only; '
                    'write it locally, then copy it (gsutil cp)')
  path = epath.Path(path if is_remote(path) else os.path.expanduser(str(path)))
  try:
    if path.is_dir():
      raise IsADirectoryError(21, 'a folder of that name is in the way')
    _probe(path.parent)
  except storage_errors() as e:
    raise UserError(f'cannot write {flag} {str(path)!r} ({reason(e, path)}); '
                    'choose a file in a folder you can write to') from None


def check_readable(folder):
  """Raises one UserError line unless `folder` (a `gs://` workdir to evaluate)
  can be listed: a missing bucket or credentials fail here, not mid-run."""
  try:
    epath.Path(folder).exists()
  except storage_errors() as e:
    raise UserError(f'cannot read {str(folder)!r} ({reason(e, folder)}); pass '
                    'a --workdir you can read (check the bucket name, and the '
                    'credentials: gcloud auth application-default login, or '
                    'a service account with access to the bucket)') from None


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
      text = epath.Path(path).read_text()
    except FileNotFoundError:
      return None, None
    except storage_errors() as e:  # A folder in its place, no permission.
      raise UserError(f'cannot read the lock file {path} ({reason(e, path)}); '
                      'if no run uses this workdir, delete it and launch again'
                      ) from None
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
  if is_remote(path):
    return _take_over_remote(path, text)
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


def _take_over_remote(path, text):
  """Deletes the lock object if it still holds `text`; False if it changed.

  The delete is conditional on the generation that came with the content
  read (x-goog-generation): a lock that another run took over (deleted and
  created anew) in between is left alone. gcsfs's rm_file takes no
  precondition, so both requests go through its `call`, which does take
  the JSON API's query parameters.
  """
  fs = filesystem(path)
  bucket, key, _ = fs.split_path(path)
  try:
    headers, content = fs.call('GET', 'b/{}/o/{}', bucket, key, alt='media')
    if content.decode('utf-8', 'replace') != text:
      return False
    # Cloud Storage sends the generation with every download; without it
    # (not Cloud Storage) the delete is unconditional, as rm_file's is.
    fs.call('DELETE', 'b/{}/o/{}', bucket, key,
            ifGenerationMatch=headers.get('x-goog-generation'))
  except FileNotFoundError:  # Gone already (a retried delete gets 404 too).
    pass
  except FileExistsError:  # 412 Precondition Failed: replaced since the read.
    return False
  finally:
    fs.invalidate_cache(path)
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


def _create(path, text):
  """Creates the lock file with `text`; FileExistsError if it is there."""
  if is_remote(path):
    fs = filesystem(path)
    fs.invalidate_cache(path)
    with fs.open(path, 'xb') as f:  # ifGenerationMatch=0: atomic.
      f.write(text.encode())
    return
  fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  with os.fdopen(fd, 'w') as f:
    f.write(text)


def _acquire(workdir):
  path = f'{absolute(workdir)}/{LOCK}'
  if not is_remote(path):
    path = os.path.join(absolute(workdir), LOCK)
  pid = os.getpid()
  text = json.dumps({
      'host': socket.gethostname(), 'pid': pid,
      'since': datetime.datetime.now().astimezone().isoformat('T', 'seconds'),
      'started': process_start(pid), 'pid_namespace': _pid_namespace()})
  for _ in range(5):
    try:
      _create(path, text)
    except FileExistsError:
      holder, held = _read(path)
      if holder is not None:
        _refuse_or_take_over(path, holder, held)
      continue
    except storage_errors() as e:
      raise UserError(f'cannot create the lock {path} ({reason(e, path)}); '
                      'pass a --workdir you can write to') from None
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
  path = (f'{absolute(workdir)}/{LOCK}' if is_remote(workdir)
          else os.path.join(absolute(workdir), LOCK))
  text = _HELD.pop(path, None)
  if text is None:
    return
  if is_remote(path):
    try:
      _take_over_remote(path, text)
    except storage_errors() as e:
      logging.warning('Could not remove the lock %s (%s).', path, reason(e))
    return
  try:
    with open(path) as f:
      if f.read() != text:
        return  # Deleted by hand and taken by another run: not ours now.
    os.remove(path)
  except FileNotFoundError:
    pass
