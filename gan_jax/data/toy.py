"""Mixtures of Gaussians in 2D, generated in-process (no download).

`ring8`: `num_modes` modes evenly spaced on a circle of `radius` (default 8
modes, radius 2, std 0.02); `ring_pacgan` the same with PacGAN's radius 1 and
std 0.01. `grid25`: a `grid_size` x `grid_size` grid with
`grid_spacing` between modes, centred on 0 (default 5 x 5 on {-4,-2,0,2,4}^2,
std 0.05). Every mode has the same weight. With `config.num_classes` (= the
number of modes) each point is labelled by its mode, for conditional GANs. These are the benchmarks of the
mode-collapse literature (Metz et al. 2017, VEEGAN, PacGAN).

Global batch `k` is drawn from a numpy generator seeded with
`(config.data.seed, k)`, so batches do not depend on the device or host layout
and the iterator's whole state is `k`.
"""
import numpy as np

from gan_jax.data import pipeline
from gan_jax.errors import UserError

DEFAULTS = {
    'ring8': dict(num_modes=8, radius=2.0, std=0.02),
    # PacGAN's ring (Lin et al. 2018, Table 2): radius 1, std 0.01.
    'ring_pacgan': dict(num_modes=8, radius=1.0, std=0.01),
    'grid25': dict(grid_size=5, grid_spacing=2.0, std=0.05),
}

# At most this many modes (a 31 x 31 grid): evaluation measures every
# sample's distance to every mode. The fields' types and signs are checked
# at start-up (gan_jax/checks.py).
MAX_MODES = 1000


def _get(config, field):
  value = config.data.get(field)
  return DEFAULTS[config.data.name][field] if value is None else value


def _check_count(name, count, field):
  if count > MAX_MODES:
    raise UserError(f'{name} would have {count} modes, more than {MAX_MODES}; '
                    f'pass a smaller --config.data.{field}=N')


def mixture(config):
  """The mixture's modes `[K, 2]` and per-coordinate standard deviation."""
  name = config.data.name
  if name in ('ring8', 'ring_pacgan'):
    k = _get(config, 'num_modes')
    _check_count(name, k, 'num_modes')
    angles = 2 * np.pi * np.arange(k) / k
    modes = _get(config, 'radius') * np.stack([np.cos(angles), np.sin(angles)], -1)
  elif name == 'grid25':
    n, spacing = _get(config, 'grid_size'), _get(config, 'grid_spacing')
    _check_count(name, n * n, 'grid_size')
    axis = (np.arange(n) - (n - 1) / 2) * spacing
    modes = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  else:
    raise ValueError(f'{name!r} is not a toy dataset')
  return modes.astype(np.float32), float(_get(config, 'std'))


def sample(modes, std, num, np_rng, labels=False):
  """`num` points; with `labels`, also the index of each point's mode."""
  idx = np_rng.integers(len(modes), size=num)
  points = (modes[idx] + std * np_rng.standard_normal((num, 2))).astype(np.float32)
  return (points, idx.astype(np.int32)) if labels else points


class MixtureIterator:
  """This host's slices of consecutive global batches of a Gaussian mixture."""

  def __init__(self, modes, std, seed, host_batch_size, process_index,
               process_count, labels=False):
    self.modes, self.std, self.seed, self.labels = modes, std, seed, labels
    self.host_batch_size = host_batch_size
    self.process_index, self.process_count = process_index, process_count
    self.example_shape = (2,)
    self.batch_index = 0

  def __iter__(self):
    return self

  def __next__(self):
    np_rng = np.random.default_rng([self.seed, self.batch_index])
    batch = sample(self.modes, self.std,
                   self.host_batch_size * self.process_count, np_rng,
                   self.labels)
    self.batch_index += 1
    start = self.process_index * self.host_batch_size
    take = lambda a: a[start:start + self.host_batch_size]
    return tuple(map(take, batch)) if self.labels else take(batch)

  def get_state(self):
    return {'batch_index': self.batch_index}

  def set_state(self, state):
    self.batch_index = int(state['batch_index'])


def build(config, host_batch_size, process_index, process_count):
  """The mixture's points; with num_classes, labelled by their mode."""
  modes, std = mixture(config)
  n = pipeline.num_classes(config)
  if n and n != len(modes):
    raise UserError(f'{config.data.name} has {len(modes)} modes, the classes of '
                    f'a conditional run, but num_classes is {n}; pass '
                    f'--config.num_classes={len(modes)}')
  return MixtureIterator(modes, std, config.data.seed, host_batch_size,
                         process_index, process_count, labels=n > 0)
