"""Class labels in the step: conditional batches and the ACGAN loss.

With `config.num_classes = N > 0` a batch is `(images, labels)`, fakes are
generated for the real batch's labels, and a discriminator with an ACGAN head
(gan_jax/models/conditional.py) returns `(logits, class_logits)`; its
cross-entropy is added to both losses with weight
`config.conditional.acgan_weight` (Odena et al. 2017).

The labels need not be classes: with `config.conditional.labels = 'clusters'`
they are k-means clusters of the images (tools/cluster_npz.py), which lets G
keep apart modes an unconditional G blends. Training is the same; evaluation
then treats G as unconditional (no per-class grid rows or label accuracy),
since no cluster is a class, and draws the clusters as often as the data has
them: the distribution G was trained to draw.
"""
import functools
import math

import jax.numpy as jnp
import numpy as np
import optax

from gan_jax.data import own_images


LABEL_KINDS = ('classes', 'clusters')


def num_classes(config) -> int:
  """`config.num_classes`: 0 unconditional, else class-conditional G and D."""
  return config.get('num_classes', 0) or 0


def label_kind(config) -> str:
  """What the labels are: `config.conditional.labels`, one of LABEL_KINDS
  ('classes' for configs saved before the field existed)."""
  return config.get('conditional', {}).get('labels', 'classes')


def are_classes(config) -> bool:
  """Whether G is conditioned on labels that are classes (not clusters)."""
  return bool(num_classes(config)) and label_kind(config) == 'classes'


def split_batch(batch):
  """(images, labels) of a batch; labels is None when unconditional."""
  return batch if isinstance(batch, tuple) else (batch, None)


def split_d_output(out):
  """(logits, class_logits or None) of what a discriminator returned."""
  return out if isinstance(out, tuple) else (out, None)


def class_loss(class_logits, labels):
  """Mean cross-entropy of an ACGAN head."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      class_logits, labels))


def acgan_weight(config) -> float:
  """The ACGAN loss weight, 0 when D has no class head."""
  if num_classes(config) and config.conditional.d == 'acgan':
    return config.conditional.acgan_weight
  return 0.


def acgan_d_term(weight, real_class, fake_class, labels):
  """D's classification loss on real and fake examples: (term, metrics)."""
  if real_class is None:
    return 0., {}
  loss = class_loss(real_class, labels) + class_loss(fake_class, labels)
  acc = jnp.mean(jnp.argmax(real_class, -1) == labels)
  return weight * loss, {'d_class_loss': loss, 'd_class_acc': acc}


def acgan_g_term(weight, fake_class, labels):
  """G wants its fakes classified as their labels: (term, metrics)."""
  if fake_class is None:
    return 0., {}
  loss = class_loss(fake_class, labels)
  return weight * loss, {'g_class_loss': loss}


def eval_labels(config, num):
  """int32 numpy labels for `num` evaluation samples, or None when
  unconditional: classes 0, 1, ..., N-1, 0, 1, ... (class balanced);
  clusters in the proportions of the data's labels (`in_proportion`), which
  for equal clusters is the same sequence."""
  n = num_classes(config)
  if not n:
    return None
  if label_kind(config) == 'clusters':
    counts = tuple(int(c) for c in own_images.label_counts(config))
    return in_proportion(counts, num)
  return np.arange(num, dtype=np.int32) % n


@functools.lru_cache(maxsize=16)
def in_proportion(counts, num):
  """int32 [num] labels, label k drawn `counts[k] / sum(counts)` of the
  time and interleaved, by smooth weighted round-robin: each step every label
  gains its count, the one with most (the lowest on a tie) is drawn and pays
  the total. Every run of sum(counts) labels holds exactly counts[k] of label
  k; equal counts give 0, 1, ..., K-1, 0, 1, ... (read-only numpy)."""
  weights = np.array(counts, np.int64) // max(functools.reduce(math.gcd,
                                                              counts), 1)
  total = int(weights.sum())
  credit, labels = np.zeros_like(weights), np.empty(min(num, total), np.int32)
  for i in range(len(labels)):
    credit += weights
    labels[i] = np.argmax(credit)
    credit[labels[i]] -= total
  labels = np.resize(labels, num)  # Repeats the period.
  labels.flags.writeable = False
  return labels
