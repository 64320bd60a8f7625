"""The shuffle/shard/repeat/batch pipeline shared by the image datasets.

Given `N` examples that can be read by index, the examples are read in this
order, the same on every host:

  * epoch `e` is a permutation of `0..N-1` drawn by numpy from
    `(seed, e)`, so a new order every epoch;
  * only its first `S * G` positions are used, where `G` is the global batch
    (`host_batch_size * process_count`) and `S = N // G`: every epoch has
    exactly `S` whole global batches and the `N mod G` left-over examples (a
    different random few each epoch) are dropped, so no batch straddles two
    epochs (drop_remainder);
  * global batch `k` is positions `k*G .. (k+1)*G - 1` of that endless
    sequence, and host `i` gets its `i`-th slice of `host_batch_size`.

So hosts see disjoint examples that together make up each epoch, the global
batch does not depend on how it is split over hosts, and the iterator's whole
state is the number of host batches it has returned. `get_state()` is
`{'batch_index': k, 'num_examples': N}`; `set_state` restarts the pipeline at
batch `k` (it warns if the dataset size changed since the state was saved,
since positions then name different examples).

grain runs the pipeline: a `MapDataset` whose element `k` is host batch `k`
(its example indices are computed with numpy, then read and scaled), read
ahead by `_NUM_THREADS` threads, `_PREFETCH` batches deep, plus
`config.data.num_workers` worker processes if > 0 (grain `mp_prefetch`) for
decoding that threads cannot keep up with. Batches are identical whatever the
number of workers. The order is computed per batch rather than with grain's
per-example `shuffle`/`slice`/`batch` because those cost ~40 us of Python per
example (a ceiling of ~25k examples/s per process, measured), far below what a
small GAN on one GPU consumes; per batch, an in-memory array is read at
~600k examples/s.
"""
import functools
import os
import threading
import time

import numpy as np
from absl import flags
from absl import logging

from gan_jax.errors import UserError

_NUM_THREADS = 8  # Per process; each thread assembles a whole host batch.
_PREFETCH = 16  # Host batches read ahead per process.
_END = 2**62  # "Forever": the number of host batches the dataset claims.


def field(config, name, default=None):
  """`config.data.<name>`, or `default` when the field is absent or None."""
  value = config.data.get(name)
  return default if value is None else value


def to_float(batch):
  """uint8 [0, 255] -> float32 [-1, 1]; float input is taken as in [-1, 1]."""
  if batch.dtype == np.uint8:
    return batch.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
  return batch.astype(np.float32, copy=False)


def num_classes(config) -> int:
  """`config.num_classes`: 0 for unconditional data, else labels in [0, N)."""
  return config.get('num_classes', 0) or 0


def check_labels(labels, n, what):
  """Int32 labels in [0, n), or a UserError naming `what`."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f'the labels of {what} must be one integer per example, '
                    f'got an array of shape {labels.shape} and dtype '
                    f'{labels.dtype}')
  if len(labels) and (labels.min() < 0 or labels.max() >= n):
    raise UserError(
        f'the labels of {what} range over [{labels.min()}, {labels.max()}] '
        f'but num_classes is {n}; pass --config.num_classes='
        f'{max(int(labels.max()) + 1, 1)}')
  return labels.astype(np.int32)


def check_batch(num_examples, host_batch_size, process_count, what):
  """Raises UserError if `num_examples` cannot fill one global batch."""
  global_batch = host_batch_size * process_count
  if num_examples < global_batch:
    raise UserError(
        f'{what} has only {num_examples} examples, fewer than one global batch '
        f'of {global_batch} ({process_count} host(s) x {host_batch_size}); add '
        'data or lower --config.batch_size')


def read_each(source, preprocess=None):
  """A `read_batch` for sources read one example at a time."""
  return _ReadEach(source, preprocess)


class _ReadEach:

  def __init__(self, source, preprocess):
    self.source, self.preprocess = source, preprocess

  def __call__(self, indices):
    examples = (self.source[int(i)] for i in indices)
    if self.preprocess is not None:
      examples = map(self.preprocess, examples)
    examples = list(examples)
    if isinstance(examples[0], tuple):  # (image, label) pairs.
      return tuple(np.stack(part) for part in zip(*examples))
    return np.stack(examples)


class ArrayBatches:
  """A `read_batch` for in-memory arrays: images, or (images, labels)."""

  def __init__(self, images, labels=None):
    self.images, self.labels = images, labels

  def __call__(self, indices):
    if self.labels is None:
      return self.images[indices]
    return self.images[indices], self.labels[indices]


class HostBatches:
  """Host batch `k` of the order in the module docstring (picklable)."""

  def __init__(self, read_batch, num_examples, seed, host_batch_size,
               process_index, process_count):
    self.read_batch, self.num_examples, self.seed = read_batch, num_examples, seed
    self.host_batch_size = host_batch_size
    self.process_index, self.process_count = process_index, process_count
    self.batches_per_epoch = num_examples // (host_batch_size * process_count)
    self._cache = {}

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != '_cache'}

  def __setstate__(self, state):
    self.__dict__.update(state, _cache={})

  def _permutation(self, epoch):
    # Reading threads share this; a race only computes a permutation twice.
    perm = self._cache.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self.seed, epoch]).permutation(
          self.num_examples)
      self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
      self._cache[epoch] = perm
    return perm

  def indices(self, batch_index):
    """Example indices of this host's batch `batch_index`."""
    epoch, k = divmod(batch_index, self.batches_per_epoch)
    start = (k * self.process_count + self.process_index) * self.host_batch_size
    return self._permutation(epoch)[start:start + self.host_batch_size]

  def __call__(self, batch_index):
    batch = self.read_batch(self.indices(batch_index))
    if isinstance(batch, tuple):  # (images, labels)
      return to_float(batch[0]), np.asarray(batch[1], np.int32)
    return to_float(batch)


def die_with_parent(worker_index, worker_count, parent):
  """grain's worker init: the worker exits once process `parent` is gone.

  A training process killed with SIGKILL runs no cleanup, and its worker
  processes (hundreds of MB each) would live on, reparented. A daemon thread
  notices the new parent within a second and ends the worker. `parent` is
  the training process's pid, taken there: a worker still starting up when
  its parent is killed runs this only after being reparented, so its own
  `os.getppid()` at this point may already be the new parent.
  """
  del worker_index, worker_count

  def watch():
    while os.getppid() == parent:
      time.sleep(_PARENT_POLL_S)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()


_PARENT_POLL_S = 0.5


class GrainBatchIterator:
  """This host's batches, read ahead by grain; resumable by batch index."""

  def __init__(self, host_batches, example_shape, num_workers):
    self._host_batches = host_batches
    self._num_workers = num_workers
    self.example_shape = tuple(example_shape)
    self._batch_index = 0
    self._iterator = None  # Started on the first next(), after any set_state.

  def __iter__(self):
    return self

  def __next__(self):
    if self._iterator is None:
      self._iterator = self._start(self._batch_index)
    batch = next(self._iterator)
    self._batch_index += 1
    return batch

  def _start(self, batch_index):
    import grain  # pylint: disable=g-import-not-at-top
    ds = grain.MapDataset.range(batch_index, _END).map(self._host_batches)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=_NUM_THREADS,
                                              prefetch_buffer_size=_PREFETCH))
    if self._num_workers > 0:
      if not flags.FLAGS.is_parsed():
        # grain's worker start-up reads one of its absl flags, which raises
        # outside an absl app (tests, notebooks) unless the flags count as
        # parsed; launch.py parses them, so this only affects other callers.
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self._num_workers),
          worker_init_fn=functools.partial(die_with_parent,
                                           parent=os.getpid()))
    return iter(ds)

  def get_state(self):
    return {'batch_index': self._batch_index,
            'num_examples': self._host_batches.num_examples}

  def set_state(self, state):
    saved, now = state.get('num_examples'), self._host_batches.num_examples
    if saved is not None and int(saved) != now:
      logging.warning(
          'The dataset had %d examples when this state was saved and has %d '
          'now; resuming at batch %d of a different shuffle.', int(saved), now,
          int(state['batch_index']))
    self.close()
    self._batch_index = int(state['batch_index'])

  def close(self):
    """Stops the reading threads and worker processes, if started."""
    if self._iterator is not None:
      close = getattr(self._iterator, 'close', None)
      if close is not None:
        close()
      self._iterator = None


def build(read_batch, num_examples, example_shape, *, seed, host_batch_size,
          process_index, process_count, num_workers=0):
  """Returns a GrainBatchIterator (see the module docstring).

  Args:
    read_batch: int indices [B] -> uint8 [B, H, W, C] (or float32 in [-1, 1])
      of those examples, or a tuple (those images, int labels [B]); picklable when `num_workers > 0`, and safe to call
      from several threads. `read_each(source, preprocess)` makes one for a
      source read one example at a time.
    num_examples: at least one global batch (check with `check_batch` first,
      for a clear error).
    example_shape: (H, W, C) of one example.
    seed: shuffle seed, a non-negative integer.
    host_batch_size, process_index, process_count: this host's share.
    num_workers: grain worker processes (0: threads in this process only).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  if not (isinstance(seed, int) and seed >= 0):
    raise UserError(f'data.seed must be a non-negative integer, got {seed!r}; '
                    'pass --config.data.seed=N')
  if not (isinstance(num_workers, int) and num_workers >= 0):
    raise UserError(f'data.num_workers must be an integer >= 0, got '
                    f'{num_workers!r}; pass --config.data.num_workers=N')
  host_batches = HostBatches(read_batch, num_examples, seed, host_batch_size,
                             process_index, process_count)
  return GrainBatchIterator(host_batches, example_shape, num_workers)
