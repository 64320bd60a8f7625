"""Per-example random streams that do not depend on the device layout.

Every random draw of the train step (noise z, interpolation weights) comes from
a key folded with the example's index in the *global* batch, so the same seed
and global batch give the same numbers on 1 device or on 64, on one host or on
many. Each step gets its own key (`fold_in(seed_key, step)`), each update in
it its own (`fold_in(step_key, j)`: D updates j = 0 .. d_steps-1, the G update
d_steps; gan_jax/step.py) and each kind of draw its own stream
(`fold_in(update_key, STREAM)`). Shared on purpose or harmlessly: within an
update the dropout key serves G's and D's passes and the penalty's D pass (the
same D masks for the loss and the penalty), and the logged diversity metric
(gan_jax/diversity.py) draws with `fold_in(fold_in(seed_key, step),
DIVERSITY)` after the step, which is the next step's update-4 key: its noise is
that of the next step's fifth D update when d_steps is 5, or of its G update
when d_steps is 4 (a metric, not a training draw).
"""
import jax
import jax.numpy as jnp

# Stream ids: one per kind of draw in a train step.
NOISE, PENALTY, DROPOUT, AUGMENT, DIVERSITY = range(5)


def example_keys(key, first_index, batch_size):
  """Keys for examples `first_index ... first_index + batch_size - 1`."""
  index = first_index + jnp.arange(batch_size)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)


def normal(keys, shape, dtype=jnp.float32):
  """One standard-normal draw of `shape` per key: result `[len(keys), *shape]`."""
  return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def uniform(keys, shape, dtype=jnp.float32):
  """One U[0, 1) draw of `shape` per key: result `[len(keys), *shape]`."""
  return jax.vmap(lambda k: jax.random.uniform(k, shape, dtype))(keys)
