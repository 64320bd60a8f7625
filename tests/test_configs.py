"""Every config x every argument it accepts resolves to what its docstring says.

Each config's docstring lists its arguments (`Arguments`: `name: a | b | c;
default a`, or `any gan_jax.losses name`) and the settings it trains with
(`Settings: path=value, ...`). For every config and every value of every
argument (the others at their defaults) this checks: the argument took effect
(a loss also brings its recipe, configs/default.py LOSS_RECIPES), every
promised setting the argument does not change holds, the config passes the
start-up checks (every field under g/d is read by the model), and the train
state can be built for it (a loss with a gradient penalty gets a D without
BatchNorm).
"""
import importlib
import os
import re

import jax
import pytest

from configs import default
from gan_jax import checks
from gan_jax import losses
from gan_jax import models
from gan_jax import state as state_lib
from tests.conftest import ROOT

GAN_CONFIGS = sorted(
    f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
    if f.endswith('.py') and f not in ('__init__.py', 'image_base.py',
                                       'mnist_classifier.py'))
# The settings an argument changes, besides its own field.
AFFECTS = {
    'loss': ('loss.name', 'd_steps', 'updates', 'g.optimizer.lr',
             'g.optimizer.b1', 'g.optimizer.b2', 'd.optimizer.lr',
             'd.optimizer.b1', 'd.optimizer.b2', 'd.norm'),
    'data': ('data.name', 'data.image_size', 'num_steps'),
    'size': ('model', 'data.image_size', 'g.channels', 'd.channels'),
    'head': ('conditional.d',),
    'conditional': ('num_classes', 'conditional.d', 'eval.grid_rows'),
    'clusters': ('num_classes',),
    'pack': ('d.pack', 'batch_size'),
}
EXAMPLE_SHAPES = {'ring8': (2,), 'grid25': (2,), 'ring_pacgan': (2,), 'mnist': (28, 28, 1),
                  'fashion_mnist': (28, 28, 1), 'cifar10': (32, 32, 3),
                  'celeb_a': (64, 64, 3)}


def _section(doc, title):
  """The lines of the docstring section starting with `title`, joined per
  entry (continuation lines are indented deeper)."""
  lines = doc.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(title))
  body = [lines[start][len(title):]]
  for line in lines[start + 1:]:
    if not line.startswith('  '):
      break
    body.append(line)
  return body


WHOLE = 'a whole number >= 1'


def _raw_arguments(doc):
  """{name: its text} from the docstring's Arguments section."""
  args, name = {}, None
  for line in _section(doc, 'Arguments')[1:]:
    m = re.match(r'  (\w+): (.*)', line)
    if m:
      name = m.group(1)
      args[name] = m.group(2)
    else:
      args[name] += ' ' + line.strip()
  return args


def arguments(doc):
  """{name: (values, default)} from the docstring's Arguments section."""
  out = {}
  for name, text in _raw_arguments(doc).items():
    values, default_value = re.fullmatch(r'(.*); default (\S+)', text).groups()
    if values.startswith('any gan_jax.losses name'):
      values = sorted(losses.LOSSES)
    elif values.startswith(WHOLE):  # Any m >= 1: the examples and default.
      values = re.findall(r'\d+', values[len(WHOLE):]) + [default_value]
    else:
      values = [v.strip() for v in values.split('|')]
    out[name] = (values, default_value)
  return out


def settings(doc):
  """{dotted path: value string} from the docstring's Settings section."""
  text = ' '.join(_section(doc, 'Settings:'))
  return dict(item.strip().split('=') for item in text.split(','))


def _get(config, path):
  for part in path.split('.'):
    config = config[part]
  return config


def _same(value, promised):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value) == promised
  return value == float(promised)


def _cases():
  for name in GAN_CONFIGS:
    module = importlib.import_module(f'configs.{name}')
    for arg, (values, _) in arguments(module.__doc__).items():
      for value in values:
        yield name, arg, value


def test_every_config_documents_its_arguments():
  for name in GAN_CONFIGS + ['mnist_classifier']:
    module = importlib.import_module(f'configs.{name}')
    args = arguments(module.__doc__)
    assert args and settings(module.__doc__), name
    config = module.get_config()  # The defaults the docstring names.
    for arg, (values, default_value) in args.items():
      assert default_value in values, (name, arg)
      module.get_config(f'{arg}={default_value}')
    with pytest.raises(ValueError, match='expected key=value'):
      module.get_config('no_such_argument=1')
    for path, promised in settings(module.__doc__).items():
      assert _same(_get(config, path), promised), (name, path)


@pytest.mark.parametrize('name,arg,expected', [
    ('mnist5k', 'conditional=bogus', 'one of none, projection, acgan, clusters'),
    ('mnist5k', 'conditional=clusters,clusters=0', 'a whole number >= 1'),
    ('mnist5k', 'clusters=abc', 'a whole number >= 1'),
    ('mnist_cgan', 'head=bogus', 'one of projection, acgan'),
    ('pacgan_grid', 'pack=0', 'a whole number >= 1'),  # Not 'batch_size 0'.
    ('pacgan_grid', 'pack=x', 'a whole number >= 1'),
    ('own_images', 'size=30', 'one of 28, 32, 64'),
])
def test_bad_config_argument_is_named(name, arg, expected):
  """A config argument out of its choices is refused by name, not by a check
  on a field that the user did not set."""
  module = importlib.import_module(f'configs.{name}')
  with pytest.raises(ValueError, match=f'config argument {arg.split(",")[-1]}: '
                     f'expected {expected}'):
    module.get_config(arg)


@pytest.mark.parametrize('name', GAN_CONFIGS + ['mnist_classifier'])
def test_every_argument_refuses_what_its_docstring_does_not_list(name):
  """An argument's docstring lists its values (or says any whole number
  >= 1): anything else is refused by name, not passed on to fail later."""
  module = importlib.import_module(f'configs.{name}')
  text = _raw_arguments(module.__doc__)
  for arg, (values, _) in arguments(module.__doc__).items():
    if text[arg].startswith('any gan_jax.losses name'):
      continue  # Refused by gan_jax.checks, with the list of losses.
    if text[arg].startswith(WHOLE):
      bad, expected = ['0', 'x'], WHOLE
    else:
      bad, expected = ['bogus', values[0] + 'x'], 'one of ' + ', '.join(values)
    for value in bad:
      with pytest.raises(ValueError, match=re.escape(
          f'config argument {arg}={value}: expected {expected}')):
        module.get_config(f'{arg}={value}')


@pytest.mark.parametrize('name,arg,value', list(_cases()))
def test_argument_resolves_as_promised(name, arg, value):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config(f'{arg}={value}')
  if arg == 'conditional':  # none: unconditional, else that D head.
    assert (config.num_classes > 0) == (value != 'none')
    assert value in ('none', 'clusters') or config.conditional.d == value
    assert (config.conditional.labels == 'clusters') == (value == 'clusters')
  elif arg == 'clusters':  # How many, with conditional=clusters.
    assert config.num_classes == 0
    config = module.get_config(f'conditional=clusters,{arg}={value}')
    assert config.num_classes == int(value)
  else:
    own = {'loss': 'loss.name', 'data': 'data.name', 'head': 'conditional.d',
           'size': 'data.image_size', 'pack': 'd.pack'}[arg]
    assert str(_get(config, own)) == value
  for path, promised in settings(module.__doc__).items():
    if path not in AFFECTS[arg]:
      assert _same(_get(config, path), promised), path
  recipe = default.LOSS_RECIPES.get(config.loss.name)
  if arg == 'loss' and recipe:
    assert config.d_steps == recipe['d_steps']
    for net in (config.g, config.d):
      assert (net.optimizer.lr, net.optimizer.b1, net.optimizer.b2) == (
          recipe['lr'], recipe['b1'], recipe['b2'])
    assert config.get('updates', 'alternating') == 'alternating'
  checks.validate(config)
  shape = EXAMPLE_SHAPES.get(config.data.name) or (
      (config.data.image_size,) * 2 + (1 if config.data.image_size == 28 else 3,))
  g, d = models.build(config, shape)
  jax.eval_shape(lambda: state_lib.create(config, g, d, shape))


def test_a_field_the_model_does_not_read_is_refused():
  from configs import cifar10_dcgan  # pylint: disable=g-import-not-at-top
  config = cifar10_dcgan.get_config()
  assert 'width' not in config.g  # --config.g.width=... is unknown.
  config = default.get_config()
  config.model = 'dcgan'
  with pytest.raises(Exception, match="config.g.activation is not read by "
                     "model 'dcgan'"):
    checks.validate(config)
