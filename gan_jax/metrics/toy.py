"""Mode-coverage metrics for Gaussian mixtures (VEEGAN, Srivastava et al. 2017;
PacGAN, Lin et al. 2018).

A sample is *high quality* when it lies within `num_std` standard deviations of
its nearest mode; a mode is *covered* when at least one high-quality sample is
nearest to it; the reverse KL is KL(p || uniform), where p is the histogram of
high-quality samples over their nearest modes (0 when every mode is hit
equally, log K when one mode has them all).
"""
import numpy as np


def mode_metrics(samples, modes, std, num_std=3.0, labels=None):
  """Returns {'modes': int, 'hq': fraction in [0, 1], 'kl': float}; with the
  `labels` a conditional G was asked for (mode indices), also 'label_acc':
  the fraction of samples that are high quality and at their label's mode."""
  samples = np.asarray(samples, np.float64).reshape(len(samples), -1)
  modes = np.asarray(modes, np.float64)
  dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)
  nearest = dist.argmin(axis=1)
  hq = dist[np.arange(len(samples)), nearest] <= num_std * std
  counts = np.bincount(nearest[hq], minlength=len(modes))
  num_hq = counts.sum()
  if num_hq == 0:
    kl = float('nan')
  else:
    p = counts / num_hq
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log(p[nz] * len(modes))))
  out = {'modes': int((counts > 0).sum()), 'hq': float(hq.mean()), 'kl': kl}
  if labels is not None:
    out['label_acc'] = float(np.mean(hq & (nearest == np.asarray(labels))))
  return out
