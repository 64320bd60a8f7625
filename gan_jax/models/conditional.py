"""Class-conditional GANs: how labels enter the generator and discriminator.

With `config.num_classes = N > 0` the data comes with labels in [0, N) (see
gan_jax/data), fake batches are generated for the labels of the real batch,
and both networks take the labels:

  G: `config.conditional.g`
    'concat': the one-hot label is concatenated to z (the conditional GAN of
        Mirza & Osindero 2014): works with every generator, which sees a
        z_dim + N input.
    'cbn': conditional BatchNorm: every BatchNorm of G normalises with the
        batch's statistics (shared by all classes) and then scales and
        shifts by a learned per-class gamma and beta (de Vries et al. 2017;
        the generator of Miyato & Koyama 2018), initialised to 1 and 0; z
        alone is G's input. For the generators with BatchNorm (dcgan,
        dcgan_mnist, sngan_resnet with g.norm 'batch').
  D: `config.conditional.d`, the discriminator's last layer on its features h
    'projection': logit = dense(h) + <embed(y), h> (Miyato & Koyama 2018); the
        embedding is spectrally normalised when D's layers are.
    'acgan': logit = dense(h), plus an auxiliary classifier head
        dense_N(h) trained with cross-entropy on real and fake examples
        (Odena et al. 2017), weight `config.conditional.acgan_weight` in both
        losses; D then returns (logits, class_logits).

A discriminator supports conditioning by ending in `output_layer`, which with
N = 0 creates exactly the unconditional final Dense (same parameter names, so
unconditional checkpoints are unaffected). A generator supports 'cbn' by
taking `labels` and a `num_classes` field (from `cbn_classes`) and normalising
with `batch_norm`, which with num_classes = 0 is the unconditional BatchNorm.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax import labels as labels_lib
from gan_jax.errors import UserError
from gan_jax.models import common

G_MODES = ('concat', 'cbn')
D_HEADS = ('projection', 'acgan')


num_classes = labels_lib.num_classes


def _field(config, name, choices):
  value = config.conditional[name]
  if value not in choices:
    raise UserError(f'unknown config.conditional.{name} {value!r}; use one of: '
                    + ', '.join(choices))
  return value


def d_head(config) -> str:
  """The discriminator's conditional head (checked), '' when unconditional."""
  return _field(config, 'd', D_HEADS) if num_classes(config) else ''


def cbn_classes(config, model: str, g_norm: str) -> int:
  """The `num_classes` of a generator's conditional BatchNorm: N with
  `conditional.g='cbn'`, else 0. Raises UserError when G's norm is not
  BatchNorm."""
  if not num_classes(config) or _field(config, 'g', G_MODES) != 'cbn':
    return 0
  if g_norm != 'batch':
    raise UserError(
        f"config.conditional.g='cbn' makes the {model} generator's BatchNorm "
        f'class-conditional, but config.g.norm is {g_norm!r}; set '
        "config.g.norm=batch or config.conditional.g=concat")
  return num_classes(config)


class ConditionalBatchNorm(nn.Module):
  """BatchNorm without its own scale and shift, then the label's: x_hat *
  gamma[y] + beta[y] (per-class embeddings 'scale' and 'bias', [N, C])."""
  num_classes: int
  train: bool
  dtype: Any = jnp.float32
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, labels):
    x = common.batch_norm(self.train, self.dtype, self.momentum, self.epsilon,
                          affine=False)(x)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)

    def per_class(name, init):
      embed = nn.Embed(self.num_classes, x.shape[-1], dtype=self.dtype,
                       param_dtype=jnp.float32, embedding_init=init, name=name)
      return embed(labels).reshape(shape)

    return (x * per_class('scale', nn.initializers.ones)
            + per_class('bias', nn.initializers.zeros))


def batch_norm(train: bool, dtype, momentum: float = 0.9,
               epsilon: float = 1e-5, num_classes_: int = 0, labels=None):
  """x -> BatchNorm(x) for a generator: `common.batch_norm` when num_classes_
  is 0, else `ConditionalBatchNorm` on `labels`. Call from inside a compact
  `__call__`."""
  if not num_classes_:
    return common.batch_norm(train, dtype, momentum, epsilon)
  return lambda x: ConditionalBatchNorm(num_classes_, train, dtype, momentum,
                                        epsilon)(x, labels)


class ConditionalGenerator(nn.Module):
  """Wraps a generator. 'concat': z -> [z, one_hot(labels)] -> base; 'cbn':
  base(z, labels=labels), whose BatchNorms are conditional."""
  base: nn.Module
  num_classes: int
  mode: str = 'concat'

  def __call__(self, z, train: bool = True, labels=None):
    if self.mode == 'cbn':
      return self.base(z, train, labels=labels)
    one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)
    return self.base(jnp.concatenate([z, one_hot], axis=-1), train)


def wrap_generator(config, generator):
  """The generator `config` asks for: `generator` itself when unconditional."""
  n = num_classes(config)
  if not n:
    return generator
  mode = _field(config, 'g', G_MODES)
  if mode == 'cbn' and not getattr(generator, 'num_classes', 0):
    raise UserError(
        f"config.conditional.g='cbn' needs a generator with BatchNorm "
        f'(dcgan, dcgan_mnist, sngan_resnet); model {config.model!r} has '
        "none: use config.conditional.g=concat")
  return ConditionalGenerator(generator, n, mode)


def output_layer(h, labels, num_classes_, head, dense, layer=lambda m, x: m(x)):
  """A discriminator's last layer on features h [B, F]: float32 logits [B],
  or (logits, class_logits [B, N]) for the ACGAN head.

  `dense(features)` builds a Dense layer as the discriminator does (dtype,
  initialiser); `layer(module, x)` applies a module, e.g. spectrally
  normalised. Call from inside the discriminator's compact `__call__`.
  """
  logits = layer(dense(1), h)[:, 0]
  if not num_classes_:
    return logits.astype(jnp.float32)
  if head == 'projection':
    embed = nn.Embed(num_classes_, h.shape[-1], dtype=h.dtype,
                     param_dtype=jnp.float32, name='class_embedding')
    logits = logits + jnp.sum(layer(embed, labels) * h, axis=-1)
    return logits.astype(jnp.float32)
  if head == 'acgan':
    class_logits = layer(dense(num_classes_), h)
    return logits.astype(jnp.float32), class_logits.astype(jnp.float32)
  raise ValueError(f'unknown head {head!r}')
