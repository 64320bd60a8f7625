"""End-to-end runs of train_and_evaluate on the embedded toy data (1 device)."""
import json
import os

import jax
import numpy as np
import pytest

from gan_jax import checkpoint
from gan_jax import losses
from gan_jax import train
from gan_jax import writers
from gan_jax.errors import UserError
from tests.conftest import tiny_config


def leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_run_writes_metrics_samples_config_and_checkpoints(tmp_path):
  config = tiny_config()
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 6
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  logged = [l for l in lines if 'd_loss' in l]
  # Every log step (2) and every checkpoint step (3), whose state is checked.
  assert [l['step'] for l in logged] == [2, 3, 4, 6]
  for key in ('d_loss', 'g_loss', 'd_real', 'd_fake', 'd_grad_norm',
              'g_grad_norm', 'steps_per_sec', 'diversity_ratio'):
    assert np.isfinite(logged[-1][key])
  evals = [l for l in lines if 'modes' in l]
  assert evals[-1]['step'] == 6 and 0 <= evals[-1]['hq'] <= 1
  assert os.path.exists(tmp_path / 'samples' / 'step_0000006.png')
  assert json.load(open(tmp_path / 'config.json'))['loss']['name'] == 'non_saturating'
  assert os.listdir(tmp_path / 'tensorboard')
  assert checkpoint.Checkpointer(str(tmp_path), config).latest_step() == 6
  # Evaluating the saved checkpoints again: each gives the numbers the run
  # logged at its step (eval_every 3 here), into eval_step_N.json.
  config.eval_every = 3
  again = train.train_and_evaluate(config, str(tmp_path / 'again'))
  logged = {l['step']: l for l in map(json.loads, open(
      tmp_path / 'again' / 'metrics.jsonl')) if 'modes' in l}
  evaluated = train.evaluate_checkpoint(config, str(tmp_path / 'again'), 'all')
  assert sorted(evaluated) == sorted(logged) == [3, 6]
  for step, metrics in evaluated.items():  # (kl is NaN without HQ samples.)
    np.testing.assert_equal({k: logged[step][k] for k in metrics}, metrics)
    np.testing.assert_equal(json.load(open(
        tmp_path / 'again' / f'eval_step_{step}.json')), {'step': step,
                                                         **metrics})
  assert list(train.evaluate_checkpoint(config, str(tmp_path / 'again'),
                                        [3])) == [3]
  assert leaves_equal(again, state)


def test_training_changes_both_networks(tmp_path):
  from gan_jax import data, models, state as state_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  it = data.build(config, config.batch_size)
  g, d = models.build(config, it.example_shape)
  init = state_lib.create(config, g, d, it.example_shape)
  final = train.train_and_evaluate(config, str(tmp_path))
  assert not leaves_equal(init.g.params, final.g.params)
  assert not leaves_equal(init.d.params, final.d.params)


class _Killed(BaseException):
  pass


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
  config = tiny_config(num_steps=8, checkpoint__every=4)
  config.g.optimizer.schedule = 'linear'  # Resume must not restart the schedule.
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))

  # Stop the second run as a kill would, right after its step-4 checkpoint.
  save = checkpoint.Checkpointer.save
  def save_then_die(self, step, *args):
    save(self, step, *args)
    self.wait()
    if step == 4:
      raise _Killed()
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save_then_die)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert int(resumed.step) == 8
  assert leaves_equal(straight, resumed)


def test_finished_run_relaunched_does_nothing_more(tmp_path):
  config = tiny_config()
  first = train.train_and_evaluate(config, str(tmp_path))
  again = train.train_and_evaluate(config, str(tmp_path))
  assert leaves_equal(first, again)


@pytest.mark.parametrize('name', sorted(losses.LOSSES))
def test_every_loss_trains_a_few_hundred_steps(name, tmp_path):
  config = tiny_config(f'loss={name}', num_steps=300, log_every=50,
                       eval_every=300, checkpoint__every=300, batch_size=64)
  state = train.train_and_evaluate(config, str(tmp_path))  # Raises on NaN.
  assert int(state.step) == 300
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
  if losses.get(name).clip_d_weights:
    assert max(float(np.abs(x).max()) for x in jax.tree.leaves(state.d.params)) <= config.loss.clip


def test_non_finite_loss_stops_with_the_step(tmp_path):
  config = tiny_config()
  config.d.optimizer.lr = 1e30
  config.g.optimizer.lr = 1e30
  with pytest.raises(UserError, match='non-finite .* at step'):
    train.train_and_evaluate(config, str(tmp_path))


def test_duration_keeps_whole_days_in_the_hours():
  assert train.duration(59.9) == '0:00:59'
  assert train.duration(3 * 3600 + 7) == '3:00:07'
  assert train.duration(26 * 3600 + 180) == '26:03:00'  # Not '02:03:00'.


def test_a_new_num_steps_on_a_decaying_schedule_is_warned_of(tmp_path, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(num_steps=3), workdir)  # Linear decay.
  caplog.set_level(logging.WARNING, logger='absl')
  train.train_and_evaluate(tiny_config(num_steps=6), workdir)
  warned = [r.getMessage() for r in caplog.records if 'num_steps 3 -> 6' in
            r.getMessage()]
  assert len(warned) == 1 and 'g.optimizer.schedule=linear' in warned[0]
  caplog.clear()  # Constant schedules: nothing to warn of.
  constant = dict(g__optimizer__schedule='constant',
                  d__optimizer__schedule='constant')
  other = str(tmp_path / 'constant')
  train.train_and_evaluate(tiny_config(num_steps=3, **constant), other)
  train.train_and_evaluate(tiny_config(num_steps=6, **constant), other)
  assert not [r for r in caplog.records if 'num_steps' in r.getMessage()]


def _events(folder):
  """(step, Event) of every event in the TensorBoard files of `folder`
  (TFRecord framing: length, its crc, the Event proto, its crc)."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  events = []
  for name in sorted(os.listdir(folder)):
    data = open(os.path.join(folder, name), 'rb').read()
    pos = 0
    while pos < len(data):
      (size,) = struct.unpack('<Q', data[pos:pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + size]))
      pos += 16 + size
  return events


def test_resume_hides_the_tensorboard_events_of_the_steps_trained_again(
    tmp_path):
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  folder = os.path.join(workdir, 'tensorboard')
  start = lambda: [e.step for e in _events(folder)
                   if e.session_log.status == event_pb2.SessionLog.START]
  # Steps 1-6 logged, then trained again from the checkpoint at 3.
  train.train_and_evaluate(tiny_config(num_steps=6, log_every=1), workdir)
  assert not start()
  assert max(e.step for e in _events(folder)) == 6
  first = set(os.listdir(folder))
  train.train_and_evaluate(tiny_config(num_steps=6, log_every=1,
                                       resume_from_step=3), workdir)
  assert len(set(os.listdir(folder)) - first) == 1  # The resumed launch's.
  # TensorBoard drops the earlier files' events from this step on.
  assert start() == [4]
  # --mode=eval's writer (no training launch) hides nothing.
  writers.MetricWriter(workdir).close()
  assert start() == [4]


def test_a_launch_that_restores_nothing_hides_an_earlier_launchs_events(
    tmp_path):
  # A launch killed before its first checkpoint logged steps 1-2; the next
  # trains them again from scratch.
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'tensorboard'
  killed = writers.MetricWriter(str(tmp_path), 0)
  for step in (1, 2):
    killed.write_scalars(step, {'d_loss': 1.})
  killed.close()
  assert not [e for e in _events(folder) if e.HasField('session_log')]
  writers.MetricWriter(str(tmp_path), 0).close()
  starts = [e.step for e in _events(folder)
            if e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [1]
  # Both files kept, though written in the same second.
  assert sorted(e.step for e in _events(folder) if e.summary.value) == [1, 2]
