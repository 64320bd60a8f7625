"""Evaluation split over the processes of a multi-host run, and put together.

Generated samples and the real images of reference statistics are numbered
0 .. num-1 in one global order that does not depend on the number of
processes. They are made in chunks of `per` consecutive rows; global chunk c
is rows c*G .. (c+1)*G - 1 with G = per * process_count, and process i makes
its i-th slice of `per` rows of every chunk (the last chunk is cut at num,
so a process can have fewer rows). That is how the data builders split a
global batch over hosts (gan_jax/data/pipeline.py), so a process's real
batches are its rows. Each process embeds its rows with its own devices; the
features are then gathered (`gather`), in the global order, so process 0
computes every metric from the arrays one process would have embedded, and
`broadcast`s the numbers: every host returns the same ones.

With one process there are no collectives: `rows` is 0 .. num-1, `gather`
and `broadcast` return their input.
"""
import json

import jax
import numpy as np
from jax.experimental import multihost_utils

# Rows of one feature array gathered per collective: ~64 MiB from each
# process, so 50k x 2048 float32 features do not need P x 400 MB at once.
_GATHER_BYTES = 1 << 26


def chunk_size(num, batch_size, count=None):
  """Rows per chunk: `batch_size`, or fewer when `num` is small, so that
  every process has rows (all do when num >= count)."""
  count = jax.process_count() if count is None else count
  return max(1, min(batch_size, num // count))


def rows(num, per, index=None, count=None):
  """Global indices (sorted) of the rows of process `index` of `count`."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  starts = np.arange(0, num, per * count) + index * per
  return np.concatenate(
      [np.arange(s, min(s + per, num)) for s in starts if s < num] or
      [np.zeros((0,), np.int64)])


def gather(local, num, per):
  """{name: [num, ...]} in the global order from this process's rows.

  `local`: {name: array [len(rows(num, per)), ...]}; every process calls this
  with the same names, trailing shapes and dtypes.
  """
  count = jax.process_count()
  mine = rows(num, per)
  for name, value in local.items():
    if len(value) != len(mine):
      raise ValueError(f'{name}: {len(value)} rows, expected {len(mine)}')
  if count == 1:
    return dict(local)
  width = len(rows(num, per, 0))  # Process 0 has the most rows.
  owners = [rows(num, per, i) for i in range(count)]
  out = {}
  for name, value in local.items():
    value = np.asarray(value)
    padded = np.zeros((width, *value.shape[1:]), value.dtype)
    padded[:len(value)] = value
    out[name] = np.zeros((num, *value.shape[1:]), value.dtype)
    step = max(1, _GATHER_BYTES // max(1, padded[:1].nbytes))
    for lo in range(0, width, step):
      part = np.asarray(multihost_utils.process_allgather(padded[lo:lo + step]))
      for i, owned in enumerate(owners):  # part[i]: process i's rows lo...
        owned = owned[lo:lo + step]
        out[name][owned] = part[i, :len(owned)]
  return out


def all_true(flag):
  """Whether `flag` is true on every process (a collective: all must call)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.array([bool(flag)], np.int32))
  return bool(np.all(np.asarray(flags)))


def broadcast(value):
  """Process 0's `value` (anything JSON can write) on every process (a
  collective: all must call)."""
  if jax.process_count() == 1:
    return value
  blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
  if jax.process_index() != 0:
    blob = np.zeros((0,), np.uint8)
  size = multihost_utils.broadcast_one_to_all(np.int32(len(blob)))
  padded = np.zeros((int(size),), np.int32)
  padded[:len(blob)] = blob
  padded = multihost_utils.broadcast_one_to_all(padded)
  return json.loads(np.asarray(padded).astype(np.uint8).tobytes())
