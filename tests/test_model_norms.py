"""The g.norm / d.norm switches of every model: what each norm builds, that it
runs in training and evaluation, that the defaults are unchanged, and the
gradient-penalty check."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import checks
from gan_jax import models
from gan_jax.errors import UserError
from gan_jax.axis import AXIS
from tests.conftest import for_model
from tests.conftest import tiny_config

Z_DIM, BATCH = 8, 2
# model: (example shape, G norms, D norms, default G norm, default D norm).
MODELS = {
    'mlp': ((2,), ('none', 'batch', 'layer', 'spectral'),
            ('none', 'batch', 'layer', 'spectral'), 'none', 'none'),
    'dcgan': ((32, 32, 3), ('batch', 'layer', 'group', 'spectral', 'none'),
              ('batch', 'layer', 'spectral', 'none'), 'batch', 'batch'),
    'dcgan_mnist': ((28, 28, 1), ('batch', 'layer', 'none'),
                    ('none', 'layer', 'spectral'), 'batch', 'none'),
    'sngan_resnet': ((32, 32, 3), ('batch', 'none'), ('spectral', 'none'),
                     'batch', 'spectral'),
}
COMBOS = [(model, net, norm) for model, (_, g, d, _, _) in MODELS.items()
          for net, norms in (('g', g), ('d', d)) for norm in norms]
# Parameter and 'batch_stats' counts (G params, G stats, D params, D stats) of
# the defaults at the widths of `_config`, as they were before the switches.
DEFAULT_COUNTS = {
    'mlp': (1_410, 0, 1_185, 0),
    'dcgan': (4_859, 56, 3_061, 48),
    'dcgan_mnist': (1_151_424, 25_472, 212_865, 0),
    'sngan_resnet': (1_691, 56, 1_189, 52),
}


def _config(model, **norms):
  config = tiny_config(model=model, z_dim=Z_DIM)
  # Tiny widths where the model reads them; dcgan_mnist's are fixed, its
  # resize-conv upsampling is just faster on CPU.
  config.g.channels = config.d.channels = 4
  config.g.upsample = 'resize_conv'
  for net, norm in norms.items():
    config[net].norm = norm
  return for_model(config)


def _module(model, net, norm):
  g, d = models.build(_config(model, **{net: norm}), MODELS[model][0])
  return g if net == 'g' else d


def _input(model, net):
  shape = (BATCH, Z_DIM) if net == 'g' else (BATCH, *MODELS[model][0])
  return jax.random.normal(jax.random.PRNGKey(1), shape)


def _shapes(module, x):
  """The module's variables as shapes (nothing is compiled)."""
  return jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), x, train=False))


def _leaves(tree):
  """{'path/to/leaf': value} of a variable tree."""
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# Compiled with little optimisation: these programs run once or twice, on tiny
# inputs, and compiling them for XLA:CPU takes nearly all of the time (these
# options cut it about fivefold).
FAST_COMPILE = {'xla_backend_optimization_level': 0,
                'xla_llvm_disable_expensive_passes': True,
                'xla_cpu_use_fusion_emitters': False}


def _jit(fn):
  cpu = jax.default_backend() == 'cpu'
  return jax.jit(fn, compiler_options=FAST_COMPILE if cpu else None)


def _train_and_eval(module, variables, x):
  """A training-mode call inside a named axis, as in the step's pmap (for
  cross-replica BatchNorm), and an evaluation-mode call, both on `variables`:
  (train output, updated 'batch_stats', eval output, eval's 'batch_stats')."""
  def train(v, x):
    return module.apply(v, x, train=True, mutable=['batch_stats'],
                        rngs={'dropout': jax.random.PRNGKey(2)})
  add = lambda t: jax.tree.map(lambda a: a[None], t)
  out, state = jax.vmap(train, axis_name=AXIS)(add(variables), add(x))
  out, state = jax.tree.map(lambda a: a[0], (out, state))
  eval_out, eval_state = module.apply(variables, x, train=False,
                                      mutable=['batch_stats'])
  return (out, state.get('batch_stats', {}), eval_out,
          eval_state.get('batch_stats', {}))


@pytest.mark.parametrize('model,net,norm', COMBOS)
def test_norm_builds_runs_and_keeps_its_state(model, net, norm):
  module, x = _module(model, net, norm), _input(model, net)
  variables = _jit(lambda x: module.init(
      jax.random.PRNGKey(0), x, train=False))(x)
  assert set(variables) <= {'params', 'batch_stats'}
  params = _leaves(variables['params'])
  stats = _leaves(variables.get('batch_stats', {}))
  # BatchNorm: a running mean and variance (and a scale and bias) per layer.
  bn = [k for k in stats if k.endswith(('/mean', '/var'))]
  assert bool(bn) == (norm == 'batch') == checks.uses_batch_norm(variables)
  assert any('BatchNorm_' in k for k in params) == (norm == 'batch')
  # Spectral norm: a power-iteration vector u and an estimate sigma for every
  # kernel of the network (Dense, Conv, ConvTranspose).
  sn_u = [k for k in stats if k.endswith('/u')]
  sn_sigma = [k for k in stats if k.endswith('/sigma')]
  kernels = [k for k in params if k.endswith('/kernel')]
  assert len(sn_u) == len(sn_sigma) == (len(kernels) if norm == 'spectral'
                                        else 0)
  assert set(stats) == set(bn) | set(sn_u) | set(sn_sigma)
  # LayerNorm / GroupNorm: a scale and a bias per layer, no state.
  for kind in ('layer', 'group'):
    layers = [k for k in params if f'{kind.title()}Norm_' in k]
    assert bool(layers) == (norm == kind)
    assert sorted({k.rsplit('/', 1)[1] for k in layers}) == (
        ['bias', 'scale'] if norm == kind else [])

  step = _jit(lambda v, x: _train_and_eval(module, v, x))
  train_out, new_stats, eval_out, eval_stats = step(variables, x)
  out_shape = (BATCH, *MODELS[model][0]) if net == 'g' else (BATCH,)
  for out in (train_out, eval_out):
    assert out.shape == out_shape and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
  # Evaluation updates nothing; training updates the state.
  jax.tree.map(np.testing.assert_array_equal, eval_stats,
               variables.get('batch_stats', {}))
  new_stats = _leaves(new_stats)
  assert set(new_stats) == set(stats)
  changed = {k for k in stats if not np.array_equal(new_stats[k], stats[k])}
  assert changed >= set(bn) | set(sn_u)
  # Flax's SpectralNorm stores the initial kernel divided by its first sigma
  # estimate, so the first training call, still with the initial u, estimates
  # sigma = 1 (to rounding); the next one moves it, except for one-column
  # kernels (e.g. the logit's), whose norm one power iteration finds exactly.
  if sn_sigma:
    _, newer_stats, _, _ = step({**variables, 'batch_stats': _unflatten(
        variables['batch_stats'], new_stats)}, x)
    newer_stats = _leaves(newer_stats)
    moved = [k for k in sn_sigma
             if not np.allclose(newer_stats[k], stats[k], rtol=0, atol=1e-4)]
    wide = [k for k in sn_sigma if stats[k[:-len('sigma')] + 'u'].shape[-1] > 1]
    assert wide and moved == wide


def _unflatten(like, leaves):
  """The tree `like` with the leaves `leaves` ({'path': value}, as _leaves)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: leaves['/'.join(str(getattr(k, 'key', k))
                                      for k in path)], like)


@pytest.mark.parametrize('model', MODELS)
def test_defaults_are_unchanged(model):
  shape, _, _, g_default, d_default = MODELS[model]
  g, d = models.build(_config(model), shape)
  g_vars = _shapes(g, _input(model, 'g'))
  d_vars = _shapes(d, _input(model, 'd'))
  counts = tuple(_count(v.get(c, {})) for v in (g_vars, d_vars)
                 for c in ('params', 'batch_stats'))
  assert counts == DEFAULT_COUNTS[model]
  # Naming the default is the same network as 'default', name for name.
  for net, name, default_vars in (('g', g_default, g_vars),
                                  ('d', d_default, d_vars)):
    named = _shapes(_module(model, net, name), _input(model, net))
    assert jax.tree.map(lambda a: a.shape, named) == jax.tree.map(
        lambda a: a.shape, default_vars)


def test_dcgan_mnist_named_defaults_are_the_tutorials_network():
  config = _config('dcgan_mnist', g='batch', d='none')
  config.z_dim = 100
  config.g.upsample = 'transpose'
  g, d = models.build(config, (28, 28, 1))
  g_vars = _shapes(g, jnp.zeros((BATCH, 100)))
  d_vars = _shapes(d, jnp.zeros((BATCH, 28, 28, 1)))
  assert _count(g_vars['params']) == 2_305_472
  assert _count(g_vars['batch_stats']) == 25_472
  assert _count(d_vars['params']) == 212_865 and set(d_vars) == {'params'}


@pytest.mark.parametrize('model', ['dcgan_mnist', 'sngan_resnet'])
def test_spectral_and_none_have_the_same_parameters(model):
  x = _input(model, 'd')
  spectral = _shapes(_module(model, 'd', 'spectral'), x)
  none = _shapes(_module(model, 'd', 'none'), x)
  assert jax.tree.map(lambda a: a.shape, spectral['params']) == jax.tree.map(
      lambda a: a.shape, none['params'])
  assert 'batch_stats' not in none


@pytest.mark.parametrize('model', MODELS)
@pytest.mark.parametrize('net', ['g', 'd'])
def test_unknown_norm_names_the_allowed_ones(model, net):
  allowed = MODELS[model][1 if net == 'g' else 2]
  with pytest.raises(UserError) as error:
    models.build(_config(model, **{net: 'instance'}), MODELS[model][0])
  message = str(error.value)
  assert '\n' not in message and f'config.{net}.norm' in message
  assert "'instance'" in message
  assert all(name in message for name in allowed)


@pytest.mark.parametrize('model,net,norm', COMBOS)
def test_config_check_accepts_every_switch(model, net, norm):
  assert 'norm' in models.MODELS[model].fields(net)
  checks.validate(_config(model, **{net: norm}))


def test_every_model_but_pacgan_has_norm_switches():
  """PacGAN's maxout D is the paper's, without normalisation."""
  for name, m in models.MODELS.items():
    assert 'norm' in m.g_fields, name
    assert ('norm' in m.d_fields) == (name != 'pacgan'), name


@pytest.mark.parametrize('penalty', ['wgan_gp', 'r1'])
@pytest.mark.parametrize('model,norm', [
    (model, norm) for model, (_, _, d_norms, _, _) in MODELS.items()
    for norm in d_norms])
def test_gradient_penalty_refuses_batch_norm_in_d(model, norm, penalty):
  config = _config(model, d=norm)
  if penalty == 'wgan_gp':
    config.loss.name = 'wgan_gp'
  else:
    config.penalty.name = 'r1'
  variables = _shapes(_module(model, 'd', norm), _input(model, 'd'))
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  if norm == 'batch':
    with pytest.raises(UserError, match="BatchNorm.*d.norm to 'layer'"):
      checks.check_gradient_penalty(config, model_state)
  else:
    checks.check_gradient_penalty(config, model_state)  # Does not raise.


@pytest.mark.parametrize('model', MODELS)
@pytest.mark.parametrize('head', ['projection', 'acgan'])
def test_conditional_heads_with_every_d_norm(model, head):
  for norm in MODELS[model][2]:
    config = _config(model, d=norm)
    config.num_classes, config.conditional.d = 3, head
    _, d = models.build(config, MODELS[model][0])
    x = jnp.zeros((BATCH, *MODELS[model][0]))
    labels = jnp.zeros((BATCH,), jnp.int32)
    variables = jax.eval_shape(lambda d=d: d.init(
        jax.random.PRNGKey(0), x, train=False, labels=labels))
    out = jax.eval_shape(lambda v, d=d: d.apply(
        v, x, train=False, labels=labels), variables)
    if head == 'acgan':
      assert out[0].shape == (BATCH,) and out[1].shape == (BATCH, 3)
    else:
      assert out.shape == (BATCH,)
      # The projection's embedding is spectrally normalised with D.
      stats = _leaves(variables.get('batch_stats', {}))
      assert any('class_embedding' in k for k in stats) == (norm == 'spectral')
