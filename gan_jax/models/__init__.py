"""Generator/discriminator pairs, registered by name (`config.model`).

A model builder takes the config and the shape of one data example and returns
two Flax modules:

    build(config, example_shape) -> (generator, discriminator)

    generator(z, train: bool) -> samples of `example_shape`, batched
    discriminator(x, train: bool, labels=None) -> logits, shape [batch]

With `config.num_classes > 0` (class-conditional, models/conditional.py) the
generator is wrapped to take `labels` too, and the discriminator gets
`num_classes` and `head` and ends in `conditional.output_layer`.

Non-parameter collections (BatchNorm's `batch_stats`, spectral normalisation's
power-iteration vectors) are kept in the train state and updated in the step;
dropout draws from the `dropout` RNG stream. To add a model, write the builder
in its own module, decorate it with `registry.register(name, g_fields=...,
d_fields=...)` (the config fields it reads) and import the module below.
"""
from gan_jax.models import conditional
from gan_jax.models import dcgan  # pylint: disable=unused-import
from gan_jax.models import dcgan_mnist  # pylint: disable=unused-import
from gan_jax.models import mlp  # pylint: disable=unused-import
from gan_jax.models import pacgan  # pylint: disable=unused-import
from gan_jax.models import registry
from gan_jax.models import sngan_resnet  # pylint: disable=unused-import

MODELS = registry.MODELS
register = registry.register
get = registry.get


def build(config, example_shape):
  generator, discriminator = get(config.model).build(config, example_shape)
  return conditional.wrap_generator(config, generator), discriminator
