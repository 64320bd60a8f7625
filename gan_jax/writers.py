"""Metric output: a JSONL file and TensorBoard events in the workdir.

Only process 0 writes; on other hosts the writer does nothing. TensorBoard
events come from tensorboardX, which needs no TensorFlow.
"""
import json
import os
import sys

import jax
import numpy as np


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX imports torch when it is installed (`try: import torch`), only
  to accept torch tensors; that import takes seconds, in every process of
  every run. Only numpy and floats are written here, so unless something has
  imported torch already, the import is made to fail.
  """
  block = 'torch' not in sys.modules
  if block:
    sys.modules['torch'] = None  # `import torch` raises ImportError.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if block and sys.modules.get('torch', 0) is None:
      del sys.modules['torch']
  return tensorboardX.SummaryWriter


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and scalars/images to TensorBoard."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
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
