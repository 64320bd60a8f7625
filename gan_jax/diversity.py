"""A cheap mode-collapse alarm: the diversity ratio of generated samples.

mean pairwise L2 distance within a generated global batch over that within
the real one: near 1 when G's samples are as spread out as the data, near 0
when G collapses to a point (in the spirit of the minibatch features of
Salimans et al. 2016 and the pairwise diversity of Lin et al. 2018).

It costs two B x B Gram matrices over the gathered global batch, so the train
loop computes it only at log steps (`make_diversity`), not inside the step.
"""
import jax
import jax.numpy as jnp
from jax import lax

from gan_jax import labels as labels_lib
from gan_jax import rng
from gan_jax import step as step_lib
from gan_jax.axis import AXIS

# Added under square roots of squared distances (finite, defined at 0).
DIST_EPS = 1e-12


def mean_pairwise_distance(x):
  """Mean L2 distance between the distinct pairs of examples of `x`."""
  n = x.shape[0]
  x = x.reshape(n, -1).astype(jnp.float32)
  sq = jnp.sum(x ** 2, axis=-1)
  gram = jnp.matmul(x, x.T, precision=lax.Precision.HIGHEST)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2. * gram, 0.)
  off_diagonal = 1. - jnp.eye(n, dtype=jnp.float32)
  return jnp.sum(jnp.sqrt(d2 + DIST_EPS) * off_diagonal) / (n * (n - 1))


def diversity_ratio(fake, real):
  """mean_pairwise_distance(fake) / mean_pairwise_distance(real)."""
  return (mean_pairwise_distance(fake)
          / jnp.maximum(mean_pairwise_distance(real), DIST_EPS))


def make_diversity(config):
  """`diversity(state, batch) -> ratio`, per device, to `pmap` over AXIS.

  G (in training mode, as the step runs it; its statistics are not kept)
  generates one global batch for the labels of `batch` (this device's share
  of a real global batch); the ratio is over the gathered global batches, so
  it does not depend on the device count.
  """
  def diversity(state, batch):
    real, labels = labels_lib.split_batch(batch)
    n = real.shape[0]
    key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                             rng.DIVERSITY)
    fake, _ = step_lib.generate(config, state.g, state.g.params, key,
                                lax.axis_index(AXIS) * n, n, labels)
    return diversity_ratio(lax.all_gather(fake, AXIS, tiled=True),
                           lax.all_gather(real, AXIS, tiled=True))
  return diversity
