"""The backend JAX runs on, for the start-up log, and the one warning it needs.

`pip install -r requirements.txt` installs the CPU build of jax everywhere. On
a GPU machine or a TPU VM jax then runs on the CPU, many times slower, and
says so only in a line that is easy to miss. `check` (called by launch.py)
logs the backend and its devices, and when the machine shows a GPU or a TPU
that jax does not use, one warning that names the package to install.

The machine is read from its device files alone, not through any library:
what is missing is exactly the library that would find the accelerator.
"""
import collections
import glob
import os
import shutil

from absl import logging
import jax

# An NVIDIA driver's device files (and nvidia-smi on PATH, below).
GPU_FILES = ('/dev/nvidia0', '/dev/nvidiactl', '/proc/driver/nvidia')
# TPU v2-v4 chips are /dev/accel*; v5e and later are VFIO groups, which other
# PCI passthrough makes too, so those count only beside a Google PCI device.
TPU_FILES = ('/dev/accel0',)
VFIO_GROUPS = '/dev/vfio/[0-9]*'
PCI_VENDORS = '/sys/bus/pci/devices/*/vendor'
GOOGLE_PCI_VENDOR = '0x1ae0'


def describe():
  """'gpu: 8 x NVIDIA H100 80GB HBM3': the backend and this host's devices."""
  kinds = collections.Counter(d.device_kind for d in jax.local_devices())
  devices = ', '.join(f'{n} x {kind}' for kind, n in kinds.items())
  if jax.process_count() > 1:
    devices += f' ({jax.device_count()} in {jax.process_count()} processes)'
  return f'{jax.default_backend()}: {devices}'


def accelerator_present():
  """'gpu' or 'tpu' if the machine's device files show one, else None."""
  if any(os.path.exists(f) for f in GPU_FILES) or shutil.which('nvidia-smi'):
    return 'gpu'
  if any(os.path.exists(f) for f in TPU_FILES) or (
      glob.glob(VFIO_GROUPS) and any(
          _read(v) == GOOGLE_PCI_VENDOR for v in glob.glob(PCI_VENDORS))):
    return 'tpu'
  return None


def mismatch_warning():
  """The warning when jax runs on the CPU of a GPU or TPU machine, else None.

  None as well when JAX_PLATFORMS (jax_platforms) picks the backends: then the
  CPU is someone's choice (the tests run launch.py so), not a missing package.
  """
  if jax.default_backend() != 'cpu' or _platforms_requested():
    return None
  present = accelerator_present()
  if present is None:
    return None
  package = {'gpu': 'cuda12', 'tpu': 'tpu'}[present]
  return (f'this machine has a {present.upper()}, but jax runs on the CPU: '
          f'install its {present.upper()} build, pip install -U '
          f'"jax[{package}]=={jax.__version__}" (if that is installed, a '
          'JAX warning above says why it did not start)')


def check():
  """Logs the backend line, and the mismatch warning if there is one."""
  logging.info('backend %s', describe())
  warning = mismatch_warning()
  if warning:
    logging.warning('%s', warning)


def _platforms_requested():
  return jax.config.jax_platforms


def _read(path):
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None
