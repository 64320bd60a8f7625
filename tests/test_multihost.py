"""Multi-host training: 2 launch.py processes x 2 CPU devices, jax.distributed.

The processes find each other through a coordinator on localhost (process 0),
as the hosts of a GPU cluster do; on CPU they reduce through gloo. A run on
them must train what one process with 4 devices trains on the same global
batch (each process feeding its half of every batch), checkpoint with both
processes taking part, and resume when both are launched again. Hosts with
different configs, a workdir that is not shared, and a coordinator that never
answers each get one `error:` line.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import ml_collections
import numpy as np

from gan_jax import checkpoint
from gan_jax import data
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax.data import pipeline
from tests.conftest import ROOT
from tests.conftest import tiny_config

# Tiny and fast; Adam eps=1 keeps float noise from the different reduction
# order (gloo across processes) rounding-sized (see test_multidevice.py), and
# constant learning rates make 4 steps + 2 resumed steps equal 6 straight.
ARGS = ['--config=configs/default.py', '--config.batch_size=16',
        '--config.g.width=16', '--config.d.width=16', '--config.log_every=2',
        '--config.eval_every=100', '--config.checkpoint.every=2',
        '--config.eval.num_samples=100', '--config.steps_per_call=2',
        '--config.g.optimizer.eps=1.0', '--config.d.optimizer.eps=1.0',
        '--config.g.optimizer.lr=0.05', '--config.d.optimizer.lr=0.05',
        '--config.g.optimizer.schedule=constant',
        '--config.d.optimizer.schedule=constant']
TIMEOUT = 240


def restore(workdir, step=None):
  """(state, data state, config) saved at `step` (default: the latest)."""
  config = ml_collections.ConfigDict(json.load(open(workdir / 'config.json')))
  it = data.build(config, config.batch_size)
  template = state_lib.create(config, *models.build(config, it.example_shape),
                              it.example_shape)
  ckpt = checkpoint.Checkpointer(str(workdir), config)
  state, data_state = ckpt.restore(step or ckpt.latest_step(), template)
  ckpt.close()
  return state, data_state, config


def finished_steps(workdir):
  names = os.listdir(workdir / 'checkpoints')
  return sorted(int(n) for n in names if n.isdigit())


_GIVEN_PORTS = set()


def free_port():
  """A free localhost port, not handed out before in this session."""
  while True:
    with socket.socket() as s:
      s.bind(('localhost', 0))
      port = s.getsockname()[1]
    if port not in _GIVEN_PORTS:
      _GIVEN_PORTS.add(port)
      return port


class Launch:
  """A launch.py process with `devices` CPU devices; its output is collected."""

  def __init__(self, args, devices=2, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
    env.update(JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    self.proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=cwd,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)

  def wait_for(self, text, timeout=TIMEOUT):
    t0 = time.time()
    while not any(text in l for l in self.lines):
      if self.proc.poll() is not None or time.time() - t0 > timeout:
        self.proc.kill()
        raise AssertionError(f'no {text!r} in:\n' + ''.join(self.lines)[-3000:])
      time.sleep(0.05)

  def finish(self):
    """Waits for the process; returns (returncode, output)."""
    try:
      self.proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      raise
    self._reader.join()
    return self.proc.returncode, ''.join(self.lines)


def start_hosts(port, args, per_host=((), ()), cwds=(ROOT, ROOT)):
  """Both processes of a 2-host run; `per_host[i]`: process i's extra args."""
  return [Launch([*args, f'--coordinator_address=localhost:{port}',
                  '--num_processes=2', f'--process_id={i}',
                  '--coordinator_timeout=30', *extra], cwd=cwd)
          for i, (extra, cwd) in enumerate(zip(per_host, cwds))]


def finish(launches):
  return [l.finish() for l in launches]


def one_line_error(result):
  code, text = result
  assert code == 2 and 'Traceback' not in text, text[-3000:]
  errors = [l for l in text.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, text[-3000:]
  return errors[0]


def test_each_process_reads_a_disjoint_half_of_every_global_batch():
  config = tiny_config()
  whole = data.build(config, 16, 0, 1)
  halves = [data.build(config, 8, i, 2) for i in range(2)]
  for it in [whole, *halves]:  # Also after a resume.
    it.set_state({'batch_index': 3})
  for _ in range(3):
    batch = next(whole)
    mine = [next(h) for h in halves]
    np.testing.assert_array_equal(np.concatenate(mine), batch)
    assert not set(map(tuple, mine[0])) & set(map(tuple, mine[1]))
  # The image datasets' shared pipeline: example indices, over epochs.
  one = pipeline.HostBatches(None, 100, 0, 16, 0, 1)
  two = [pipeline.HostBatches(None, 100, 0, 8, i, 2) for i in range(2)]
  for k in range(14):  # 6 global batches per epoch: over two epochs.
    a, b = two[0].indices(k), two[1].indices(k)
    assert not set(a) & set(b)
    np.testing.assert_array_equal(np.concatenate([a, b]), one.indices(k))


def test_two_hosts_train_like_one_host_resume_and_stop_together(tmp_path):
  reference, multi = tmp_path / 'one_host', tmp_path / 'two_hosts'
  # The same training in 1 process with 4 devices, saved at every step.
  one_host = Launch([*ARGS, '--config.num_steps=20',
                     '--config.checkpoint.every=1',
                     '--config.checkpoint.keep=20', f'--workdir={reference}'],
                    devices=4)
  results = finish(start_hosts(free_port(), [*ARGS, '--config.num_steps=4',
                                             f'--workdir={multi}']))
  for i, (code, text) in enumerate(results):
    assert code == 0, text[-3000:]
    assert f'4 devices (2 on this host, process {i} of 2)' in text, text[-3000:]
  # Only process 0 writes logs: one line per logged step, not one per process.
  logged = [json.loads(l)['step'] for l in open(multi / 'metrics.jsonl')
            if 'd_loss' in l]
  assert logged == [2, 4], logged
  assert finished_steps(multi) == [2, 4]

  # Both processes again: they resume from step 4. A preemption notice
  # (SIGTERM) to process 1 alone stops both at the same step, saved.
  hosts = start_hosts(free_port(), [*ARGS, '--config.num_steps=20',
                                    f'--workdir={multi}'])
  hosts[1].wait_for('process 1 of 2')  # jax.distributed is up.
  hosts[1].proc.send_signal(signal.SIGTERM)
  stops = []
  for code, text in finish(hosts):
    assert code == 0, text[-3000:]
    assert 'Resumed from the checkpoint at step 4' in text, text[-3000:]
    stops += re.findall(r'Stopped by preemption at step (\d+);', text)
  assert len(stops) == 2 and stops[0] == stops[1], stops
  stop = int(stops[0])
  assert 4 < stop < 20 and finished_steps(multi)[-1] == stop
  code, text = one_host.finish()
  assert code == 0, text[-3000:]

  state, data_state, config = restore(multi)
  ref, ref_data, _ = restore(reference, step=stop)
  assert data_state == ref_data == {'batch_index': stop}
  assert int(state.step) == int(ref.step) == stop
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                               atol=2e-6)
  # Training moved the parameters, so the comparison is not vacuous.
  init = state_lib.create(config, *models.build(config, (2,)), (2,))
  assert any(not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(init.g.params), jax.tree.leaves(state.g.params)))

  # Ctrl-C on process 0 while it trains: relayed as a preemption notice, so
  # both hosts save and stop at the same step (not only the host pressed).
  hosts = start_hosts(free_port(), [*ARGS, '--config.num_steps=400',
                                    f'--workdir={multi}'])
  hosts[0].wait_for(f'step {stop + 2}/400')  # In the loop: Ctrl-C is its.
  hosts[0].proc.send_signal(signal.SIGINT)
  (code0, text0), (code1, text1) = finish(hosts)
  assert code0 == 0 and code1 == 0, (text0 + text1)[-3000:]
  first = re.findall(r'Stopped by SIGINT at step (\d+);', text0)
  other = re.findall(r'Stopped by preemption at step (\d+);', text1)
  assert len(first) == 1 and first == other, (text0 + text1)[-3000:]
  assert stop < int(first[0]) < 400
  assert finished_steps(multi)[-1] == int(first[0])


def test_hosts_that_disagree_or_miss_the_coordinator_get_one_line(tmp_path):
  mismatch = start_hosts(free_port(), [*ARGS, f'--workdir={tmp_path / "run"}'],
                         per_host=((), ('--config.seed=1',
                                        '--config.batch_size=32')))
  # The same relative --workdir, but each process starts in its own folder:
  # like hosts whose workdirs are not one shared directory.
  os.makedirs(tmp_path / 'a')
  os.makedirs(tmp_path / 'b')
  unshared = start_hosts(
      free_port(), [f'--config={ROOT}/configs/default.py', *ARGS[1:],
                    '--workdir=run'], cwds=(tmp_path / 'a', tmp_path / 'b'))
  # Launch flags too: two sample counts would wait on each other's gathers.
  flag_mismatch = start_hosts(
      free_port(), [*ARGS, '--mode=sample', f'--workdir={tmp_path / "run"}'],
      per_host=(('--num_samples=8',), ('--num_samples=16',)))
  # The same relative data path, other files on each host: one line.
  for folder, n in (('a', 40), ('b', 48)):
    np.savez(tmp_path / folder / 'x.npz',
             images=np.zeros((n, 32, 32, 3), np.uint8))
  other_data = start_hosts(
      free_port(), [f'--config={ROOT}/configs/own_images.py:size=32',
                    '--config.data.path=x.npz', '--config.batch_size=8',
                    f'--workdir={tmp_path / "data_run"}'],
      cwds=(tmp_path / 'a', tmp_path / 'b'))
  nobody = free_port()
  alone = Launch([*ARGS, f'--workdir={tmp_path / "alone"}',
                  f'--coordinator_address=localhost:{nobody}',
                  '--num_processes=2', '--process_id=1',
                  '--coordinator_timeout=2'])
  error = one_line_error(finish([alone])[0])
  assert (f'cannot reach the coordinator at localhost:{nobody} within 2 s'
          in error), error
  for result in finish(mismatch):
    error = one_line_error(result)
    assert 'the hosts disagree on the config' in error, error
    assert 'process 1: batch_size 16 vs 32, seed 0 vs 1.' in error, error
  for result in finish(flag_mismatch):
    error = one_line_error(result)
    assert 'process 1: --num_samples 8 vs 16.' in error, error
  assert not os.path.exists(tmp_path / 'run')  # Nothing written.
  for result in finish(unshared):
    error = one_line_error(result)
    assert "--workdir 'run' is not shared: process 1 cannot see" in error, error
  assert not os.listdir(tmp_path / 'b' / 'run')
  for result in finish(other_data):
    error = one_line_error(result)
    assert ('the hosts see datasets of different sizes (process 0: 40 '
            'examples; process 1: 48)' in error), error
