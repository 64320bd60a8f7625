"""Runs that survive: SIGKILL, SIGTERM, kills during saves, bad checkpoints,
config changes and non-finite losses. Each run is a real launch.py process."""
import os
import random
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from gan_jax import checkpoint
from gan_jax import data
from gan_jax import models
from gan_jax import state as state_lib
from tests.conftest import ROOT
from tests.conftest import run_launch

BASE = ['--config=configs/default.py', '--config.batch_size=16',
        '--config.g.width=16', '--config.d.width=16',
        '--config.eval.num_samples=100']


def final_state(workdir):
  """(state, data state) of the latest checkpoint in `workdir` (local or
  gs://), restored with the run's own config."""
  import json  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(
      json.loads((epath.Path(workdir) / 'config.json').read_text()))
  it = data.build(config, config.batch_size)
  template = state_lib.create(config, *models.build(config, it.example_shape),
                              it.example_shape)
  ckpt = checkpoint.Checkpointer(workdir, config)
  state, data_state = ckpt.restore(ckpt.latest_step(), template)
  ckpt.close()
  return state, data_state


def assert_same_run(a, b):
  (sa, da), (sb, db) = final_state(a), final_state(b)
  assert da == db
  assert int(sa.step) == int(sb.step)
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def finished_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def start_launch(args, devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen([sys.executable, os.path.join(ROOT, 'launch.py'), *args],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120):
  t0 = time.time()
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError('the run ended early:\n' + proc.stderr.read()[-3000:])
    if time.time() - t0 > timeout:
      proc.kill()
      raise AssertionError('timed out')
    time.sleep(0.05)


# Slow enough (one step per call, a save every 10 steps) to be killed midway.
SLOW = ['--config.num_steps=60', '--config.steps_per_call=1',
        '--config.checkpoint.every=10', '--config.log_every=10',
        '--config.eval_every=60']


@pytest.mark.parametrize('devices', [1, 4])
def test_sigkill_then_relaunch_is_bitwise_identical(tmp_path, devices):
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  r = run_launch([*BASE, *SLOW, f'--workdir={straight}'], devices=devices)
  assert r.returncode == 0, r.stderr[-3000:]
  proc = start_launch([*BASE, *SLOW, f'--workdir={killed}'], devices=devices)
  wait_for(lambda: finished_steps(killed), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert finished_steps(killed)[-1] < 60  # Killed before the end.
  assert os.path.exists(os.path.join(killed, 'run.lock'))  # Left behind.
  r = run_launch([*BASE, *SLOW, f'--workdir={killed}'], devices=devices)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resumed from the checkpoint at step' in r.stderr
  assert 'Took over' in r.stderr  # The dead run's lock.
  assert not os.path.exists(os.path.join(killed, 'run.lock'))
  assert_same_run(straight, killed)


def test_sigterm_saves_the_current_step_and_relaunch_continues(tmp_path):
  workdir = str(tmp_path / 'run')
  args = [*BASE, '--config.num_steps=100000', '--config.steps_per_call=1',
          '--config.checkpoint.every=1000000', '--config.log_every=1000000',
          '--config.eval_every=1000000', f'--workdir={workdir}']
  proc = start_launch(args)
  # Wait until it trains (its metrics file exists), then preempt it.
  wait_for(lambda: os.path.exists(os.path.join(workdir, 'metrics.jsonl')), proc)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'Stopped by SIGTERM at step' in err
  assert not os.path.exists(os.path.join(workdir, 'run.lock'))  # Released.
  saved = finished_steps(workdir)
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f'at step {saved[0]};' in err
  args_more = [a if not a.startswith('--config.num_steps') else
               f'--config.num_steps={saved[0] + 5}' for a in args]
  r = run_launch(args_more)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Resumed from the checkpoint at step {saved[0]}' in r.stderr
  assert finished_steps(workdir)[-1] == saved[0] + 5


def test_kills_during_saves_never_break_resume(tmp_path):
  # Save every step, so that random kills land in the middle of saves.
  workdir = str(tmp_path / 'run')
  args = [*BASE, '--config.num_steps=40', '--config.steps_per_call=1',
          '--config.checkpoint.every=1', '--config.checkpoint.keep=2',
          '--config.log_every=1000', '--config.eval_every=1000',
          f'--workdir={workdir}']
  rng = random.Random(0)
  kills = int(os.environ.get('GAN_JAX_KILL_TEST_KILLS', '6'))
  landed = 0  # Kills that stopped a run before its end (not after it).
  for _ in range(kills):
    before = finished_steps(workdir)
    proc = start_launch(args)
    wait_for(lambda: finished_steps(workdir) != before and
             finished_steps(workdir)[-1] > (before or [0])[-1], proc)
    time.sleep(rng.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed += proc.returncode == -signal.SIGKILL
    if finished_steps(workdir) and finished_steps(workdir)[-1] == 40:
      break
  assert landed >= 1  # Else this test is only 'a finished run resumes'.
  r = run_launch(args)
  assert r.returncode == 0, r.stderr[-3000:]
  assert finished_steps(workdir)[-1] == 40
  straight = str(tmp_path / 'straight')
  r = run_launch([a if not a.startswith('--workdir') else f'--workdir={straight}'
                  for a in args])
  assert r.returncode == 0, r.stderr[-3000:]
  assert_same_run(straight, workdir)


def test_changed_config_is_refused_harmless_change_is_not(tmp_path):
  workdir = str(tmp_path / 'run')
  args = [*BASE, '--config.num_steps=4', '--config.checkpoint.every=2',
          '--config.log_every=2', '--config.eval_every=4', f'--workdir={workdir}']
  assert run_launch(args).returncode == 0
  listing = sorted(os.listdir(workdir))
  config_json = open(os.path.join(workdir, 'config.json')).read()
  r = run_launch([*args, '--config.loss.name=hinge', '--config.batch_size=32'])
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  err = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and 'loss.name' in err[0] and 'batch_size' in err[0]
  assert 'allow_config_change' in err[0]
  assert sorted(os.listdir(workdir)) == listing  # Nothing changed.
  assert open(os.path.join(workdir, 'config.json')).read() == config_json
  # nonfinite=skip changes the optimizer state's tree: refused by name, not
  # left to a restore that does not fit.
  r = run_launch([*args, '--config.nonfinite=skip'])
  err = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert r.returncode == 2 and len(err) == 1, r.stderr[-2000:]
  assert "nonfinite: 'stop' -> 'skip'" in err[0]
  r = run_launch([*args, '--config.num_steps=6', '--config.log_every=3'])
  assert r.returncode == 0, r.stderr[-2000:]
  assert finished_steps(workdir)[-1] == 6
  r = run_launch([*args, '--config.num_steps=8', '--config.loss.name=hinge',
                  '--config.allow_config_change=true'])
  assert r.returncode == 0, r.stderr[-2000:]


def test_corrupt_checkpoint_gets_one_line_and_a_fallback(tmp_path):
  workdir = str(tmp_path / 'run')
  args = [*BASE, '--config.num_steps=4', '--config.checkpoint.every=2',
          '--config.log_every=2', '--config.eval_every=4', f'--workdir={workdir}']
  assert run_launch(args).returncode == 0
  assert finished_steps(workdir) == [2, 4]
  # Truncate every file of the latest checkpoint's state.
  state_dir = os.path.join(workdir, 'checkpoints', '4', 'state')
  for root, _, files in os.walk(state_dir):
    for f in files:
      open(os.path.join(root, f), 'w').close()
  more = [*args[:-1], '--config.num_steps=6', args[-1]]
  r = run_launch(more)
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
  err = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and 'step 4' in err[0]
  assert '--config.resume_from_step=2' in err[0]
  r = run_launch([*more, '--config.resume_from_step=2'])
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resumed from the checkpoint at step 2' in r.stderr
  # The damaged step 4 of the old trajectory is kept aside, not overwritten.
  assert os.listdir(os.path.join(workdir, 'checkpoints_abandoned')) == ['4']
  assert finished_steps(workdir)[-1] == 6
  # The run's config.json does not keep the step to resume from: sampling the
  # run without --config takes its latest checkpoint.
  out = tmp_path / 'samples.npz'
  r = run_launch(['--mode=sample', f'--workdir={workdir}', '--num_samples=4',
                  f'--out={out}'])
  assert r.returncode == 0, r.stderr[-3000:]
  assert int(np.load(out)['step']) == 6
  r = run_launch([*more, '--config.resume_from_step=3'])
  assert r.returncode == 2 and 'no checkpoint at step 3' in r.stderr


def test_nonfinite_skip_mode_counts_and_continues(tmp_path):
  workdir = str(tmp_path / 'run')
  r = run_launch([*BASE, '--config.num_steps=4', '--config.log_every=2',
                  '--config.eval_every=4', '--config.checkpoint.every=4',
                  '--config.nonfinite=skip', '--config.d.optimizer.lr=1e38',
                  '--config.g.optimizer.lr=1e38', f'--workdir={workdir}'])
  assert r.returncode == 0, r.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  logged = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  last = [l for l in logged if 'd_skipped' in l][-1]
  assert last['d_skipped'] + last['g_skipped'] > 0
  state, _ = final_state(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.g.params))
