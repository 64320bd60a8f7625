"""A workdir that is safe to write: one training run at a time (a lock file),
checkpoint writes that fail fast and cleanly, checksums checked at restore,
nothing discarded silently, one metrics history, and restore errors in one
line. Most runs are in this process on the tiny toy config; one is a
launch.py process, where the exit is the point."""
import errno
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from etils import epath

from gan_jax import checkpoint
from gan_jax import data
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax import workdir as workdir_lib
from gan_jax.errors import UserError
from tests.conftest import run_launch
from tests.conftest import tiny_config


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished tiny run (6 steps, checkpoints at 3 and 6); copy it to use."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


def copy_of(finished, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  return workdir


def run(workdir, **overrides):
  return train.train_and_evaluate(tiny_config(**overrides), str(workdir))


def restore(workdir, step):
  config = tiny_config()
  it = data.build(config, config.batch_size)
  template = state_lib.create(config, *models.build(config, it.example_shape),
                              it.example_shape)
  ckpt = checkpoint.Checkpointer(str(workdir), config)
  try:
    return ckpt.restore(step, template)
  finally:
    ckpt.close()


def write_lock(workdir, host, pid, started=None, pid_namespace=None):
  os.makedirs(workdir, exist_ok=True)
  (workdir / workdir_lib.LOCK).write_text(json.dumps(
      {'host': host, 'pid': pid, 'since': '2030-01-02T03:04:05+00:00',
       'started': started, 'pid_namespace': pid_namespace}))


# 1. One writer per workdir.


def test_live_run_on_this_host_keeps_the_lock_a_dead_one_loses_it(
    finished, tmp_path, caplog):
  workdir = copy_of(finished, tmp_path)
  holder = subprocess.Popen(['sleep', '60'])
  host, started = socket.gethostname(), workdir_lib.process_start(holder.pid)
  try:
    if started is not None:  # Its pid, but a later process: taken over.
      write_lock(workdir, host, holder.pid, started - 1)
      run(workdir)
      assert not (workdir / workdir_lib.LOCK).exists()
    write_lock(workdir, host, holder.pid, started)
    listing = sorted(os.listdir(workdir))
    with pytest.raises(UserError) as e:
      run(workdir)
    message = str(e.value)
    assert (f'host {host}, pid {holder.pid}, since 2030-01-02T03:04:05+00:00'
            in message), message
    assert f'kill {holder.pid}' in message and '\n' not in message
    assert sorted(os.listdir(workdir)) == listing  # Nothing written.
  finally:
    holder.kill()
    holder.wait()
  run(workdir)  # Its pid has ended: taken over, with a warning.
  assert 'Took over' in caplog.text and str(holder.pid) in caplog.text
  assert not (workdir / workdir_lib.LOCK).exists()  # Released.


@pytest.mark.parametrize('host, namespace', [
    ('elsewhere-7', None), (socket.gethostname(), 'pid:[1]')])
def test_lock_of_another_host_or_container_is_kept_and_the_way_out_said(
    finished, tmp_path, host, namespace):
  workdir = copy_of(finished, tmp_path)
  write_lock(workdir, host, 1234, pid_namespace=namespace)
  with pytest.raises(UserError, match=f'another host or container .host '
                     f'{host}, pid 1234.* If that run is dead, delete '
                     '.*run.lock'):
    run(workdir)
  assert (workdir / workdir_lib.LOCK).exists()


def test_a_folder_in_place_of_the_lock_is_one_line(tmp_path):
  workdir = tmp_path / 'run'
  (workdir / workdir_lib.LOCK).mkdir(parents=True)
  with pytest.raises(UserError, match='cannot read the lock file .*run.lock '
                     '.*delete it'):
    workdir_lib.lock(str(workdir))
  assert (workdir / workdir_lib.LOCK).is_dir()  # Left to the user.


def test_lock_is_held_while_training_and_released_on_every_exit(tmp_path,
                                                                monkeypatch):
  lock = tmp_path / 'run' / workdir_lib.LOCK
  seen = []
  save = checkpoint.Checkpointer.save

  def save_and_look(self, step, *args):
    seen.append(json.loads(lock.read_text()))
    save(self, step, *args)
    if step == 3:
      raise KeyboardInterrupt()  # A second Ctrl-C, mid-run.

  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save_and_look)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / 'run')
  assert seen[0]['pid'] == os.getpid() and seen[0]['since']
  assert seen[0]['host'] == socket.gethostname()
  assert not lock.exists()
  with pytest.raises(UserError, match='non-finite'):
    run(tmp_path / 'nan', d__optimizer__lr=1e30, g__optimizer__lr=1e30)
  assert not (tmp_path / 'nan' / workdir_lib.LOCK).exists()


# 2. Checkpoint writes fail fast and clean.


def disk_full(path, *args, **kwargs):
  del args, kwargs
  raise OSError(errno.ENOSPC, 'No space left on device', str(path))


def test_file_in_place_of_the_checkpoints_folder_is_one_line_not_a_hang(
    tmp_path):
  workdir = tmp_path / 'run'
  os.makedirs(workdir)
  (workdir / 'checkpoints').write_text('not a folder')
  result = run_launch(['--config=configs/default.py', '--config.num_steps=4',
                       '--config.checkpoint.every=2', '--config.g.width=16',
                       '--config.d.width=16', '--config.eval.num_samples=100',
                       '--config.batch_size=16', f'--workdir={workdir}'],
                      timeout=60)  # It hung at exit.
  assert result.returncode == 2 and 'Traceback' not in result.stderr, (
      result.stderr[-3000:])
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'checkpoints' in errors[0], errors
  assert 'is in the way' in errors[0]
  assert sorted(os.listdir(workdir)) == ['checkpoints']  # Nothing written.


@pytest.mark.parametrize('use_async', [True, False])
def test_disk_full_during_a_save_stops_the_run_in_one_line(
    tmp_path, monkeypatch, use_async):
  workdir = tmp_path / 'run'
  write_text = epath.gpath.PosixGPath.write_text

  def full_from_step_6(self, *args, **kwargs):  # Orbax's files of step 6.
    if f'{os.sep}checkpoints{os.sep}6' in str(self):
      disk_full(self)
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.gpath.PosixGPath, 'write_text', full_from_step_6)
  t0 = time.time()
  with pytest.raises(UserError) as e:
    run(workdir, num_steps=9, eval_every=9, checkpoint__use_async=use_async)
  message = str(e.value)
  assert 'checkpoint of step 6' in message and 'No space left' in message
  assert 'the last complete checkpoint is step 3' in message
  assert '\n' not in message and time.time() - t0 < 30
  monkeypatch.undo()
  # Nothing keeps the process from exiting: the failed save's threads end
  # within seconds (an idle thread pool's workers, as orbax's metadata
  # store's, end at exit).
  others = [t for t in threading.enumerate()
            if not t.daemon and 'metadata_store' not in t.name
            and t is not threading.main_thread()]
  for t in others:
    t.join(timeout=max(0., t0 + 30 - time.time()))
  stuck = [t for t in others if t.is_alive()]
  assert not stuck, stuck
  assert not (workdir / workdir_lib.LOCK).exists()
  state, data_state = restore(workdir, 3)  # Intact, checksums and all.
  assert int(state.step) == 3 and data_state['batch_index'] == 3


def test_a_failed_background_save_stops_the_run_before_the_next_save(
    tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  write_text = epath.gpath.PosixGPath.write_text

  def full_for_step_20(self, *args, **kwargs):
    # Its arrays and JSON, not orbax's first (metadata) file: the disk fills
    # during the large writes, whose errors orbax's finalize thread takes.
    if (f'{os.sep}checkpoints{os.sep}20' in str(self)  # And its tmp folder.
        and not str(self).endswith('_CHECKPOINT_METADATA')):
      disk_full(self)
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.gpath.PosixGPath, 'write_text', full_for_step_20)
  with pytest.raises(UserError, match='checkpoint of step 20.*No space left'):
    run(workdir, num_steps=400, eval_every=400, log_every=1, steps_per_call=1,
        checkpoint__every=20, checkpoint__use_async=True)
  logged = [json.loads(l)['step'] for l in open(workdir / 'metrics.jsonl')]
  # Noticed at a log step after the failure, not at the next save (40).
  assert 20 <= max(logged) < 40, max(logged)


class _FillingFile:
  """A file on a disk that fills after `room` bytes."""

  def __init__(self, file, room):
    self._file, self._room = file, room

  def write(self, data):
    self._room -= len(data)
    if self._room < 0:
      disk_full(self._file.name)
    return self._file.write(data)

  def __getattr__(self, name):
    return getattr(self._file, name)


@pytest.mark.parametrize('name', ['tfevents', 'metrics.jsonl'])
def test_disk_full_for_the_logs_is_one_line_not_a_hang(tmp_path, monkeypatch,
                                                       name):
  # TensorBoard's events are written by tensorboardX's thread, which an error
  # used to kill, so that the next log row blocked for ever on its queue.
  from gan_jax import writers  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'

  def filling_open(path, mode='r', *args, **kwargs):
    file = open(path, mode, *args, **kwargs)  # pylint: disable=unspecified-encoding
    return _FillingFile(file, 4000) if name in str(path) else file

  monkeypatch.setattr(writers, 'open', filling_open, raising=False)
  outcome = []

  def training():
    try:
      run(workdir, num_steps=200, eval_every=200, log_every=1,
          steps_per_call=1, checkpoint__every=5)
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=training, daemon=True)
  thread.start()
  thread.join(120)
  assert not thread.is_alive(), 'hung'
  assert isinstance(outcome[0], UserError), outcome
  message = str(outcome[0])
  assert 'No space left' in message and '\n' not in message
  assert ('tensorboard' if name == 'tfevents' else name) in message
  assert not (workdir / workdir_lib.LOCK).exists()
  steps = sorted(int(n) for n in os.listdir(workdir / 'checkpoints')
                 if n.isdigit())
  state, _ = restore(workdir, steps[-1])  # The last checkpoint is intact.
  assert int(state.step) == steps[-1] < 200


def test_check_reports_a_failed_background_save_without_waiting(
    tmp_path, monkeypatch):
  config = tiny_config(checkpoint__use_async=True)
  it = data.build(config, config.batch_size)
  state = state_lib.create(config, *models.build(config, it.example_shape),
                           it.example_shape)
  ckpt = checkpoint.Checkpointer(str(tmp_path), config)
  write_text = epath.gpath.PosixGPath.write_text

  def full_for_orbax(self, *args, **kwargs):  # The probe before saving passes.
    if 'orbax-checkpoint-tmp' in str(self):
      disk_full(self)
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.gpath.PosixGPath, 'write_text', full_for_orbax)
  ckpt.save(3, state, {'batch_index': 3}, config)  # Fails in the background.
  deadline = time.time() + 30
  with pytest.raises(UserError, match='checkpoint of step 3.*No space left'):
    while time.time() < deadline:
      ckpt.check()
      time.sleep(0.05)
  monkeypatch.undo()
  ckpt.wait()  # Reported once: no second error.
  ckpt.close()


# 3. Integrity.


def largest_array_file(workdir, step):
  files = [p for p in (workdir / 'checkpoints' / str(step) / 'state').rglob('*')
           if p.is_file() and p.parent.name == 'd']
  return max(files, key=lambda p: p.stat().st_size)


def test_flipped_bytes_in_array_data_are_caught(finished, tmp_path):
  # The arrays are zstd-compressed: a flip either breaks the stream (tensorstore
  # refuses to read it) or decodes to other values (the checksums catch it);
  # which one depends on where the flip lands. Both must end in the same
  # one-line error; the checksum path alone is the next test's.
  workdir = copy_of(finished, tmp_path)
  path = largest_array_file(workdir, 6)
  content = bytearray(path.read_bytes())
  middle = len(content) // 2
  content[middle] ^= 0x10
  content[middle + 1] ^= 0x10
  path.write_bytes(bytes(content))
  with pytest.raises(UserError) as e:
    run(workdir, num_steps=9)
  message = str(e.value)
  assert 'checkpoint at step 6' in message and 'damaged' in message, message
  assert '--config.resume_from_step=3' in message
  assert int(run(workdir, num_steps=9, resume_from_step=3).step) == 9


def test_arrays_that_read_but_changed_fail_their_checksums(finished, tmp_path):
  # Step 3's arrays under step 6's checksums: every file reads, the values are
  # not the ones saved at step 6 (silent corruption, or files mixed up).
  workdir = copy_of(finished, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '6' / 'state')
  shutil.copytree(workdir / 'checkpoints' / '3' / 'state',
                  workdir / 'checkpoints' / '6' / 'state')
  with pytest.raises(UserError) as e:
    run(workdir, num_steps=9)
  message = str(e.value)
  assert 'step 6' in message and 'do not match their checksums' in message, (
      message)
  assert '--config.resume_from_step=3' in message


def test_checkpoint_without_checksums_restores_with_a_warning(
    finished, tmp_path, caplog):
  workdir = copy_of(finished, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '6' / 'checksums',
                ignore_errors=True)  # As saved before checksums existed.
  state, _ = restore(workdir, 6)
  assert int(state.step) == 6
  assert 'step 6 has no checksums' in caplog.text


# 4. Nothing discarded silently.


@pytest.mark.parametrize('keep', [0, -1])
def test_keep_below_one_is_refused(tmp_path, keep):
  with pytest.raises(UserError, match=f'checkpoint.keep must be .*got {keep}'):
    run(tmp_path / 'run', checkpoint__keep=keep)  # (Also by gan_jax/checks.py.)
  with pytest.raises(UserError, match=f'checkpoint.keep must be at least 1.*'
                     f'got {keep}'):
    checkpoint.Checkpointer(str(tmp_path / 'run'),
                            tiny_config(checkpoint__keep=keep))


def test_a_second_set_aside_keeps_the_first(finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  aside = workdir / 'checkpoints_abandoned'
  for _ in range(2):
    run(workdir, resume_from_step=3)  # Sets step 6 aside, then saves it anew.
  assert sorted(os.listdir(aside)) == ['6', '6.1']
  assert sorted(os.listdir(aside / '6.1')) == sorted(os.listdir(aside / '6'))


# 5. One metrics history.


def test_resume_drops_the_torn_line_and_the_rows_after_the_restored_step(
    finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '6')  # Killed before it was done.
  history = workdir / 'metrics.jsonl'
  first, rest = history.read_bytes().split(b'\n', 1)
  history.write_bytes(first + b'\n\xff\xfe damaged\n' + rest
                      + b'{"step": 7, "d_lo')  # Torn by the kill.
  run(workdir)  # Resumes from step 3.
  rows = [json.loads(l) for l in history.read_text().splitlines()]
  assert [r['step'] for r in rows if 'd_loss' in r] == [2, 3, 4, 6]
  assert [r['step'] for r in rows if 'modes' in r] == [6]
  assert not (workdir / 'metrics.jsonl.tmp').exists()


def test_metrics_history_that_is_a_folder_is_one_line(finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  os.remove(workdir / 'metrics.jsonl')
  os.makedirs(workdir / 'metrics.jsonl')
  config_json = (workdir / 'config.json').read_text()
  with pytest.raises(UserError, match='metrics.jsonl cannot be read'):
    run(workdir, num_steps=9)
  assert (workdir / 'config.json').read_text() == config_json


# 6. Restore-time robustness.


@pytest.mark.parametrize('edit', [{}, {'batch_index': 'x'},
                                  {'batch_index': 2.5}])
@pytest.mark.parametrize('checksums', [True, False])
def test_hand_edited_data_state_is_one_line_with_the_previous_step(
    finished, tmp_path, edit, checksums):
  workdir = copy_of(finished, tmp_path)
  (workdir / 'checkpoints' / '6' / 'data' / 'metadata').write_text(
      json.dumps(edit))
  if not checksums:  # As saved before checksums: the value is checked.
    shutil.rmtree(workdir / 'checkpoints' / '6' / 'checksums',
                  ignore_errors=True)
  with pytest.raises(UserError) as e:
    run(workdir, num_steps=9)
  message = str(e.value)
  assert 'step 6' in message and '--config.resume_from_step=3' in message
  assert ('checksum' if checksums else 'batch_index') in message, message


def test_changed_width_names_the_arrays_that_do_not_fit(finished, tmp_path):
  workdir = copy_of(finished, tmp_path)
  config = tiny_config(num_steps=9, allow_config_change=True)
  config.g.width = 48
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert 'does not fit the model' in message, message
  assert 'g/params/MLP_0/Dense_0/kernel is (2, 32), the model has (2, 48)' in (
      message)
  assert 'more' in message and '\n' not in message
