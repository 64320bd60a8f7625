"""Shared test helpers: a tiny config, a way to run launch.py, and the skips of
tests that need the test-only requirements (requirements-test.txt)."""
import os
import subprocess
import sys
import tempfile

import pytest

# Compiled programs are cached on disk and shared by every test and launch.py
# subprocess (they inherit the environment): many tests launch the same tiny
# config several times, and on CI's 2 cores compiling dominates.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'gan_jax_tests_jax_cache_{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# In the skip reason of every test that needs requirements-test.txt.
EXTRA_SKIP = 'a test-only requirement'


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'extras: needs a test-only requirement (torch, pytorch-fid, '
      'scikit-learn, prdc, clean-fid): pip install -r requirements-test.txt. '
      "Skipped without it; `-m extras` runs only these.")


def importorskip_extra(module, package):
  """Imports `module` of the test-only requirement `package`, or skips.

  The README's install is requirements.txt alone, and the suite must pass
  there: the tests that compare with reference packages skip, saying what to
  install. Such tests also carry the `extras` marker.
  """
  __tracebackhide__ = True  # Skips are reported at the caller's line.
  return pytest.importorskip(
      module, reason=f'needs {package}, {EXTRA_SKIP}: '
      'pip install -r requirements-test.txt')


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  # A test that skips for a test-only requirement but lacks the `extras`
  # marker would run in no CI run (.ci/run's run with the extras is
  # `-m extras` only): it fails instead.
  report = yield
  if (report.skipped and call.excinfo is not None
      and EXTRA_SKIP in str(call.excinfo.value)
      and item.get_closest_marker('extras') is None):
    report.outcome = 'failed'
    report.longrepr = (f'{item.nodeid} skips for {EXTRA_SKIP} but is not '
                       'marked @pytest.mark.extras')
  return report


def tiny_config(arg=None, **overrides):
  """configs/default.py shrunk for tests; `overrides` use dotted names as keys."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config(arg)
  config.g.width = config.d.width = 32
  config.g.depth = config.d.depth = 2
  config.batch_size = 16
  config.num_steps = 6
  config.log_every = 2
  config.eval_every = 6
  config.eval.num_samples = 200
  config.checkpoint.every = 3
  config.checkpoint.use_async = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return for_model(config) if 'model' in overrides else config


def for_model(config):
  """Drops the fields of config.g / config.d that config.model does not read
  (gan_jax/models/registry.py), as a config made for that model would."""
  from gan_jax import checks  # pylint: disable=g-import-not-at-top
  from gan_jax import models  # pylint: disable=g-import-not-at-top
  model = models.get(config.model)
  for net in ('g', 'd'):
    read = checks.STEP_FIELDS[net] + model.fields(net)
    for field in [f for f in config[net].keys() if f not in read]:
      del config[net][field]
  return config


def run_launch(args, devices=1, timeout=300):
  """Runs launch.py in a fresh process with `devices` CPU devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def tiny_digits_run(data_path, workdir):
  """launch.py arguments: configs/mnist_dcgan.py on the 28x28 images at
  `data_path` (resize_conv: the same parameters, compiles faster on CPU), 2
  steps of batch 8, evaluated (2x2 grid) and saved at step 2 in `workdir`."""
  return ['--config=configs/mnist_dcgan.py:data=images',
          f'--config.data.path={data_path}', '--config.g.upsample=resize_conv',
          '--config.batch_size=8', '--config.num_steps=2',
          '--config.steps_per_call=1', '--config.log_every=1',
          '--config.eval_every=2', '--config.checkpoint.every=2',
          '--config.eval.grid_rows=2', f'--workdir={workdir}']


@pytest.fixture
def tiny():
  return tiny_config
