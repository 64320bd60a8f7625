"""Datasets, registered by name (`config.data.name`).

A dataset builder returns an iterator over this host's share of consecutive
global batches:

    build(config, host_batch_size, process_index, process_count) -> iterator

The iterator yields numpy arrays `[host_batch_size, *example_shape]` scaled to
the model's range (with `config.num_classes > 0`, tuples of those and their
int32 class labels `[host_batch_size]`, which every dataset here can give
except celeb_a), exposes `example_shape`, and has `get_state()` /
`set_state(state)` (JSON-serialisable) so that a resumed run continues from the
same position. Host `i` of `n` gets the `i`-th of `n` equal slices of every
global batch, so no example is seen twice or dropped across hosts.

To add a dataset, write the builder and register it by name:

    @data.register('my_data')
    def build(config, host_batch_size, process_index, process_count): ...

For examples in memory, `pipeline.build(pipeline.ArrayBatches(images), ...)`
meets the contract (shuffling, host shares, resumable state;
gan_jax/data/pipeline.py).
"""
from typing import Callable

from gan_jax.data import own_images
from gan_jax.data import tfds_data
from gan_jax.data import toy
from gan_jax.errors import UserError

DATASETS: dict[str, Callable] = {
    'ring8': toy.build,
    'ring_pacgan': toy.build,
    'grid25': toy.build,
    'mnist': tfds_data.build,
    'fashion_mnist': tfds_data.build,
    'cifar10': tfds_data.build,
    'celeb_a': tfds_data.build,
    'images': own_images.build,
}


def register(name: str):
  """A decorator registering a dataset builder as `config.data.name=name`."""
  def decorator(builder):
    if name in DATASETS:
      raise ValueError(f'dataset {name!r} is registered twice')
    DATASETS[name] = builder
    return builder
  return decorator


def build(config, host_batch_size, process_index=0, process_count=1):
  name = config.data.name
  if name not in DATASETS:
    raise UserError(f'unknown dataset {name!r}; set config.data.name to one of: '
                    + ', '.join(sorted(DATASETS)))
  return DATASETS[name](config, host_batch_size, process_index, process_count)
