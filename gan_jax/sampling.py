"""Sampling G for evaluation: eval mode, outside the train step.

`make_generate` draws a few samples on one device (pictures, toy data). The
image metrics draw numbered samples, `sample_rows(start, stop)`, sample i
always the same whoever draws it: `make_sample_rows` on all of this
process's devices, `rows_from` from any `generate` function. `draw` puts
samples 0 .. num-1 together from every process's share (--mode=sample).
"""
import functools

import flax.linen as nn
import jax
import numpy as np

from gan_jax import labels as labels_lib
from gan_jax.metrics import shards


def make_generate(config):
  """`generate(g, key, num, labels=None) -> samples`; a conditional G without
  labels gets `labels.eval_labels`. Its attribute
  `sample_rows(g, key, batch)` is `make_sample_rows` for this config."""
  @functools.partial(jax.jit, static_argnums=(2,))
  def jitted(g, key, num, labels):
    z = jax.random.normal(key, (num, config.z_dim))
    if labels is None:
      labels = labels_lib.eval_labels(config, num)
    kwargs = {} if labels is None else {'labels': labels}
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=False,
                      **kwargs)

  def generate(g, key, num, labels=None):
    return jitted(g, key, num, labels)
  generate.sample_rows = functools.partial(make_sample_rows, config)
  return generate


def rows_from(generate, g, key, batch):
  """`sample_rows(start, stop)` of any `generate(g, key, num)`: sample i is
  row i % `batch` of `generate(g, fold_in(key, i // batch + 1), batch)`, the
  samples `make_sample_rows` draws (on one device, whole batches)."""
  last = {}  # The batches of the previous call: consecutive calls share one.

  def sample_rows(start, stop):
    first = start // batch
    drawn = {b: last.get(b) for b in range(first, (stop - 1) // batch + 1)}
    for b, images in drawn.items():
      if images is None:
        drawn[b] = np.asarray(generate(g, jax.random.fold_in(key, b + 1),
                                       batch))
    last.clear()
    last.update(drawn)
    images = np.concatenate(list(drawn.values()))
    return images[start - first * batch:stop - first * batch]
  return sample_rows


@functools.partial(jax.jit, static_argnums=(2, 3))
def _noise(key, index, batch, z_dim):
  """The z of noise batch `index`: what `generate` draws from its key."""
  return jax.random.normal(jax.random.fold_in(key, index + 1), (batch, z_dim))


@functools.lru_cache(maxsize=8)
def _sharded_apply(model, conditional, devices):
  """(G's eval-mode apply jitted with the rows sharded over `devices`, the
  rows' sharding, the replicated one). Keyed by `model`, G's module (or its
  apply function), so a G rebuilt for another checkpoint reuses the program."""
  mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  rows = jax.NamedSharding(mesh, jax.P('devices'))
  replicated = jax.NamedSharding(mesh, jax.P())
  apply_fn = model.apply if isinstance(model, nn.Module) else model

  def apply(variables, z, labels):
    kwargs = {'labels': labels} if conditional else {}
    return apply_fn(variables, z, train=False, **kwargs)
  return (jax.jit(apply, in_shardings=(replicated, rows, rows),
                  out_shardings=rows), rows, replicated)


def row_labels(config, start, stop, batch):
  """The labels of samples start .. stop-1 of `make_sample_rows` (int32; 0
  for an unconditional G): row i of its noise batch has label i of
  `eval_labels(config, batch)`."""
  labels = labels_lib.eval_labels(config, batch)
  if labels is None:
    return np.zeros(stop - start, np.int32)
  return labels[np.arange(start, stop) % batch]


def make_sample_rows(config, g, key, batch, devices=None):
  """`sample_rows(start, stop) -> float32 numpy [stop - start, ...]`: samples
  start .. stop-1 of G (one copy of its NetState), on `devices` (default:
  this process's).

  Sample i has noise row i % `batch` of `normal(fold_in(key, i // batch + 1),
  (batch, z_dim))` and, for a conditional G, label `eval_labels` of that
  row: what `make_generate` draws for `batch` samples from that key. So the
  samples do not depend on how the rows are split over calls, devices or
  hosts. Calls of up to `batch` rows compile G once (padded to that).
  """
  devices = tuple(devices or jax.local_devices())
  module = getattr(g.apply_fn, '__self__', None)
  model = module if isinstance(module, nn.Module) else g.apply_fn
  classes = labels_lib.num_classes(config)
  apply, rows, replicated = _sharded_apply(model, bool(classes), devices)
  variables = jax.device_put({'params': g.params, **g.model_state},
                             replicated)
  padded = -(-batch // len(devices)) * len(devices)

  def sample_rows(start, stop):
    if not 0 < stop - start <= batch:
      raise ValueError(f'rows {start}..{stop - 1}: 1 to {batch} at a time')
    first, last = start // batch, (stop - 1) // batch
    z = np.concatenate([np.asarray(_noise(key, b, batch, config.z_dim))
                        for b in range(first, last + 1)])
    z = z[start - first * batch:stop - first * batch]
    labels = row_labels(config, start, stop, batch)
    pad = padded - len(z)
    z = np.pad(z, ((0, pad), (0, 0)))
    labels = np.pad(labels, (0, pad)).astype(np.int32)
    z, labels = jax.device_put((z, labels), rows)  # Not numpy: sharded.
    return np.asarray(apply(variables, z, labels))[:stop - start]
  return sample_rows


def draw(config, g, key, num, batch):
  """(samples, labels) 0 .. num-1 of `make_sample_rows(config, g, key,
  batch)` as numpy on every process: float32 `[num, ...]`, and int32 `[num]`
  for a conditional G (else None).

  Each process draws its share of the rows on its own devices and the shares
  are gathered (gan_jax/metrics/shards.py), as the image metrics do; so the
  samples do not depend on the number of hosts or devices, nor on `num`
  (sample i is the same in a larger draw).
  """
  sample_rows = make_sample_rows(config, g, key, batch)
  per = shards.chunk_size(num, batch)
  mine = shards.rows(num, per)
  pieces = []
  for lo in range(0, len(mine), per):  # Each piece: consecutive rows.
    start, stop = int(mine[lo]), int(mine[min(lo + per, len(mine)) - 1]) + 1
    pieces.append(np.asarray(sample_rows(start, stop), np.float32))
  if not pieces:  # Fewer samples than hosts: none here, but their shape.
    pieces.append(np.asarray(sample_rows(0, 1), np.float32)[:0])
  samples = shards.gather({'samples': np.concatenate(pieces)}, num,
                          per)['samples']
  classes = labels_lib.num_classes(config)
  return samples, (row_labels(config, 0, num, batch) if classes else None)
