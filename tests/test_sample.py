"""--mode=sample: samples of a trained run's checkpoint, written to an .npz.

Two tiny runs are trained once, in this process: toy data with an EMA of G,
and a class-conditional image run (DCGAN on a small .npz, EMA on). Sampling
runs in this process (`train.sample_checkpoint`, with the config that
launch.py rebuilds from the run's config.json) and through launch.py, which
is also where the errors are checked: one `error:` line each.
"""
import concurrent.futures
import importlib
import json
import os
import time
from unittest import mock

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from gan_jax import evaluate
from gan_jax import run_config
from gan_jax import sampling
from gan_jax import train
from gan_jax import writers
from gan_jax.errors import UserError
from tests.conftest import for_model
from tests.conftest import run_launch
from tests.conftest import tiny_config
from tests.test_configs import GAN_CONFIGS
from tests.test_fault_tolerance import final_state
from tests.test_launch import assert_one_line_error


# The config each run below was trained with, by workdir.
TRAINED_WITH = {}


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
  """A finished toy run with an EMA of G: checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('toy') / 'run')
  config = tiny_config(num_steps=4, log_every=2, eval_every=4,
                       **{'checkpoint__every': 2, 'ema__decay': 0.5})
  train.train_and_evaluate(config, workdir)
  TRAINED_WITH[workdir] = config
  return workdir


@pytest.fixture(scope='module')
def image_run(tmp_path_factory):
  """A finished class-conditional image run (3 classes, 32x32 RGB)."""
  root = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  np.savez(root / 'd.npz', images=rng.integers(0, 256, (24, 32, 32, 3),
                                               np.uint8),
           labels=np.arange(24) % 3)
  config = tiny_config(num_steps=2, batch_size=8, log_every=1, eval_every=2,
                       steps_per_call=1, num_classes=3, z_dim=8,
                       **{'checkpoint__every': 2, 'ema__decay': 0.5})
  config.model = 'dcgan'
  config.data = ml_collections.ConfigDict(dict(
      name='images', path=str(root / 'd.npz'), seed=0, num_workers=0,
      image_size=None, channels=None))
  config.g.channels = config.d.channels = 4
  config.eval.grid_rows = 2
  config = for_model(config)
  workdir = str(root / 'run')
  train.train_and_evaluate(config, workdir)
  TRAINED_WITH[workdir] = config
  return workdir


def _sample(workdir, num, seed, out=None, **fields):
  """sample_checkpoint with the config launch.py makes of config.json, and
  `fields` (dotted names as a__b) overridden."""
  config = run_config.load(workdir)
  for key, value in fields.items():
    *parents, leaf = key.split('__')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return train.sample_checkpoint(config, workdir, num, seed,
                                 out and str(out))


@pytest.mark.parametrize('name', GAN_CONFIGS)
def test_config_json_gives_back_the_config(name, tmp_path):
  """No field changes type on the way through JSON (a tuple would come back
  a list); unset placeholders come back None."""
  config = importlib.import_module(f'configs.{name}').get_config()
  train._write_config(config, str(tmp_path))  # pylint: disable=protected-access
  assert run_config.load(str(tmp_path)).to_dict() == config.to_dict()


def _leaves(tree):
  return [(jax.tree_util.keystr(path), np.shape(x), np.asarray(x).dtype)
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_config_json_builds_the_same_state(toy_run, image_run):
  """The models and state of config.json are those of the config the run was
  trained with (not config.json against itself), and the checkpoint's."""
  for workdir in (toy_run, image_run):
    build = train._data_and_state  # pylint: disable=protected-access
    template = build(run_config.load(workdir))[1]
    trained = build(TRAINED_WITH[workdir])[1]
    state, _ = final_state(workdir)
    assert _leaves(template) == _leaves(trained) == _leaves(state)
    for net in ('g', 'd'):  # Flax modules compare by their fields.
      module = getattr(template, net).apply_fn.__self__
      assert module == getattr(trained, net).apply_fn.__self__
      assert hash(module) == hash(getattr(trained, net).apply_fn.__self__)


def test_toy_samples_come_from_the_ema_generator(toy_run, tmp_path):
  out, arrays = _sample(toy_run, 50, 1, tmp_path / 'a.npz')
  assert out == str(tmp_path / 'a.npz')
  with np.load(out) as f:
    assert sorted(f) == ['samples', 'step']  # Unconditional: no labels.
    samples, step = f['samples'], int(f['step'])
  assert step == 4 and samples.shape == (50, 2) and samples.dtype == np.float32
  np.testing.assert_array_equal(samples, arrays['samples'])
  assert not os.path.exists(tmp_path / 'a.png')  # Points: no grid.
  # The same draw by hand: noise row i of normal(fold_in(key, 1), (batch,
  # z_dim)) through G with the EMA parameters, not the trained ones.
  state, _ = final_state(toy_run)
  config = run_config.load(toy_run)
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), 1),
                        (evaluate.sample_batch_size(config), config.z_dim))
  def generate(params):
    return np.asarray(state.g.apply_fn(
        {'params': params, **state.g.model_state}, z, train=False))[:50]
  np.testing.assert_allclose(samples, generate(state.g_ema), rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(samples, generate(state.g.params), atol=1e-3)
  # --config.eval.ema=False: the trained G, in its own default file.
  out, raw = _sample(toy_run, 50, 1, eval__ema=False)
  assert out.endswith('samples_step_4_raw.npz') and os.path.exists(out)
  np.testing.assert_allclose(raw['samples'], generate(state.g.params),
                             rtol=1e-5, atol=1e-6)


def test_toy_samples_are_fixed_by_seed_and_checkpoint(toy_run, tmp_path):
  a = _sample(toy_run, 50, 1, tmp_path / 'a.npz')[0]
  b = _sample(toy_run, 50, 1, tmp_path / 'b.npz')[0]
  c = _sample(toy_run, 20, 1, tmp_path / 'c.npz')[1]['samples']
  d = _sample(toy_run, 50, 2, tmp_path / 'd.npz')[1]['samples']
  e = _sample(toy_run, 50, 1, tmp_path / 'e.npz', resume_from_step=2)[1]
  with open(a, 'rb') as f, open(b, 'rb') as g:
    assert f.read() == g.read()  # Byte for byte.
  samples = np.load(a)['samples']
  np.testing.assert_array_equal(c, samples[:20])  # Sample i whatever N is.
  assert not np.allclose(d, samples, atol=1e-3)  # Another seed.
  assert int(e['step']) == 2 and not np.allclose(e['samples'], samples,
                                                   atol=1e-3)


def test_image_samples_labels_and_grid(image_run, tmp_path):
  out, arrays = _sample(image_run, 7, 3, tmp_path / 's.npz')
  with np.load(out) as f:
    samples, labels, step = f['samples'], f['labels'], int(f['step'])
  assert step == 2 and samples.shape == (7, 32, 32, 3)
  assert samples.dtype == np.float32 and labels.dtype == np.int32
  assert -1 <= samples.min() < samples.max() <= 1
  # Spread over the 3 classes, as the image metrics draw them.
  np.testing.assert_array_equal(labels, np.arange(7) % 3)
  grid = np.asarray(Image.open(tmp_path / 's.png'))
  # grid_rows 2 rows (7 samples: 3 + 3, the last cut at 2 rows), a column
  # per class, 32 + 2 pixels each.
  assert grid.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
  # The samples are the EMA G's rows at --sample_seed (the rows evaluation
  # draws), from the checkpoint of the last step.
  state, _ = final_state(image_run)
  config = run_config.load(image_run)
  g = state.g.replace(params=state.g_ema)
  rows = sampling.make_sample_rows(config, g, jax.random.PRNGKey(3),
                                   evaluate.sample_batch_size(config))
  np.testing.assert_allclose(rows(0, 7), samples, rtol=1e-5, atol=1e-6)


def test_launch_samples_a_run_by_its_workdir_alone(image_run, tmp_path):
  """No --config: the run's config.json; two devices draw what one draws."""
  r = run_launch(['--mode=sample', f'--workdir={image_run}',
                  '--num_samples=5', '--sample_seed=3'], devices=2)
  assert r.returncode == 0, r.stderr[-3000:]
  out = os.path.join(image_run, 'samples_step_2.npz')
  assert f'Wrote 5 samples of step 2 to {out}' in r.stderr
  assert os.path.exists(os.path.join(image_run, 'samples_step_2.png'))
  expected = _sample(image_run, 5, 3, tmp_path / 'one.npz')[1]
  with np.load(out) as f:
    np.testing.assert_allclose(f['samples'], expected['samples'], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(f['labels'], expected['labels'])


def test_errors_are_one_line(toy_run, tmp_path):
  no_config = tmp_path / 'no_config'
  no_config.mkdir()
  no_checkpoint = tmp_path / 'no_checkpoint'
  no_checkpoint.mkdir()
  with open(os.path.join(toy_run, 'config.json')) as f:
    (no_checkpoint / 'config.json').write_text(f.read())
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  sample = ['--mode=sample', f'--workdir={toy_run}']
  cases = [
      (['--mode=sample', f'--workdir={tmp_path / "none"}'], 'no run in'),
      (['--mode=sample', f'--workdir={no_config}'], 'no config.json in'),
      (['--mode=sample', f'--workdir={no_checkpoint}'], 'no checkpoints in'),
      ([*sample, '--config.resume_from_step=3'],
       'no checkpoint at step(s) [3]'),
      ([*sample, '--num_samples=0'], '--num_samples=0'),
      ([*sample, f'--out={blocker}/s.npz'], 'cannot write'),
      ([*sample, '--out=s.png'], 'ending in .npz'),
      (['--mode=sample'], '--mode=sample needs --workdir'),
      (['--config=configs/default.py', f'--workdir={tmp_path / "t"}',
        '--num_samples=5', '--out=x.npz'],
       '--num_samples/--out goes with --mode=sample'),
      (['--mode=eval', f'--workdir={toy_run}', '--sample_seed=1'],
       '--sample_seed goes with --mode=sample'),
  ]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda case: run_launch(case[0]), cases))
  for (args, fragment), result in zip(cases, results):
    assert_one_line_error(result, fragment)
  assert not os.path.exists(tmp_path / 'none')
  assert not os.path.exists(tmp_path / 't')
  assert sorted(os.listdir(no_checkpoint)) == ['config.json']


def test_eval_mode_reads_config_json_too(toy_run):
  r = run_launch(['--mode=eval', f'--workdir={toy_run}'])
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(toy_run, 'eval_step_4.json')) as f:
    assert json.load(f)['step'] == 4


def test_more_samples_than_memory_fail_before_sampling(toy_run, tmp_path):
  out = tmp_path / 'huge.npz'
  with pytest.raises(UserError, match=r'--num_samples=10{12}: the samples '
                     r'\(2 float32 each\) would take 7,450.6 GiB, more than '
                     "half of this machine's"):
    _sample(toy_run, 10**12, 1, out)  # 8 TB of points.
  assert not os.listdir(tmp_path)


def test_seed_out_of_range(toy_run):
  with pytest.raises(UserError, match='sample_seed=-1'):
    _sample(toy_run, 4, -1)


def test_npz_bytes_do_not_depend_on_the_time(tmp_path):
  """writers.save_npz: the same arrays written an hour apart are the same
  bytes (so a sample file's sha256 names its content), and no .tmp is left."""
  arrays = {'samples': np.arange(12, dtype=np.float32).reshape(6, 2),
            'step': np.int64(4)}
  writers.save_npz(tmp_path / 'a.npz', arrays)
  later = time.time() + 3600
  with mock.patch.object(time, 'time', lambda: later):
    writers.save_npz(tmp_path / 'b.npz', arrays)
  assert (tmp_path / 'a.npz').read_bytes() == (tmp_path / 'b.npz').read_bytes()
  assert sorted(os.listdir(tmp_path)) == ['a.npz', 'b.npz']
  with np.load(tmp_path / 'a.npz') as loaded:
    np.testing.assert_array_equal(loaded['samples'], arrays['samples'])
