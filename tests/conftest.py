"""Shared test helpers: a tiny config and a way to run launch.py."""
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
  return config


def run_launch(args, devices=1, timeout=300):
  """Runs launch.py in a fresh process with `devices` CPU devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture
def tiny():
  return tiny_config
