"""Image metrics on several hosts: 2 processes x 2 CPU devices vs 1 x 4.

Each process draws and embeds its share of the generated and real images and
the features are gathered, so both runs must give the same FID/KID/IS/PR/DC
on the same samples. The features are a small classifier's (the `clf`
space: no download, cheap on CPU), trained in seconds as in
test_classifier_metrics.py; the generator is a stand-in that copies real
images with a brightness shift, so that no metric is at a trivial value.
This file is also the worker: `python tests/test_distributed_eval.py SPEC`.
"""
import json
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import sampling
from gan_jax import state as state_lib
from gan_jax.metrics import shards
# pylint: enable=g-import-not-at-top,wrong-import-position

METRICS = 'fid_clf,kid_clf,is_clf,pr_clf,dc_clf,classes_clf'
BANK = 24  # Real images the stand-in generator copies.
TIMEOUT = 120


def _squares(n, seed):
  """(float32 [n, 28, 28, 1], labels [n]): a bright 8x8 square in corner
  `label` (of 4), on noise."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, -0.6, (n, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 4, n).astype(np.int32)
  for image, k in zip(images, labels):
    top, left = 2 + 16 * (k // 2), 2 + 16 * (k % 2)
    image[top:top + 8, left:left + 8] = rng.uniform(0.5, 1)
  return images, labels


def _save_npz(path, n, seed):
  images, labels = _squares(n, seed)
  np.savez(path, images=((images + 1) * 127.5).round().astype(np.uint8),
           labels=labels)
  return str(path)


class NoisyCopies(nn.Module):
  """G stand-in: z's argmax over its first BANK entries picks a real image
  of `bank`, its last entry shifts the brightness."""

  @nn.compact
  def __call__(self, z, train=False):
    del train
    bank = self.param('bank', nn.initializers.zeros, (BANK, 28, 28, 1))
    shift = 0.1 * z[:, -1, None, None, None]
    return bank[jnp.argmax(z[:, :BANK], axis=1)] + shift


def _generator():
  return state_lib.NetState.create(
      apply_fn=NoisyCopies().apply, params={'bank': _squares(BANK, seed=7)[0]},
      tx=optax.identity())


def _config(spec):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data.name = 'images'
  config.data.path = spec['npz']
  config.z_dim = BANK + 1
  config.eval.grid_rows = 2
  # 160 samples in pieces of 80 per host (100 on one): the hosts' pieces
  # cross the noise batches of 100; 200 real images, 100 per host.
  config.eval.update(dict(
      metrics=METRICS, classifier_checkpoint=spec['classifier'],
      cache_dir=spec['cache'], num_samples=160, num_reference=200,
      sample_batch_size=100, kid_subsets=5, kid_subset_size=100,
      is_splits=4))
  config.eval.update(spec.get('eval', {}))  # Larger runs, for timings.
  return config


class _Writer:
  def write_image(self, *args):
    del args


def _worker(spec):
  """One process: evaluates twice, the second time with the reference
  statistics cached; writes {'results', 'seconds', 'real_reads'}."""
  from gan_jax import distributed  # pylint: disable=g-import-not-at-top
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  from gan_jax.metrics import reference  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  if spec.get('gather_bytes'):  # The test's: few rows per collective.
    shards._GATHER_BYTES = spec['gather_bytes']
  if spec['processes'] > 1:
    distributed.initialize(
        coordinator_address=f'localhost:{spec["port"]}',
        num_processes=spec['processes'], process_id=spec['index'],
        timeout_s=60)
  reads = []
  extract_real = reference.extract_real_features

  def counted(*args, **kwargs):
    reads.append(1)
    return extract_real(*args, **kwargs)
  reference.extract_real_features = counted
  config, g, out = _config(spec), _generator(), {'results': [], 'seconds': []}
  generate = sampling.make_generate(config)
  for step in (1, 2):
    t0 = time.perf_counter()
    out['results'].append(evaluate.evaluate(
        config, generate, g, step, spec['workdir'], _Writer()))
    out['seconds'].append(time.perf_counter() - t0)
  out['real_reads'] = len(reads)
  with open(spec['out'], 'w') as f:
    json.dump(out, f)


# --- The test process ---------------------------------------------------------


def _start(spec, devices):
  env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
  env.update(JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  os.makedirs(spec['workdir'])
  return subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), json.dumps(spec)], cwd=ROOT,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs, specs):
  """The workers' outputs; any still running on a failure are killed (a
  process whose peer failed would wait for it)."""
  try:
    outs = []
    for proc, spec in zip(procs, specs):
      text, _ = proc.communicate(timeout=TIMEOUT)
      assert proc.returncode == 0, text[-3000:]
      with open(spec['out']) as f:
        outs.append(json.load(f))
    return outs
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """(npz of 256 real images, a classifier checkpoint trained on others)."""
  from configs import mnist_classifier  # pylint: disable=g-import-not-at-top
  from tools import train_classifier  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('data')
  config = mnist_classifier.get_config('data=images')
  config.data.path = _save_npz(root / 'train.npz', 384, seed=0)
  config.num_classes, config.batch_size, config.num_epochs = 4, 32, 4
  config.classifier.widths, config.classifier.features = (8, 16), 32
  config.log_every = 1000
  train_classifier.train(config, str(root / 'clf'))
  return _save_npz(root / 'real.npz', 256, seed=1), str(root / 'clf')


def test_each_sample_is_the_same_however_the_rows_are_split():
  config = _config({'npz': '', 'classifier': '', 'cache': ''})
  key, g = jax.random.PRNGKey(3), _generator()
  generate = sampling.make_generate(config)
  rows = generate.sample_rows(g, key, batch=40)  # All devices.
  whole = np.concatenate([rows(0, 40), rows(40, 80), rows(80, 90)])
  pieces = [(0, 7), (7, 33), (33, 70), (70, 71), (71, 90)]
  for rows in (rows, sampling.rows_from(generate, g, key, 40)):
    np.testing.assert_array_equal(
        np.concatenate([rows(a, b) for a, b in pieces]), whole)
  # What one process drew before: `generate` on batch b's key.
  for b in range(2):
    np.testing.assert_array_equal(
        whole[40 * b:40 * (b + 1)],
        generate(g, jax.random.fold_in(key, b + 1), 40))


def test_process_rows_partition_the_samples_like_host_batches():
  for num, per in [(160, 80), (200, 100), (7, 3), (3, 1), (5, 2)]:
    owned = [shards.rows(num, per, i, 2) for i in range(2)]
    np.testing.assert_array_equal(np.sort(np.concatenate(owned)),
                                  np.arange(num))
    # Process i's rows of every global chunk of 2 * per: its slice, as the
    # data pipeline gives host i its slice of every global batch.
    for i, rows in enumerate(owned):
      assert all((r % (2 * per)) // per == i for r in rows)
  # Every process has rows: 80 + 80 of 160, 3 + 1 and 3 of 7.
  assert [shards.chunk_size(n, 100, 2) for n in (160, 7)] == [80, 3]
  assert shards.chunk_size(160, 100, 1) == 100


def test_two_hosts_evaluate_what_one_host_evaluates(data, tmp_path):
  from tests import test_multihost  # pylint: disable=g-import-not-at-top
  npz, clf = data

  def spec(name, processes, index=0, port=0):
    d = tmp_path / name
    return {'npz': npz, 'classifier': clf, 'processes': processes,
            'index': index, 'port': port, 'gather_bytes': 2048,
            'cache': str(d / 'cache'), 'workdir': str(d / 'work'),
            'out': str(d / 'out.json')}

  port = test_multihost.free_port()
  specs = [spec('one', 1)] + [spec(f'two{i}', 2, i, port) for i in range(2)]
  one, *two = _finish([_start(specs[0], devices=4)]
                      + [_start(s, devices=2) for s in specs[1:]], specs)
  print('seconds per evaluation: 1 process x 4 devices', one['seconds'],
        '; 2 x 2:', two[0]['seconds'], two[1]['seconds'])
  want = one['results'][0]
  assert len(want) == 12, want
  for run in (one, *two):
    assert run['results'][1] == run['results'][0]
    # The second evaluation read no real images: process 0 had the cache
    # (process 1's cache_dir, another folder, stays empty).
    assert run['real_reads'] == 1
  # Both hosts got the same numbers, those of one host to float tolerance.
  assert two[0]['results'] == two[1]['results']
  got = two[0]['results'][0]
  assert set(got) == set(want)
  for name, value in want.items():
    assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
  print('1 process:', want, '\nlargest relative difference of 2:', max(
      abs(got[k] - v) / max(abs(v), 1e-12) for k, v in want.items()))
  # Process 0 alone wrote: the picture and the reference statistics' cache.
  assert os.listdir(specs[1]['workdir']) == ['samples']
  assert not os.listdir(specs[2]['workdir'])
  assert not os.path.exists(specs[2]['cache'])
  cached = [os.path.join(s['cache'], os.listdir(s['cache'])[0])
            for s in specs[:2]]
  assert os.path.basename(cached[0]) == os.path.basename(cached[1])
  with np.load(cached[0]) as a, np.load(cached[1]) as b:
    np.testing.assert_allclose(a['features'], b['features'], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(a['sigma'], b['sigma'], rtol=1e-6, atol=1e-9)


if __name__ == '__main__':
  _worker(json.loads(sys.argv[1]))
