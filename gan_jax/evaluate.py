"""Periodic evaluation: sample-quality metrics and pictures of samples."""
import os

import jax
import numpy as np

from gan_jax import plots
from gan_jax.data import toy
from gan_jax.metrics import toy as toy_metrics


def evaluate(config, generate, g_state, step, workdir, writer):
  """Evaluates the generator `g_state` (one copy); returns scalar metrics.

  Toy data: mode coverage of `config.eval.num_samples` samples and a scatter
  plot `samples/step_XXXXXXX.png` of generated (red) vs real (grey) points.
  """
  key = jax.random.PRNGKey(config.eval.seed)  # Fixed: comparable over time.
  fake = np.asarray(generate(g_state, key, config.eval.num_samples))
  results = {}
  if config.data.name in toy.DEFAULTS:
    modes, std = toy.mixture(config)
    m = toy_metrics.mode_metrics(fake, modes, std)
    results = {'modes': m['modes'], 'hq': m['hq'], 'kl': m['kl']}
    real = toy.sample(modes, std, config.eval.num_samples,
                      np.random.default_rng(config.eval.seed))
    image = plots.scatter(real, fake)
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
      plots.save_png(image, os.path.join(workdir, 'samples', f'step_{step:07d}.png'))
    writer.write_image(step, 'samples', image)
  return results
