"""Periodic evaluation: sample-quality metrics and pictures of samples."""
import os

import jax
import numpy as np

from gan_jax import plots
from gan_jax.data import toy
from gan_jax.metrics import toy as toy_metrics


def _save_picture(image, step, workdir, writer):
  """samples/step_XXXXXXX.png in the workdir (process 0) and TensorBoard."""
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'samples'), exist_ok=True)
    plots.save_png(image, os.path.join(workdir, 'samples', f'step_{step:07d}.png'))
  writer.write_image(step, 'samples', image)


def evaluate(config, generate, g_state, step, workdir, writer):
  """Evaluates the generator `g_state` (one copy); returns scalar metrics.

  The noise is drawn from the fixed key `config.eval.seed`, so the pictures of
  successive evaluations show the same z and are comparable over time.
  Toy data: mode coverage of `config.eval.num_samples` samples and a scatter
  plot of generated (red) vs real (grey) points. Images: a grid of
  `config.eval.grid_rows`^2 samples.
  """
  key = jax.random.PRNGKey(config.eval.seed)
  if config.data.name in toy.DEFAULTS:
    fake = np.asarray(generate(g_state, key, config.eval.num_samples))
    modes, std = toy.mixture(config)
    m = toy_metrics.mode_metrics(fake, modes, std)
    real = toy.sample(modes, std, config.eval.num_samples,
                      np.random.default_rng(config.eval.seed))
    _save_picture(plots.scatter(real, fake), step, workdir, writer)
    return {'modes': m['modes'], 'hq': m['hq'], 'kl': m['kl']}
  rows = config.eval.grid_rows
  fake = np.asarray(generate(g_state, key, rows * rows))
  _save_picture(plots.image_grid(fake, rows), step, workdir, writer)
  return {}
