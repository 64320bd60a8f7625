"""Fuzzing start-up: perturbed config fields and damaged run files end in a run
or in one `error:` line with a non-zero exit, never a traceback or a hang.

Most cases run in this process: `--config.FIELD=VALUE` overrides are parsed
as launch.py parses them (ml_collections' config_flags; launch.py turns any
parse error into one line), then the cheap part of start-up runs (the checks,
the data iterator of toy data, the models and the shapes of the train state).
A UserError is a clean rejection (launch.py prints it as one line); any other
exception is a failure. A few cases run launch.py end to end.

CI runs a fixed seed. More cases:
    GAN_JAX_FUZZ_CASES=2000 GAN_JAX_FUZZ_LAUNCHES=20 GAN_JAX_FUZZ_SEED=1 \
        python -m pytest -s tests/test_fuzz.py
(-s prints the counts: cases, valid, clean errors, tracebacks.)
"""
import collections
import fnmatch
import importlib
import os
import random
import shutil
import signal
import subprocess
import traceback

from absl import flags
import jax
from ml_collections import config_dict
from ml_collections import config_flags
import pytest

from gan_jax import checks
from gan_jax import cli
from gan_jax import data
from gan_jax import evaluate
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import toy
from gan_jax.errors import UserError
from tests.conftest import ROOT
from tests.conftest import run_launch

# ml_collections loads config files with the deprecated load_module.
pytestmark = pytest.mark.filterwarnings('ignore:the load_module')

SEED = int(os.environ.get('GAN_JAX_FUZZ_SEED', 0))
CASES = int(os.environ.get('GAN_JAX_FUZZ_CASES', 60))
# launch.py runs of each kind (perturbed fields; damaged files).
LAUNCHES = int(os.environ.get('GAN_JAX_FUZZ_LAUNCHES', 0)) or None
CASE_SECONDS = 60  # An in-process case that takes longer hangs.
LAUNCH_SECONDS = 180

CONFIGS = sorted(
    f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
    if f.endswith('.py') and f not in ('__init__.py', 'image_base.py',
                                       'mnist_classifier.py'))
# What a field gets, mostly from its type's list: zero, negative, huge, NaN,
# infinite, empty, None, and names other fields take (valid elsewhere, maybe
# not here); else anything, as a wrong type.
VALUES = {
    int: ['0', '1', '-1', '3', '2147483647', '2147483648', '-2147483649'],
    float: ['0', '-1', '-0.5', '0.5', '1', '1.5', '1e-30', '1e30', 'nan',
            'inf', '-inf'],
    str: ['', ' ', 'None', 'abc', 'relu', 'spectral', 'batch', 'hinge',
          'wasserstein', 'wgan_gp', 'r1', 'grid25', 'ring8', 'mnist', 'dcgan',
          'mlp', 'simultaneous', 'skip', 'cosine', 'bfloat16', 'cbn', 'acgan',
          'color,cutout', 'phases', 'fid', 'resize_conv', 'xla'],
    bool: ['true', 'false'],
}
ANY = sorted({v for values in VALUES.values() for v in values}) + [
    '1,2', '99999999999999999999', 'True']
# End to end only values that keep an accepted run short and small (a huge
# num_steps trains for days, a huge batch_size fills the memory).
LAUNCH_VALUES = {
    int: ['0', '-1', '3'], float: ['0', '-1', '0.5', 'nan', 'inf'],
    str: ['', 'None', 'hinge', 'skip', 'spectral', 'cosine'],
    bool: ['true', 'false'], None: ['1.5', 'abc', '', '-0.5']}
TINY = {'num_steps': 4, 'batch_size': 8, 'log_every': 2, 'eval_every': 4,
        'checkpoint.every': 4, 'eval.num_samples': 100, 'g.width': 16,
        'd.width': 16}
IMAGE_SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1),
                'cifar10': (32, 32, 3), 'celeb_a': (64, 64, 3)}


def fields(config, prefix=''):
  """The dotted names of `config`'s leaf fields."""
  for key, value in config.items():
    if isinstance(value, config_dict.ConfigDict):
      yield from fields(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def argv_of(name, overrides):
  return ['launch.py', f'--config={os.path.join(ROOT, "configs", name)}.py',
          *overrides]


def parse(name, overrides):
  """The config launch.py gets for `--config=configs/NAME.py` + overrides."""
  argv = argv_of(name, overrides)
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      'config', None, '', flag_values=flag_values, lock_config=True,
      sys_argv=argv)
  flag_values(argv)
  return holder.value


def start_up(config):
  """The part of train._start that needs no workdir, dataset files or
  compilation: the checks, the data's example shape, the models and the
  shapes of the train state."""
  checks.validate(config)
  evaluate.check(config)
  name = config.data.name
  if name in toy.DEFAULTS or name not in data.DATASETS:
    shape = data.build(config, config.batch_size).example_shape
  else:  # Image data: the shape it would have (its files are not here).
    size = config.data.get('image_size')
    channels = config.data.get('channels') or 3
    shape = IMAGE_SHAPES.get(name, (size, size, channels))
    if size:
      shape = (size, size, shape[2])
  evaluate.check_image_shape(config, shape)
  g, d = models.build(config, shape)
  jax.eval_shape(lambda: state_lib.create(config, g, d, shape))


class Hang(Exception):
  pass


def _raise_hang(signum, frame):
  raise Hang(f'no result in {CASE_SECONDS} s')


def run_case(name, overrides):
  """'valid', 'clean' or the traceback of a failure."""
  previous = signal.signal(signal.SIGALRM, _raise_hang)
  signal.alarm(CASE_SECONDS)
  try:
    try:
      config = parse(name, overrides)
    except Exception as e:  # pylint: disable=broad-except
      # launch.py prints cli.flag_error's line: judged as a UserError below.
      raise UserError(cli.flag_error(e, argv_of(name, overrides))) from None
    start_up(config)
    return 'valid'
  except UserError as e:
    message = str(e)
    if message.strip() and '\n' not in message:
      return 'clean'
    return f'UserError of {len(message.splitlines())} lines: {message!r}'
  except Exception:  # pylint: disable=broad-except
    return traceback.format_exc(limit=-3)
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def field_types(config):
  """{dotted name: type} of `config`'s fields (a placeholder's too)."""
  out = {}
  for name in fields(config):
    *parents, leaf = name.split('.')
    node = config
    for part in parents:
      node = node[part]
    out[name] = node.get_type(leaf)
  return out


def draw_cases(rng, count, values, configs=CONFIGS):
  """`count` (config, overrides) pairs, each with 1-3 perturbed fields; a
  value from `values[type of the field]` or (30%) from `values[None]`."""
  types = {n: field_types(importlib.import_module(f'configs.{n}').get_config())
           for n in configs}
  for _ in range(count):
    name = rng.choice(configs)
    chosen = rng.sample(sorted(types[name]), rng.choice([1, 1, 2, 3]))
    pools = [values.get(types[name][f]) if rng.random() < 0.7 else None
             for f in chosen]
    yield name, [f'--config.{f}={rng.choice(pool or values[None])}'
                 for f, pool in zip(chosen, pools)]


def test_perturbed_fields_start_or_fail_in_one_line():
  counts, failures = collections.Counter(), []
  values = {**VALUES, None: ANY}
  for name, overrides in draw_cases(random.Random(SEED), CASES, values):
    outcome = run_case(name, overrides)
    counts[outcome if outcome in ('valid', 'clean') else 'traceback'] += 1
    if outcome not in ('valid', 'clean'):
      failures.append(f'{name} {" ".join(overrides)}\n{outcome}')
  print(f'\nfuzz seed {SEED}: {CASES} cases, {counts["valid"]} valid, '
        f'{counts["clean"]} clean errors, {counts["traceback"]} tracebacks')
  assert not failures, f'{len(failures)} failures:\n' + '\n'.join(failures[:10])
  assert counts['valid'] and counts['clean']  # The fuzz reaches both ends.


def assert_run_or_one_error_line(result):
  stderr = result.stderr
  assert 'Traceback' not in stderr, stderr[-3000:]
  if result.returncode != 0:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith('error: '), stderr[-3000:]
    assert sum(l.startswith('error: ') for l in lines) == 1, stderr[-3000:]


def tiny_flags(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  have = set(fields(config))
  return [f'--config.{k}={v}' for k, v in TINY.items() if k in have]


# Configs that train on toy data: an accepted case runs to the end in seconds.
TOY_CONFIGS = [n for n in CONFIGS if importlib.import_module(
    f'configs.{n}').get_config().data.name in toy.DEFAULTS]


@pytest.mark.parametrize('case', range(LAUNCHES or 2))
def test_perturbed_fields_through_launch(tmp_path, case):
  rng = random.Random(f'{SEED} launch {case}')
  (name, overrides), = draw_cases(rng, 1, LAUNCH_VALUES, TOY_CONFIGS)
  result = run_launch([f'--config=configs/{name}.py', f'--workdir={tmp_path}',
                       *tiny_flags(name), *overrides], timeout=LAUNCH_SECONDS)
  assert_run_or_one_error_line(result)
  print(name, *overrides, '->', result.stderr.splitlines()[-1]
        if result.returncode else 'exit 0')


# --- Damaged run files --------------------------------------------------------

DAMAGE_FLAGS = ['--config=configs/default.py', *tiny_flags('default')]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A finished tiny run's workdir, trained in this process with the config
  launch.py makes of DAMAGE_FLAGS."""
  workdir = str(tmp_path_factory.mktemp('fuzz') / 'run')
  train.train_and_evaluate(parse('default', DAMAGE_FLAGS[1:]), workdir)
  return workdir


def run_files(workdir):
  """The files of a run that a relaunch reads, relative to `workdir`."""
  out = []
  for folder, _, names in os.walk(workdir):
    out += [os.path.relpath(os.path.join(folder, n), workdir) for n in names]
  return sorted(f for f in out if fnmatch.fnmatch(f, 'checkpoints/*')
                or f in ('config.json', 'metrics.jsonl'))


KINDS = ('truncate', 'flip', 'delete', 'folder')


def damage(path, kind, rng):
  """Truncates, flips bytes in, deletes, or replaces by a folder the file."""
  if kind in ('delete', 'folder'):
    os.remove(path)
    if kind == 'folder':
      os.makedirs(path)
    return
  with open(path, 'rb') as f:
    content = bytearray(f.read())
  if kind == 'truncate':
    content = content[:len(content) // 2]
  else:
    for _ in range(min(8, len(content))):
      content[rng.randrange(len(content))] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(content)


def relaunch_damaged(finished_run, workdir, target, kind, rng):
  """Damages `target` in a copy of the run and asserts the relaunch's end."""
  shutil.copytree(finished_run, workdir)
  damage(os.path.join(workdir, target), kind, rng)
  result = run_launch([*DAMAGE_FLAGS, f'--workdir={workdir}'],
                      timeout=LAUNCH_SECONDS)  # Raises after that: a hang.
  assert_run_or_one_error_line(result)
  return result.returncode


# Cases known to fail: (file pattern, kind) -> the failure. None now: a damaged
# array store used to print orbax's 'Event loop is closed' tracebacks beside
# the error line (launch.py's _closed_loop_is_quiet).
KNOWN = {}


def _known(target, kind):
  return next((why for (pattern, kinds), why in KNOWN.items()
               if fnmatch.fnmatch(target, pattern)
               and fnmatch.fnmatch(kind, kinds)), None)


# CI's cases: (pattern of the file, kind); a seeded choice among its files.
DAMAGE_CASES = [('config.json', 'folder'), ('metrics.jsonl', 'flip'),
                ('checkpoints/*/state/_METADATA', 'truncate'),
                ('checkpoints/*/state/manifest.ocdbt', 'truncate')]


@pytest.mark.parametrize('pattern, kind', [
    pytest.param(p, k, marks=[pytest.mark.xfail(strict=False, reason=_known(
        p, k))] if _known(p, k) else []) for p, k in DAMAGE_CASES])
def test_damaged_run_relaunches_or_fails_in_one_line(
    finished_run, tmp_path, pattern, kind):
  rng = random.Random(f'{SEED} {pattern} {kind}')
  target = rng.choice(fnmatch.filter(run_files(finished_run), pattern))
  relaunch_damaged(finished_run, tmp_path / 'run', target, kind, rng)


@pytest.mark.skipif(not LAUNCHES, reason='GAN_JAX_FUZZ_LAUNCHES=N: N cases')
def test_many_damaged_runs_relaunch_or_fail_in_one_line(finished_run, tmp_path):
  """Every (file, kind) of the finished run, or a sample of LAUNCHES."""
  rng = random.Random(f'{SEED} damage')
  cases = [(f, k) for f in run_files(finished_run) for k in KINDS]
  counts, failures = collections.Counter(), []
  cases = rng.sample(cases, min(LAUNCHES, len(cases)))
  for i, (target, kind) in enumerate(cases):
    try:
      code = relaunch_damaged(finished_run, tmp_path / str(i), target, kind,
                              rng)
      counts['clean error' if code else 'exit 0'] += 1
    except (AssertionError, subprocess.TimeoutExpired) as e:
      known = _known(target, kind)
      counts['known' if known else 'failed'] += 1
      if not known:
        failures.append(f'{target} {kind}: {str(e)[-500:]}')
  print(f'\ndamage fuzz: {sum(counts.values())} cases, {dict(counts)}')
  assert not failures, '\n'.join(failures)
