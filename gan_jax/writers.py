"""Metric output: a JSONL file and TensorBoard events in the workdir.

Only process 0 writes; on other hosts the writer does nothing. TensorBoard
events come from tensorboardX, which needs no TensorFlow.
"""
import json
import os

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and scalars/images to TensorBoard."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step, scalars):
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))

  def write_image(self, step, name, image):
    """`image`: uint8 `[H, W, C]`."""
    if not self.active:
      return
    self._tb.add_image(name, np.asarray(image), int(step), dataformats='HWC')

  def flush(self):
    if self.active:
      self._jsonl.flush()
      self._tb.flush()

  def close(self):
    if self.active:
      self._jsonl.close()
      self._tb.close()
