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
in its own module and register it below.
"""
from typing import Callable

from gan_jax.errors import UserError
from gan_jax.models import conditional
from gan_jax.models import dcgan
from gan_jax.models import dcgan_mnist
from gan_jax.models import mlp
from gan_jax.models import sngan_resnet

MODELS: dict[str, Callable] = {
    'dcgan': dcgan.build,
    'dcgan_mnist': dcgan_mnist.build,
    'mlp': mlp.build,
    'sngan_resnet': sngan_resnet.build,
}


def build(config, example_shape):
  if config.model not in MODELS:
    raise UserError(f'unknown model {config.model!r}; set config.model to one '
                    'of: ' + ', '.join(sorted(MODELS)))
  generator, discriminator = MODELS[config.model](config, example_shape)
  return conditional.wrap_generator(config, generator), discriminator
