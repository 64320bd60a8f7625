"""launch.py as a user runs it: outputs, overrides, and one-line errors."""
import json
import logging
import os

from absl import logging as absl_logging
import pytest

from tests.conftest import ROOT
from tests.conftest import run_launch

TINY = ['--config.num_steps=4', '--config.batch_size=8', '--config.g.width=16',
        '--config.d.width=16', '--config.log_every=2', '--config.eval_every=4',
        '--config.checkpoint.every=4', '--config.eval.num_samples=100']


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def test_launch_trains_with_overrides_and_writes_resolved_config(tmp_path):
  workdir = tmp_path / 'run'
  ema = ['--config.ema.decay=0.5']  # Evaluated: the EMA G, then the trained G.
  result = run_launch(['--config', 'configs/default.py:loss=hinge',
                       f'--workdir={workdir}', '--config.seed=7', *TINY, *ema])
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.load(open(workdir / 'config.json'))
  assert config['loss']['name'] == 'hinge' and config['seed'] == 7
  assert config['num_steps'] == 4
  assert 'step 4/4' in result.stderr  # The progress line.
  assert 'eval step 4  modes' in result.stderr
  assert os.path.exists(workdir / 'checkpoints' / '4')
  # --mode=eval evaluates the saved generator again, with the same numbers.
  result = run_launch(['--config', 'configs/default.py:loss=hinge',
                       f'--workdir={workdir}', '--config.seed=7', *TINY, *ema,
                       '--mode=eval'])
  assert result.returncode == 0, result.stderr[-3000:]
  evaluated = json.load(open(workdir / 'eval_step_4.json'))
  logged = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  trained = [l for l in logged if 'modes' in l]
  assert len(trained) == 2 and trained[0] == trained[1]
  assert {k: trained[0][k] for k in ('modes', 'hq', 'kl')} == {
      k: evaluated[k] for k in ('modes', 'hq', 'kl')}
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4']  # Unchanged.
  # The trained G of the EMA run: its own file, picture and metric names
  # (and --eval_steps=all: every checkpoint kept, here step 4).
  result = run_launch(['--config', 'configs/default.py:loss=hinge',
                       f'--workdir={workdir}', '--config.seed=7', *TINY, *ema,
                       '--mode=eval', '--config.eval.ema=False',
                       '--eval_steps=all'])
  assert result.returncode == 0, result.stderr[-3000:]
  raw = json.load(open(workdir / 'eval_step_4_raw.json'))
  assert {'modes_raw', 'hq_raw', 'kl_raw'} <= set(raw), raw
  # Another generator's samples (not KL: NaN != NaN when no sample is sharp).
  assert (workdir / 'samples' / 'step_0000004_raw.png').read_bytes() != (
      workdir / 'samples' / 'step_0000004.png').read_bytes()
  assert json.load(open(workdir / 'eval_step_4.json')) == evaluated
  for steps, error in [('3,4', 'no checkpoint at step(s) [3]'),
                       ('x', '--eval_steps=x: give steps like')]:
    result = run_launch(['--config', 'configs/default.py:loss=hinge',
                         f'--workdir={workdir}', *TINY, *ema, '--mode=eval',
                         f'--eval_steps={steps}'])
    assert_one_line_error(result, error)


def test_eval_mode_without_a_run_is_one_line(tmp_path):
  result = run_launch(['--config=configs/default.py', '--mode=eval',
                       f'--workdir={tmp_path / "none"}'])
  assert_one_line_error(result, 'no checkpoints in')
  assert not os.path.exists(tmp_path / 'none')


@pytest.mark.parametrize('args, fragments', [
    (['--config.loss.name=nope'], ['unknown loss', 'hinge', 'wgan_gp']),
    (['--config=configs/default.py:loss=nope'], ['unknown loss']),
    (['--config.data.name=nope'], ['unknown dataset', 'grid25', 'ring8']),
    (['--config.model=nope'], ['unknown model', 'mlp']),
    (['--config.no_such_field=1'], ["unknown config field 'no_such_field'"]),
    (['--config.g.optimizer.lrr=1'], ["'g.optimizer.lrr'", 'lr']),
    (['--config.g.optimizer.lr=0'], ['g.optimizer.lr must be positive']),
    (['--config.d.optimizer.lr=-1e-3'], ['d.optimizer.lr must be positive']),
    (['--config.num_steps=0'], ['num_steps must be positive']),
    (['--config.batch_size=abc'], ['batch_size']),
    (['--config=configs/no_such_config.py'], ['no_such_config.py']),
])
def test_bad_input_gets_one_line(tmp_path, args, fragments):
  workdir = tmp_path / 'run'
  if not any(a.startswith('--config=') for a in args):
    args = ['--config=configs/default.py'] + args
  # The config file must come before its overrides.
  args = sorted(args, key=lambda a: not a.startswith('--config='))
  result = run_launch(args[:1] + [f'--workdir={workdir}', *TINY] + args[1:])
  assert_one_line_error(result, *fragments)
  assert not os.path.exists(workdir / 'checkpoints')


@pytest.mark.parametrize('content, fragments', [
    ('x = 1\n', ['is not a config file', 'no get_config()']),
    ('def get_config():\n  return 5\n', ["get_config() returned int '5'"]),
    # An exception with no message (it was an IndexError traceback).
    ('def get_config():\n  assert False\n', ['AssertionError with no message',
                                             'not_a_config.py']),
    (None, ['--config=launch.py is not a config file', 'command-line flags']),
])
def test_not_a_config_file_is_one_line(tmp_path, content, fragments):
  path = 'launch.py'  # A script: it defines flags.
  if content is not None:
    path = tmp_path / 'not_a_config.py'
    path.write_text(content)
  for override in ([], ['--config.num_steps=1']):  # Each fails elsewhere.
    result = run_launch([f'--config={path}', f'--workdir={tmp_path / "run"}',
                         *override])
    assert_one_line_error(result, *fragments)
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('extra', [[], ['--config.num_steps=2'],
                                   ['--mode=train']])
def test_training_without_config_is_one_line(tmp_path, extra):
  result = run_launch([f'--workdir={tmp_path / "run"}', *extra])
  assert_one_line_error(result, '--config is missing', 'configs/default.py')
  assert not os.path.exists(tmp_path / 'run')


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = run_launch(['--config=configs/default.py',
                       f'--workdir={blocker}/run', *TINY])
  assert_one_line_error(result, 'not writable', str(blocker))


def test_batch_not_divisible_by_devices(tmp_path):
  result = run_launch(['--config=configs/default.py', f'--workdir={tmp_path}',
                       *TINY, '--config.batch_size=6'], devices=4)
  assert_one_line_error(result, 'batch_size 6', '4 devices')


def test_default_workdir_is_under_runs(tmp_path):
  import launch  # pylint: disable=g-import-not-at-top
  path = launch.default_workdir('configs/default.py:loss=hinge')
  assert path.startswith(os.path.join('runs', 'default_'))


@pytest.mark.parametrize('name,path,level,kept', [
    # absl's logging.info: the logger is 'absl' for every caller.
    ('absl', 'gan_jax/train.py', logging.INFO, True),
    ('absl', 'gan_jax/data/pipeline.py', logging.INFO, True),
    ('absl', 'launch.py', logging.INFO, True),
    # A venv inside a checkout that is itself named gan_jax.
    ('absl', '.venv/lib/python3.11/site-packages/orbax/foo.py', logging.INFO,
     False),
    ('absl', '.venv/lib/python3.11/site-packages/orbax/foo.py',
     logging.WARNING, True),
    # Outside the checkout: a library's file, whatever its name.
    ('absl', '/usr/lib/python3/dist-packages/gan_jax/train.py', logging.INFO,
     False),
    # Loggers named after their module; the root logger goes by the file.
    ('jax._src.xla_bridge', 'gan_jax/train.py', logging.INFO, False),
    ('gan_jax.metrics', '.venv/x.py', logging.INFO, True),
    ('root', 'gan_jax/metrics/image_metrics.py', logging.INFO, True),
    ('root', 'tools/eval_real_images.py', logging.INFO, False),
])
def test_log_filter_keeps_info_of_gan_jax_modules_only(
    monkeypatch, name, path, level, kept):
  import launch  # pylint: disable=g-import-not-at-top
  root = '/x/gan_jax'  # The checkout; its name must not let libraries in.
  monkeypatch.setattr(launch, '_ROOT', root)
  record = logging.LogRecord(name, level, os.path.join(root, path), 1, 'm',
                             None, None)
  only_ours = launch._OnlyOurs()  # pylint: disable=protected-access
  assert only_ours.filter(record) == kept


def test_log_filter_on_this_checkout():
  import launch  # pylint: disable=g-import-not-at-top
  only_ours = launch._OnlyOurs()  # pylint: disable=protected-access
  def kept(path):
    return only_ours.filter(logging.LogRecord('absl', logging.INFO, path, 1,
                                              'm', None, None))
  assert kept(os.path.join(ROOT, 'gan_jax', 'train.py'))
  assert kept(os.path.join(ROOT, 'launch.py'))
  assert not kept(absl_logging.__file__)  # Wherever the venv is.
  assert not kept(os.path.join(ROOT, '.venv', 'lib', 'python3.11',
                               'site-packages', 'orbax', 'foo.py'))


@pytest.mark.parametrize('error,shown', [
    (RuntimeError('Event loop is closed'), False),  # orbax after a failed read.
    (RuntimeError('Event loop is closing'), True),
    (ValueError('Event loop is closed'), True),
])
def test_only_closed_loop_noise_is_hidden(error, shown):
  import types  # pylint: disable=g-import-not-at-top
  import launch  # pylint: disable=g-import-not-at-top
  seen = []
  unraisable = types.SimpleNamespace(exc_type=type(error), exc_value=error,
                                     exc_traceback=None, err_msg=None,
                                     object=None)
  launch._closed_loop_is_quiet(unraisable, default=seen.append)  # pylint: disable=protected-access
  assert seen == ([unraisable] if shown else [])


def test_bad_config_argument_is_one_plain_line(tmp_path):
  result = run_launch(['--config=configs/pacgan_grid.py:pack=0',
                       f'--workdir={tmp_path}'])
  assert_one_line_error(result, 'error: config argument pack=0: expected a '
                        'whole number >= 1 (--config=configs/pacgan_grid.py:'
                        'pack=0)')
