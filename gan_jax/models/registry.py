"""The model registry: a name (`config.model`) -> its builder and the config
fields it reads.

    @register('my_model', g_fields=('width', 'norm'), d_fields=('width',))
    def build(config, example_shape):
      return generator, discriminator

`g_fields` / `d_fields` name the fields of `config.g` / `config.d` the builder
reads (besides `optimizer`, and `d.pack`, which the step reads for every
model). A config that carries any other field under `g` or `d` is refused at
start-up (gan_jax/checks.py), so a field that would do nothing for the chosen
model is one error line, not a silent no-op.
"""
from typing import Callable, NamedTuple

from gan_jax.errors import UserError


class Model(NamedTuple):
  build: Callable  # (config, example_shape) -> (generator, discriminator)
  g_fields: tuple[str, ...]
  d_fields: tuple[str, ...]

  def fields(self, net: str) -> tuple[str, ...]:
    return self.g_fields if net == 'g' else self.d_fields


MODELS: dict[str, Model] = {}


def register(name: str, *, g_fields=(), d_fields=()):
  """A decorator registering `build(config, example_shape)` as `name`."""
  def decorator(build):
    if name in MODELS:
      raise ValueError(f'model {name!r} is registered twice')
    MODELS[name] = Model(build, tuple(g_fields), tuple(d_fields))
    return build
  return decorator


def get(name: str) -> Model:
  if name not in MODELS:
    raise UserError(f'unknown model {name!r}; set config.model to one of: '
                    + ', '.join(sorted(MODELS)))
  return MODELS[name]
