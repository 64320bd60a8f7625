"""Sampling G for evaluation: eval mode, one device, outside the train step."""
import functools

import jax

from gan_jax import labels as labels_lib


def make_generate(config):
  """`generate(g, key, num, labels=None) -> samples`; a conditional G without
  labels gets `labels.eval_labels` (class balanced)."""
  @functools.partial(jax.jit, static_argnums=(2,))
  def generate(g, key, num, labels=None):
    z = jax.random.normal(key, (num, config.z_dim))
    if labels is None:
      labels = labels_lib.eval_labels(config, num)
    kwargs = {} if labels is None else {'labels': labels}
    return g.apply_fn({'params': g.params, **g.model_state}, z, train=False,
                      **kwargs)
  return generate
