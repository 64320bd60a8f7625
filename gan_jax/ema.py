"""An exponential moving average of G's parameters, to sample from.

Yazici et al. 2019 ("The Unusual Effectiveness of Averaging in GAN
Training"), Karras et al. 2018, and BigGAN (Brock et al. 2019), which starts
it late. `config.ema.decay` 0 is off; the train step calls `update` after
each G update when the state holds an average (`GANState.g_ema`).
"""
import optax
import jax.numpy as jnp


def decay(config) -> float:
  """`config.ema.decay`, 0 (off) when absent."""
  ema = config.get('ema')
  return float(ema.decay) if ema is not None else 0.


def update(config, ema_params, params, step):
  """The average after the G update of GAN step `step` (1-based).

  Until `config.ema.start_step` steps are done it copies G; after, ema <-
  decay * ema + (1 - decay) * params (`optax.incremental_update`).
  """
  d = jnp.where(step > config.ema.start_step, decay(config), 0.)
  return optax.incremental_update(params, ema_params, 1. - d)
