"""Metric output: a JSONL file and TensorBoard events in the workdir.

Only process 0 writes; on other hosts the writer does nothing. TensorBoard
events come from tensorboardX, which needs no TensorFlow. `metrics.jsonl` is
the run's history: on resume `trim_history` cuts it back to the restored step,
so that it reads as one run.

The workdir may be a `gs://` URL. Cloud Storage objects cannot be appended
to: there `metrics.jsonl` is kept in memory and the object rewritten at each
`write_scalars`, and TensorBoard's event files are written through
`etils.epath` (tensorboardX's own Cloud Storage writer needs
google-cloud-storage and hangs at exit retrying an upload).

Every event file goes through `_RecordWriterFactory` (local ones under the
`LOCAL_SCHEME` prefix): tensorboardX writes them from a thread that an error
kills, so their errors are kept and raised as a UserError at the next write
in the main thread, as a failed `metrics.jsonl` write is.

`save_npz` writes the samples of --mode=sample (gan_jax/train.py).
"""
import io
import json
import os
import shutil
import sys
import tempfile
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath

from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError

HISTORY = 'metrics.jsonl'


def check_history(workdir):
  """Raises UserError unless WORKDIR/metrics.jsonl is absent or a file this
  process can read and append to (process 0: the only writer)."""
  path = epath.Path(workdir) / HISTORY
  if jax.process_index() != 0 or not path.exists():
    return
  try:
    if workdir_lib.is_remote(path):  # No appends: it is read and rewritten.
      path.read_bytes()
    else:
      with path.open('r'), path.open('a'):
        pass
  except workdir_lib.storage_errors() as e:
    raise UserError(f'{path} cannot be read and appended to '
                    f'({e.strerror or e}); the run keeps its metrics there: '
                    'move it away or fix its permissions, then launch again'
                    ) from None


def _step(line):
  """The step of a complete history row, or None (a torn or foreign line)."""
  try:
    step = json.loads(line)['step']
  except (ValueError, KeyError, TypeError):
    return None
  return step if isinstance(step, (int, float)) else None


def trim_history(workdir, step):
  """Drops the rows after `step`, the step a run resumes from (0: none
  restored), and torn or damaged lines (a kill mid-write) from
  WORKDIR/metrics.jsonl.

  Those rows are of steps that the run trains again (or, after
  --config.resume_from_step, of an abandoned trajectory). The file is
  rewritten to a temporary file and renamed over the old one.
  """
  path = epath.Path(workdir) / HISTORY
  if jax.process_index() != 0 or not path.exists():
    return
  # Bytes flipped on disk may not even be UTF-8: such lines fail to parse.
  lines = path.read_bytes().decode('utf-8', 'replace').splitlines(True)
  steps = [_step(l) for l in lines]
  kept = [l.rstrip('\n') + '\n' for l, s in zip(lines, steps)
          if s is not None and s <= step]
  if kept == lines:
    return
  tmp = path.parent / f'{HISTORY}.tmp'
  tmp.write_text(''.join(kept))
  tmp.replace(path)
  logging.info('Cut %s back to step %d: dropped %d later rows and %d torn or '
               'damaged lines.', path, step,
               len(lines) - len(kept) - steps.count(None), steps.count(None))


class _RewrittenFile:
  """A file open for appending where there are no appends (Cloud Storage):
  its content is kept in memory and the whole object rewritten on flush."""

  def __init__(self, path):
    self._path = epath.Path(path)
    self._buffer = io.BytesIO()
    if self._path.exists():
      self._buffer.write(self._path.read_bytes())
    self._dirty = False

  def write(self, data):
    self._buffer.write(data.encode() if isinstance(data, str) else data)
    self._dirty = True

  def flush(self):
    if self._dirty:
      self._path.write_bytes(self._buffer.getvalue())
      self._dirty = False

  def close(self):
    self.flush()


class _GuardedFile:
  """A TensorBoard event file whose write errors are kept in `errors`, not
  raised: tensorboardX writes from a thread that dies on an error, after which
  its bounded queue fills and the next `add_scalar` blocks for ever (a full
  disk hung the run). MetricWriter raises the kept error in the main thread."""

  def __init__(self, file, errors):
    self._file, self._errors = file, errors

  def _guarded(self, method, *args):
    if self._errors:
      return  # The first error is reported; the rest are its echoes.
    try:
      getattr(self._file if method != 'fsync' else self, method)(*args)
    except Exception as e:  # pylint: disable=broad-except
      self._errors.append(e)

  def write(self, data):
    self._guarded('write', data)

  def flush(self):
    self._guarded('flush')
    if hasattr(self._file, 'fileno'):  # A local file: to disk (tensorboardX
      self._guarded('fsync')            # does this for the files it opens).

  def fsync(self):
    os.fsync(self._file.fileno())

  def close(self):
    self._guarded('close')


# tensorboardX picks a record writer by the logdir's scheme: local logdirs
# are given this one, so that their files are guarded as gs:// ones are.
LOCAL_SCHEME = 'gan-jax-local'


class _RecordWriterFactory:
  """tensorboardX's record writers, guarded: local files, and gs:// objects
  through epath (`_RewrittenFile`)."""

  errors = {}  # {TensorBoard folder: its files' write errors}.

  def open(self, path):
    if path.startswith(LOCAL_SCHEME + ':'):
      path = path[len(LOCAL_SCHEME) + 1:]
      file = open(path, 'wb')
    else:
      file = _RewrittenFile(path)
    errors = self.errors.setdefault(os.path.dirname(path), [])
    return _GuardedFile(file, errors)

  def directory_check(self, path):
    if path.startswith(LOCAL_SCHEME + ':'):
      os.makedirs(path[len(LOCAL_SCHEME) + 1:], exist_ok=True)
    # Cloud Storage has no folders to create.


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX imports torch when it is installed (`try: import torch`), only
  to accept torch tensors; that import takes seconds, in every process of
  every run. Only numpy and floats are written here, so unless something has
  imported torch already, the import is made to fail.
  """
  block = 'torch' not in sys.modules
  if block:
    sys.modules['torch'] = None  # `import torch` raises ImportError.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if block and sys.modules.get('torch', 0) is None:
      del sys.modules['torch']
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  for scheme in ('gs', LOCAL_SCHEME):
    record_writer.register_writer_factory(scheme, _RecordWriterFactory())
  return tensorboardX.SummaryWriter


def write_error(path, e):
  """The UserError of a failed write to `path` in the workdir."""
  return UserError(f'cannot write {path} ({getattr(e, "strerror", None) or e});'
                   ' free disk space or fix the folder, then launch again with '
                   'the same --workdir to resume from the last checkpoint')


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and scalars/images to TensorBoard; a
  failed write (disk full, folder gone) is a UserError."""

  def __init__(self, workdir, resumed_step=None):
    """`resumed_step`: for a training launch, the step it starts from (0:
    none restored); TensorBoard then hides the events of the later steps that
    earlier launches logged (tensorboardX's `purge_step`), as `trim_history`
    drops their metrics.jsonl rows. None (--mode=eval) hides nothing."""
    self.active = jax.process_index() == 0
    if not self.active:
      return
    SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
    workdir = workdir_lib.absolute(workdir)
    self._tb_dir = (f'{workdir}/tensorboard' if workdir_lib.is_remote(workdir)
                    else os.path.join(workdir, 'tensorboard'))
    # Before the writer opens its file: an earlier writer's errors are not its.
    self._errors = _RecordWriterFactory.errors.setdefault(self._tb_dir, [])
    self._errors.clear()
    # Also when nothing was restored: a launch killed before its first
    # checkpoint may have logged steps that are trained again.
    purge = resumed_step is not None and (
        resumed_step > 0 or epath.Path(self._tb_dir).exists())
    if workdir_lib.is_remote(workdir):
      self._history = f'{workdir}/{HISTORY}'
      self._jsonl = _RewrittenFile(self._history)
      logdir = self._tb_dir
    else:
      self._history = os.path.join(workdir, HISTORY)
      self._jsonl = open(self._history, 'a')
      logdir = f'{LOCAL_SCHEME}:{self._tb_dir}'
    # tensorboardX names a file by the second and host: a suffix of its own
    # keeps a second writer in the same second from truncating the first's.
    self._tb = SummaryWriter(logdir, purge_step=(resumed_step + 1 if purge
                                                 else None),
                             filename_suffix=f'.{uuid.uuid4().hex[:8]}')

  def _check_tensorboard(self):
    if self._errors:
      raise write_error(self._tb_dir, self._errors[0])

  def _write_history(self, text):
    try:
      if text:
        self._jsonl.write(text)
      self._jsonl.flush()
    except workdir_lib.storage_errors() as e:
      raise write_error(self._history, e) from None

  def write_scalars(self, step, scalars, info=None):
    """`info`: {key: JSON value} that is not a scalar, e.g. which feature
    networks an evaluation's numbers were computed with: in the metrics.jsonl
    row, and as a text (the JSON) in TensorBoard."""
    if not self.active:
      return
    self._check_tensorboard()
    scalars = {k: float(v) for k, v in scalars.items()}
    info = info or {}
    self._write_history(json.dumps({'step': int(step), **scalars, **info})
                        + '\n')
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))
    for k, v in info.items():  # A code block: paths are not Markdown.
      self._tb.add_text(k, f'```\n{json.dumps(v, indent=1)}\n```', int(step))

  def write_image(self, step, name, image):
    """`image`: uint8 `[H, W, C]`."""
    if not self.active:
      return
    self._check_tensorboard()
    self._tb.add_image(name, np.asarray(image), int(step), dataformats='HWC')

  def flush(self):
    if self.active:
      self._write_history('')
      self._tb.flush()
      self._check_tensorboard()

  def close(self):
    if self.active:
      try:
        self._jsonl.close()
      except workdir_lib.storage_errors() as e:
        raise write_error(self._history, e) from None
      finally:
        self._tb.close()
      self._check_tensorboard()


def save_npz(path, arrays):
  """Writes {name: array} to `path` (local or gs://) with numpy's `savez`
  (whose members carry a fixed date: the same arrays give the same bytes),
  to PATH.tmp, then renamed over `path`. For gs:// the zip is written to a
  local temporary file first: zipfile marks a stream it cannot seek back in
  (an upload) with data descriptors, which would give other bytes."""
  path = epath.Path(path)
  tmp = path.parent / f'{path.name}.tmp'
  if workdir_lib.is_remote(path):
    with tempfile.TemporaryFile() as local, tmp.open('wb') as f:
      np.savez(local, allow_pickle=False, **arrays)
      local.seek(0)
      shutil.copyfileobj(local, f, 1 << 24)
  else:
    with tmp.open('wb') as f:
      np.savez(f, allow_pickle=False, **arrays)
  tmp.replace(path)
