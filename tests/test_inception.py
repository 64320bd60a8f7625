"""The Flax FID Inception against pytorch-fid's own network, on random weights.

pytorch-fid's network is built by its own `InceptionV3` class (which calls
`fid_inception_v3()` and its FIDInception blocks), with the download replaced
by a randomised state dict. That state dict goes through
tools/convert_inception_weights.py into the .npz that gan_jax loads, so the
converter is what is tested. Needs requirements-test.txt (torch, pytorch-fid).
"""
import importlib.util
import json
import os
from unittest import mock

import jax
import numpy as np
import pytest

from gan_jax.errors import UserError
from gan_jax.metrics import image_metrics
from gan_jax.metrics import inception
from tests.conftest import importorskip_extra

pytestmark = pytest.mark.extras
torch = importorskip_extra('torch', 'torch')
pfi = importorskip_extra('pytorch_fid.inception', 'pytorch-fid')
F = torch.nn.functional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # Relative error (to the largest magnitude), float32.


def _load_tool():
  spec = importlib.util.spec_from_file_location(
      'convert_inception_weights',
      os.path.join(ROOT, 'tools', 'convert_inception_weights.py'))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  return tool


def _random_fid_state_dict(seed=0):
  """pytorch-fid's FID Inception (its own blocks) with non-trivial weights.

  He-normal convolutions keep activations O(1) through the 94 layers (the
  default init shrinks them towards the BatchNorm biases, which would make
  the comparison weaker), and BatchNorm gets running statistics and affine
  parameters far from the identity, so a swapped scale/var would show.
  """
  torch.manual_seed(seed)
  # As pytorch-fid's fid_inception_v3(), less the download.
  net = pfi._inception_v3(  # pylint: disable=protected-access
      num_classes=1008, aux_logits=False, weights=None)
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=g)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=g)
        m.bias.normal_(0, 0.2, generator=g)
        m.running_mean.normal_(0, 0.2, generator=g)
        m.running_var.uniform_(0.5, 2.0, generator=g)
      elif isinstance(m, torch.nn.Linear):
        m.weight.normal_(0, 2048 ** -0.5, generator=g)
        m.bias.normal_(0, 1.0, generator=g)
  return net.state_dict()


@pytest.fixture(scope='module')
def fast_compile():
  # XLA's optimisations take half of this file's time on 2 CPU cores and do
  # not change the result beyond float32 rounding (the parity test holds
  # either way); the flag is restored for the other test files.
  old = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


@pytest.fixture(scope='module')
def nets(tmp_path_factory, fast_compile):  # pylint: disable=unused-argument
  """(pytorch-fid's InceptionV3, its fc, gan_jax's FeatureExtractor, .npz)."""
  state_dict = _random_fid_state_dict()
  with mock.patch.object(pfi, 'load_state_dict_from_url',
                         lambda *a, **k: state_dict):
    ref = pfi.InceptionV3([pfi.InceptionV3.DEFAULT_BLOCK_INDEX]).eval()
  fc = torch.nn.Linear(2048, 1008)
  fc.load_state_dict({'weight': state_dict['fc.weight'],
                      'bias': state_dict['fc.bias']})
  folder = tmp_path_factory.mktemp('weights')
  pth, npz = str(folder / 'random.pth'), str(folder / 'random.npz')
  torch.save(state_dict, pth)
  assert _load_tool().main(['convert', pth, npz]) == 0
  # One image at 64x64 pads a partial batch of 2.
  extractor = inception.FeatureExtractor(npz, batch_size=2)
  return ref, fc, extractor, npz


def _rel_err(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize('shape', [(32, 32), (64, 64), (28, 28), (320, 320),
                                   (512, 300), (299, 299), (100, 400)])
def test_resize_matches_torch_interpolate(shape):
  x = np.random.default_rng(0).uniform(-1, 1, (2, *shape, 3)).astype(np.float32)
  want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                       mode='bilinear', align_corners=False)
  got = np.asarray(inception.resize(x))
  np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_features_and_logits_match_pytorch_fid(nets):
  ref, fc, extractor, _ = nets
  rng = np.random.default_rng(1)
  errors = {}
  for size, num in ((32, 2), (64, 1)):
    images = rng.uniform(-1, 1, (num, size, size, 3)).astype(np.float32)
    with torch.no_grad():
      # pytorch-fid takes [0, 1] NCHW, resizes, then maps to [-1, 1].
      x = torch.from_numpy((images + 1) / 2).permute(0, 3, 1, 2)
      pool = ref(x)[0].flatten(1)
      logits = fc(pool)
    got = extractor(images)
    assert got['pool'].shape == (num, 2048)
    assert got['logits'].shape == (num, 1008)
    errors[size] = (_rel_err(got['pool'], pool.numpy()),
                    _rel_err(got['logits'], logits.numpy()))
    assert np.std(pool.numpy()) > 0.1  # Not a degenerate comparison.
    assert errors[size][0] < TOL and errors[size][1] < TOL, errors
    np.testing.assert_allclose(
        got['logits_unbiased'],
        logits.numpy() - fc.bias.detach().numpy()[None], rtol=0, atol=1e-3)
  print('relative errors (pool, logits) by input size:', errors)


def test_evaluate_images_with_the_network(nets, tmp_path):
  """evaluate_images on the config's weights file, grayscale 28x28 images."""
  _, _, extractor, npz = nets
  rng = np.random.default_rng(2)
  fake = rng.uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
  real = rng.uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
  config = {'inception_weights': npz, 'metrics': ['kid'], 'num_samples': 2,
            'num_reference': 2, 'sample_batch_size': 2,
            'inception_batch_size': 2, 'cache_dir': str(tmp_path),
            'kid_subsets': 1, 'kid_subset_size': 2}
  results = image_metrics.evaluate_images(
      config, lambda n: fake[:n], lambda split: iter([real]), 'mnist')
  # The same through the extractor directly, with the channels repeated.
  want, _ = image_metrics.kernel_distance(
      extractor(np.repeat(real, 3, axis=-1))['pool'],
      extractor(np.repeat(fake, 3, axis=-1))['pool'], 1, 2)
  assert results['kid'] == pytest.approx(want, rel=1e-4)


def test_converter_rejects_other_networks():
  state_dict = {'fc.weight': np.zeros((1008, 2048)),
                'fc.bias': np.zeros(1008)}
  with pytest.raises(ValueError, match='missing'):
    inception.from_torch_state_dict(state_dict)
  state_dict['AuxLogits.fc.weight'] = np.zeros((1000, 768))
  with pytest.raises(ValueError, match='unexpected key'):
    inception.from_torch_state_dict(state_dict)


@pytest.mark.parametrize('path', ['', '/nonexistent/fid_inception.npz'])
def test_missing_weights_is_a_one_line_user_error(path):
  with pytest.raises(UserError) as e:
    image_metrics.evaluate_images({'inception_weights': path,
                                   'metrics': ['fid_10k_train']},
                                  sample_fn=None, real_batches_fn=None,
                                  dataset='cifar10')
  message = str(e.value)
  assert '\n' not in message
  assert inception.WEIGHTS_URL in message
  assert 'python tools/convert_inception_weights.py' in message


def test_not_a_weights_file_is_a_user_error(tmp_path):
  bad = tmp_path / 'bad.npz'
  np.savez(bad, x=np.zeros(3))
  with pytest.raises(UserError, match='not a converted FID Inception'):
    inception.load_variables(str(bad))


def test_evaluation_computes_kid_and_is_of_the_generator(nets, tmp_path):
  """gan_jax.evaluate's image path: grid, metrics, cached reference stats.

  A stand-in generator (random images) replaces training, whose compile time
  this test does not need. FID is left out: its 2048 x 2048 matrix square root
  takes minutes on a loaded 2-core CI machine (test_image_metrics checks it).
  """
  _, _, _, npz = nets
  from configs import own_images  # pylint: disable=g-import-not-at-top
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  data_path = tmp_path / 'rgb.npz'
  np.savez(data_path, images=rng.integers(0, 256, (8, 32, 32, 3), np.uint8))
  config = own_images.get_config('size=32')
  config.data.path = str(data_path)
  config.eval.grid_rows = 2
  config.eval.metrics = 'kid,is'
  config.eval.inception_weights = npz
  config.eval.num_samples = config.eval.num_reference = 4
  config.eval.sample_batch_size = config.eval.inception_batch_size = 4
  config.eval.kid_subset_size = 2
  config.eval.kid_subsets = 3
  config.eval.is_splits = 2
  config.eval.cache_dir = str(tmp_path / 'cache')
  evaluate.check(config)
  keys = []

  def generate(g_state, key, num, labels=None):
    del g_state
    keys.append(np.asarray(jax.random.key_data(key)).tobytes())
    return jax.random.uniform(key, (num, 32, 32, 3), minval=-1, maxval=1)

  writer = mock.Mock()
  results = evaluate.evaluate(config, generate, None, 5, str(tmp_path), writer)
  for name in ('kid', 'kid/std', 'is', 'is/std'):
    assert np.isfinite(results[name]), (name, results)
  assert len(set(keys)) == len(keys) == 2  # The grid's z, then fresh z.
  assert os.path.exists(tmp_path / 'samples' / 'step_0000005.png')
  assert len(os.listdir(tmp_path / 'cache')) == 1  # The reference statistics.
  # The second evaluation draws the same noise (comparable over time) and
  # reads the cached reference statistics.
  again = evaluate.evaluate(config, generate, None, 6, str(tmp_path), writer)
  assert again == results and keys[2:] == keys[:2]
