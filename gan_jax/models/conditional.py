"""Class-conditional GANs: how labels enter the generator and discriminator.

With `config.num_classes = N > 0` the data comes with labels in [0, N) (see
gan_jax/data), fake batches are generated for the labels of the real batch,
and both networks take the labels:

  G: `config.conditional.g`
    'concat': the one-hot label is concatenated to z (the conditional GAN of
        Mirza & Osindero 2014): works with every generator, which sees a
        z_dim + N input.
  D: `config.conditional.d`, the discriminator's last layer on its features h
    'projection': logit = dense(h) + <embed(y), h> (Miyato & Koyama 2018); the
        embedding is spectrally normalised when D's layers are.
    'acgan': logit = dense(h), plus an auxiliary classifier head
        dense_N(h) trained with cross-entropy on real and fake examples
        (Odena et al. 2017), weight `config.conditional.acgan_weight` in both
        losses; D then returns (logits, class_logits).

A discriminator supports conditioning by ending in `output_layer`, which with
N = 0 creates exactly the unconditional final Dense (same parameter names, so
unconditional checkpoints are unaffected).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax import step as step_lib
from gan_jax.errors import UserError

G_MODES = ('concat',)
D_HEADS = ('projection', 'acgan')


num_classes = step_lib.num_classes


def _field(config, name, choices):
  value = config.conditional[name]
  if value not in choices:
    raise UserError(f'unknown config.conditional.{name} {value!r}; use one of: '
                    + ', '.join(choices))
  return value


def d_head(config) -> str:
  """The discriminator's conditional head (checked), '' when unconditional."""
  return _field(config, 'd', D_HEADS) if num_classes(config) else ''


class ConditionalGenerator(nn.Module):
  """Wraps any generator: z -> [z, one_hot(labels)] -> base."""
  base: nn.Module
  num_classes: int

  def __call__(self, z, train: bool = True, labels=None):
    one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)
    return self.base(jnp.concatenate([z, one_hot], axis=-1), train)


def wrap_generator(config, generator):
  """The generator `config` asks for: `generator` itself when unconditional."""
  n = num_classes(config)
  if not n:
    return generator
  _field(config, 'g', G_MODES)
  return ConditionalGenerator(generator, n)


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
