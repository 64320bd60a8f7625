"""Multi-host start-up: `jax.distributed` and a check that the hosts agree.

A multi-host run is the same `launch.py` command on every host. `initialize`
must run before anything else touches JAX (launch.py calls it first thing):

  * Cloud TPU VMs (also SLURM, Open MPI): `--multihost`; JAX finds the
    coordinator, the number of processes and this process's id itself.
  * Anywhere else (GPU hosts, local tests): `--coordinator_address=HOST:PORT`
    (process 0's address, the same on every host), `--num_processes=N` and
    `--process_id=I` (0 .. N-1, one per host), or the environment variables
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`. Any of
    them makes the run multi-host.

Process 0 runs the coordinator; the others wait for it up to
`--coordinator_timeout` seconds. Afterwards `jax.devices()` lists the devices
of all hosts and `jax.pmap` collectives reduce over all of them. On CPU (the
tests) the processes reduce through gloo, which is JAX 0.10's default
`jax_cpu_collectives_implementation`, so nothing needs setting.

`check_same_config` then compares the resolved configs (and --workdir) of all
hosts, since hosts that train different things would hang or diverge.
"""
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from gan_jax.errors import UserError

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
       'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}
_SHOWN_FIELDS = 4  # Differing fields named per host in the mismatch error.


def _int_setting(value, name):
  if value is None:
    value = os.environ.get(ENV[name]) or None
    source = f'${ENV[name]}'
  else:
    source = f'--{name}'
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f'{source} must be an integer, got {value!r}') from None


def settings(multihost=False, coordinator_address=None, num_processes=None,
             process_id=None):
  """The resolved multi-host settings (flags first, then environment), or None.

  Returns None for a single-host run, else a dict of `coordinator_address`,
  `num_processes` and `process_id`, each None where JAX is to detect it.
  """
  coordinator_address = (coordinator_address
                         or os.environ.get(ENV['coordinator_address']) or None)
  num_processes = _int_setting(num_processes, 'num_processes')
  process_id = _int_setting(process_id, 'process_id')
  given = {'coordinator_address': coordinator_address,
           'num_processes': num_processes, 'process_id': process_id}
  if not multihost and all(v is None for v in given.values()):
    return None
  missing = [k for k, v in given.items() if v is None]
  if missing and not multihost:
    raise UserError(
        'a multi-host run needs --coordinator_address, --num_processes and '
        f'--process_id (or ${", $".join(ENV[k] for k in ENV)}); missing '
        f'{", ".join("--" + k for k in missing)}. On Cloud TPU VMs, SLURM or '
        'Open MPI pass --multihost instead and they are detected')
  if coordinator_address is not None and (
      ':' not in coordinator_address
      or not coordinator_address.rsplit(':', 1)[1].isdigit()):
    raise UserError(f'--coordinator_address must be HOST:PORT (process 0\'s '
                    f'address), got {coordinator_address!r}')
  if num_processes is not None and num_processes < 1:
    raise UserError(f'--num_processes must be at least 1, got {num_processes}')
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise UserError(f'--process_id must be in 0..{num_processes - 1} for '
                    f'--num_processes={num_processes}, got {process_id}')
  return given


def initialize(multihost=False, coordinator_address=None, num_processes=None,
               process_id=None, timeout_s=300):
  """Starts `jax.distributed` if the run is multi-host; returns whether it did.

  Must be called before any other JAX call. Raises UserError for incomplete
  settings. If the coordinator cannot be reached, or not all processes join,
  within `timeout_s` seconds, prints one `error: ...` line naming the address
  and exits with status 2 (see `_Watchdog`).
  """
  given = settings(multihost, coordinator_address, num_processes, process_id)
  if given is None:
    return False
  if timeout_s <= 0:
    raise UserError(f'--coordinator_timeout must be positive, got {timeout_s}')
  address = given['coordinator_address']
  if given['process_id'] == 0 and address and not _port_free(address):
    # jaxlib would crash (segfault) failing to bind the coordinator's port.
    raise UserError(
        f'process 0 runs the coordinator on port {address.rsplit(":", 1)[1]} '
        f'of this host (--coordinator_address={address}), but that port is in '
        'use; pick a free port and pass it to every process')
  watchdog = _Watchdog(timeout_s, given)
  try:
    jax.distributed.initialize(
        coordinator_address=given['coordinator_address'],
        num_processes=given['num_processes'],
        process_id=given['process_id'],
        # JAX's own deadline ends the process with a fatal log and a stack
        # trace; the watchdog's shorter one gives the one-line error instead.
        initialization_timeout=int(timeout_s) + 30)
  except ValueError as e:  # Auto-detection found nothing to fill in.
    raise UserError(
        f'--multihost could not detect the cluster ({_first_line(e)}); outside '
        'Cloud TPU VMs, SLURM and Open MPI pass --coordinator_address, '
        '--num_processes and --process_id') from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(watchdog.message(_first_line(e))) from None
  finally:
    watchdog.cancel()
  return True


class _Watchdog:
  """Ends the process with one line if start-up takes over `timeout_s`.

  XLA's coordination client does not raise when the coordinator or a process
  never shows up: it aborts the process with a fatal log. JAX releases the GIL
  while it waits, so this timer runs first, prints `error: ...` (what
  launch.py prints for a UserError, which a timer thread cannot raise into
  the waiting main thread) and exits with status 2.
  """

  def __init__(self, timeout_s, given):
    self.timeout_s, self.given = timeout_s, given
    self._timer = threading.Timer(timeout_s, self._fire)
    self._timer.daemon = True
    self._timer.start()

  def cancel(self):
    self._timer.cancel()

  def message(self, detail=None):
    """What went wrong, naming the coordinator address."""
    address, n = self.given['coordinator_address'], self.given['num_processes']
    detail = f' ({detail})' if detail else ''
    if address is None:  # --multihost: JAX was detecting it.
      return (f'--multihost: no coordinator was found, or not all processes '
              f'joined it, within {self.timeout_s:g} s{detail}; start the '
              'command on every host (--worker=all on a TPU VM), pass '
              '--coordinator_address, --num_processes and --process_id, or '
              'a longer --coordinator_timeout')
    if self.given['process_id'] != 0 and not _reachable(address):
      return (f'cannot reach the coordinator at {address} within '
              f'{self.timeout_s:g} s{detail}: start process 0 with '
              f'--coordinator_address={address}, check that this host can '
              'reach that address and port, or pass a longer '
              '--coordinator_timeout')
    return (f'not all {n} processes joined the coordinator at {address} '
            f'within {self.timeout_s:g} s{detail}: start every process, with '
            f'--process_id 0 to {n - 1} and the same --coordinator_address and '
            '--num_processes, or pass a longer --coordinator_timeout')

  def _fire(self):
    try:
      message = self.message()
    except Exception as e:  # pylint: disable=broad-except
      message = (f'jax.distributed did not start within {self.timeout_s:g} s '
                 f'({_first_line(e)})')
    print(f'error: {message}', file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access


def _port_free(address):
  """Whether the coordinator can listen on the port of `address`."""
  port = int(address.rsplit(':', 1)[1])
  for family, host in ((socket.AF_INET6, '::'), (socket.AF_INET, '')):
    try:
      sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # No IPv6 here: try IPv4.
      continue
    try:
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      sock.bind((host, port))
      return True
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        return False  # Other errors (IPv6 disabled, ...): try IPv4.
    finally:
      sock.close()
  return True


def _reachable(address):
  host, port = address.rsplit(':', 1)
  try:
    socket.create_connection((host.strip('[]'), int(port)), timeout=2).close()
    return True
  except (OSError, ValueError):
    return False


def _first_line(e):
  text = ' '.join(str(e).split())
  return f'{type(e).__name__}: {text[:200]}'


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _differences(reference, other):
  a, b = _flatten(reference), _flatten(other)
  return [f'{k} {a.get(k, "<absent>")!r} vs {b.get(k, "<absent>")!r}'
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_same_config(config, workdir, launch_flags=None):
  """Raises UserError on every host unless all hosts run the same thing.

  `config` is the resolved config as a dict, `workdir` the --workdir given,
  `launch_flags` {'--mode': ..., ...}: launch.py's other flags that every
  host must share (a sample count or mode that differs would leave the hosts
  waiting on each other's gathers). Each host shares a hash of them all; if
  the hashes differ, the hosts share the values themselves so that the error
  names the processes and the fields that differ from process 0. Does nothing
  on a single host.
  """
  if jax.process_count() == 1:
    return
  run = {**config, '--workdir': workdir, **(launch_flags or {})}
  blob = json.dumps(run, sort_keys=True, default=repr).encode()
  digest = np.frombuffer(hashlib.sha256(blob).digest()[:16], np.uint32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differ = [i for i in range(len(digests))
            if not np.array_equal(digests[i], digests[0])]
  if not differ:
    return
  lengths = np.asarray(multihost_utils.process_allgather(
      np.array([len(blob)], np.int32))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(blob)] = np.frombuffer(blob, np.uint8)
  blobs = np.asarray(multihost_utils.process_allgather(padded))
  runs = [json.loads(bytes(b[:n]).decode()) for b, n in zip(blobs, lengths)]
  parts = []
  for i in differ:
    fields = _differences(runs[0], runs[i])
    more = (f' and {len(fields) - _SHOWN_FIELDS} more'
            if len(fields) > _SHOWN_FIELDS else '')
    parts.append(f'process {i}: {", ".join(fields[:_SHOWN_FIELDS])}{more}')
  raise UserError(
      f'the hosts disagree on the config (process 0\'s value first): '
      f'{"; ".join(parts)}. Launch every host with the same --config, '
      '--config.* overrides, --workdir and other flags')


def check_same_data(num_examples):
  """Raises UserError on every host unless all hosts read a dataset of the
  same size (`num_examples`; None for generated data): each host's shard of a
  global batch comes from one shuffle of N examples, so hosts that see
  different files (a listing taken mid-upload, a file one host cannot read,
  host-local copies that differ) would read overlapping examples. Does
  nothing on a single host."""
  if jax.process_count() == 1 or num_examples is None:
    return
  counts = np.asarray(multihost_utils.process_allgather(
      np.array([num_examples], np.int64))).reshape(-1)
  if (counts == counts[0]).all():
    return
  differ = ', '.join(f'process {i}: {c}' for i, c in enumerate(counts)
                     if c != counts[0])
  raise UserError(
      f'the hosts see datasets of different sizes (process 0: {counts[0]} '
      f'examples; {differ}); every host must read the same files: check '
      'that the data path is one shared folder or identical copies')


def check_shared_workdir(workdir, wait_s=5):
  """Raises UserError on every host unless all hosts see the same `workdir`.

  Checkpoints need it: orbax writes the state from process 0 and every host
  reads it back. Process 0 writes a file with a fresh random name there, and
  every host looks for it (up to `wait_s` seconds, for slow network
  filesystems). `workdir` must exist. Does nothing on a single host.
  """
  if jax.process_count() == 1:
    return
  token = np.asarray(multihost_utils.broadcast_one_to_all(
      np.frombuffer(os.urandom(8), np.uint32)))
  # epath: a local (mounted) folder or a gs:// URL, which every host sees.
  from etils import epath  # pylint: disable=g-import-not-at-top
  probe = epath.Path(workdir) / f'.shared_test_{token.tobytes().hex()}'
  if jax.process_index() == 0:
    probe.write_text('ok')
  multihost_utils.sync_global_devices('gan_jax: shared workdir probe written')
  deadline = time.time() + wait_s
  while not probe.exists() and time.time() < deadline:
    time.sleep(0.5)
  seen = np.asarray(multihost_utils.process_allgather(
      np.array([probe.exists()], np.int32))).reshape(-1)
  if jax.process_index() == 0:
    probe.unlink()
  blind = [i for i, s in enumerate(seen) if not s]
  if blind:
    processes = 'processes' if len(blind) > 1 else 'process'
    raise UserError(
        f'--workdir {workdir!r} is not shared: {processes} '
        f'{", ".join(map(str, blind))} cannot see the files process 0 writes '
        'there. On several hosts the workdir must be one directory every host '
        'mounts at the same path (NFS, Filestore, ...), or a gs:// bucket')
