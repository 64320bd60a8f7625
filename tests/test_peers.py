"""The PyTorch peers under benchmarks/peers/ (benchmarking only, not gan_jax).

benchmarks/peers/torch_sngan.py must build the same networks as gan_jax's
sngan_resnet (configs/cifar10_sngan.py), run the same iteration shape, and
print its JSON line; it runs here on the CPU at a tiny size (a smoke run, not
a benchmark).
"""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses
from gan_jax import models
from tests.conftest import ROOT
from tests.conftest import importorskip_extra

pytestmark = pytest.mark.extras
torch = importorskip_extra('torch', 'torch')

SNGAN_PEER = os.path.join(ROOT, 'benchmarks', 'peers', 'torch_sngan.py')


@pytest.fixture
def one_thread():
  """PyTorch on one CPU thread: on a loaded 2-core machine its two OpenMP
  threads wait on each other (a tiny SNGAN step: 7.7 s with 2, 0.12 s
  with 1)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def peer():
  spec = importlib.util.spec_from_file_location('torch_sngan_peer', SNGAN_PEER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _gan_jax_param_shapes(g_channels, d_channels):
  """gan_jax's sngan_resnet parameter shapes, in PyTorch's layout, sorted."""
  from configs import cifar10_sngan  # pylint: disable=g-import-not-at-top
  config = cifar10_sngan.get_config()
  config.g.channels, config.d.channels = g_channels, d_channels
  g, d = models.build(config, (32, 32, 3))
  key = jax.random.PRNGKey(0)
  g_vars = jax.eval_shape(lambda: g.init(key, jnp.zeros((2, 128)), train=False))
  d_vars = jax.eval_shape(
      lambda: d.init(key, jnp.zeros((2, 32, 32, 3)), train=False))

  def torch_layout(shape):
    if len(shape) == 4:  # HWIO -> OIHW.
      return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))  # Dense [in, out] -> Linear [out, in].

  def shapes(variables):
    return sorted(torch_layout(x.shape)
                  for x in jax.tree.leaves(variables['params']))

  return shapes(g_vars), shapes(d_vars), d_vars


def _torch_shapes(module):
  return sorted(tuple(p.shape) for p in module.parameters())


@pytest.mark.parametrize('g_channels,d_channels', [(256, 128), (16, 8)])
def test_sngan_peer_has_gan_jax_layers(peer, g_channels, d_channels):
  """Same parameter shapes (hence counts) as gan_jax, at the config's widths
  and at others; spectral norm on the same 11 D layers."""
  g_shapes, d_shapes, d_vars = _gan_jax_param_shapes(g_channels, d_channels)
  g = peer.Generator(ch=g_channels)
  d = peer.Discriminator(ch=d_channels)
  assert _torch_shapes(g) == g_shapes
  assert _torch_shapes(d) == d_shapes
  sn_jax = [x for path, x in jax.tree_util.tree_flatten_with_path(
      d_vars['batch_stats'])[0] if str(path[-1]).endswith("/u']")]
  sn_torch = [m for m in d.modules() if hasattr(m, 'parametrizations')]
  assert len(sn_torch) == len(sn_jax) == 11
  if (g_channels, d_channels) == (256, 128):
    counts = (peer.count_params(g), peer.count_params(d))
    assert counts == (sum(int(np.prod(s)) for s in g_shapes),
                      sum(int(np.prod(s)) for s in d_shapes))
    assert counts == (peer.GAN_JAX_G_PARAMS, peer.GAN_JAX_D_PARAMS)
    assert counts == (4_276_739, 1_053_825)


def test_sngan_peer_hinge_matches_gan_jax(peer):
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(2, 8)).astype(np.float32) * 2
  d_loss, g_loss = losses.get('hinge').fn(jnp.asarray(real), jnp.asarray(fake))
  t_real, t_fake = torch.from_numpy(real), torch.from_numpy(fake)
  np.testing.assert_allclose(float(peer.hinge_d(t_real, t_fake)),
                             float(d_loss), rtol=1e-6)
  np.testing.assert_allclose(float(peer.hinge_g(t_fake)), float(g_loss),
                             rtol=1e-6)


def test_sngan_peer_step_is_five_d_updates_then_one_g_update(peer,
                                                              one_thread):
  torch.manual_seed(0)
  g, d = peer.Generator(ch=8), peer.Discriminator(ch=8)
  og, od, sg, sd = peer.make_optimizers(g, d)
  step = peer.make_step(g, d, og, od, sg, sd)
  u = d.blocks[0].c1.parametrizations.weight[0]._u.clone()
  # Gradients accumulated per parameter: D's only in its 5 updates (none in
  # the G update, where D is frozen), G's only in its update.
  grads = {'g': [], 'd': []}
  for net, module in (('g', g), ('d', d)):
    for p in module.parameters():
      p.register_post_accumulate_grad_hook(
          lambda p, net=net: grads[net].append(p))
  g_loss, d_loss = step(torch.rand(peer.D_STEPS, 3, 3, 32, 32) * 2 - 1)
  assert np.isfinite(float(g_loss)) and np.isfinite(float(d_loss))
  d_steps = {int(s['step']) for s in od.state.values()}
  g_steps = {int(s['step']) for s in og.state.values()}
  assert d_steps == {5} and g_steps == {1}
  assert sd.last_epoch == 5 and sg.last_epoch == 1
  assert len(grads['d']) == 5 * len(list(d.parameters()))
  assert len(grads['g']) == len(list(g.parameters()))
  assert all(p.requires_grad for p in d.parameters())
  # The power iteration ran (training mode): u moved.
  assert not torch.equal(u, d.blocks[0].c1.parametrizations.weight[0]._u)


def test_sngan_peer_cli_prints_a_json_line():
  """A smoke run on the CPU (one thread, see one_thread): batch 2, one
  warm-up and one timed step."""
  env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
  proc = subprocess.run([sys.executable, SNGAN_PEER, 'eager', '2', '1', '1'],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stdout
  r = lines[0]
  assert 'error' not in r, r
  assert (r['peer'], r['mode'], r['batch'], r['d_steps']) == (
      'torch', 'eager', 2, 5)
  assert r['ms_per_step'] > 0 and r['images_per_s'] > 0 and r['finite']
  # Both rates are printed rounded to 0.01: compare each with the step time.
  seconds = r['ms_per_step'] / 1e3
  assert r['images_per_s'] == pytest.approx(2 / seconds, abs=0.006)
  assert r['real_images_per_s'] == pytest.approx(5 * 2 / seconds, abs=0.006)
  assert (r['g_params'], r['d_params']) == (4_276_739, 1_053_825)
  assert 'gan_jax 4,276,739' in proc.stderr
