"""gan_jax/backend.py: the start-up backend line, and the warning for a GPU or
TPU machine whose jax runs on the CPU (detection faked by file paths)."""
import logging

import jax
import pytest

from gan_jax import backend
from tests.conftest import run_launch


@pytest.fixture
def machine(tmp_path, monkeypatch):
  """A fake machine: no accelerator until the test creates its files, and jax
  choosing its backend itself (as without JAX_PLATFORMS)."""
  monkeypatch.setattr(backend, 'GPU_FILES', (str(tmp_path / 'nvidia0'),))
  monkeypatch.setattr(backend, 'TPU_FILES', (str(tmp_path / 'accel0'),))
  monkeypatch.setattr(backend, 'VFIO_GROUPS', str(tmp_path / 'vfio' / '[0-9]*'))
  monkeypatch.setattr(backend, 'PCI_VENDORS',
                      str(tmp_path / 'pci' / '*' / 'vendor'))
  monkeypatch.setenv('PATH', str(tmp_path / 'bin'))  # No nvidia-smi.
  monkeypatch.setattr(backend, '_platforms_requested', lambda: None)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  return tmp_path


def _make(path, text=''):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_describe_names_backend_and_devices():
  kind = jax.local_devices()[0].device_kind
  want = f'{jax.default_backend()}: {jax.local_device_count()} x {kind}'
  assert backend.describe() == want


def test_describe_counts_each_kind_and_the_other_processes(monkeypatch):
  # A host of a 2-process run whose 3 devices are of two kinds (faked).
  fake = lambda kind: type('Device', (), {'device_kind': kind})()
  monkeypatch.setattr(jax, 'local_devices', lambda: [
      fake('NVIDIA H100'), fake('NVIDIA H100'), fake('NVIDIA A100')])
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'device_count', lambda: 6)
  assert backend.describe() == (
      'gpu: 2 x NVIDIA H100, 1 x NVIDIA A100 (6 in 2 processes)')


def test_no_warning_without_an_accelerator(machine):
  _make(machine / 'vfio' / '7')  # VFIO alone: some other passthrough.
  _make(machine / 'pci' / '0000:00:04.0' / 'vendor', '0x10de\n')
  assert backend.accelerator_present() is None
  assert backend.mismatch_warning() is None


@pytest.mark.parametrize('files', [
    {'nvidia0': ''},
    {'bin/nvidia-smi': '#!/bin/sh\n'},
])
def test_gpu_machine_on_cpu_warns_with_the_cuda_install(machine, files):
  for name, text in files.items():
    _make(machine / name, text).chmod(0o755)
  warning = backend.mismatch_warning()
  assert 'has a GPU, but jax runs on the CPU' in warning
  assert f'pip install -U "jax[cuda12]=={jax.__version__}"' in warning


@pytest.mark.parametrize('files', [
    {'accel0': ''},
    {'vfio/0': '', 'pci/0000:00:05.0/vendor': '0x1ae0\n'},
])
def test_tpu_machine_on_cpu_warns_with_the_tpu_install(machine, files):
  for name, text in files.items():
    _make(machine / name, text)
  warning = backend.mismatch_warning()
  assert 'has a TPU, but jax runs on the CPU' in warning
  assert f'pip install -U "jax[tpu]=={jax.__version__}"' in warning


def test_no_warning_when_jax_uses_the_gpu_or_cpu_was_asked_for(
    machine, monkeypatch):
  _make(machine / 'nvidia0')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert backend.mismatch_warning() is None
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  monkeypatch.setattr(backend, '_platforms_requested', lambda: 'cpu')
  assert backend.mismatch_warning() is None  # JAX_PLATFORMS=cpu: a choice.


def test_check_logs_the_backend_and_one_warning(machine, monkeypatch, caplog):
  monkeypatch.setattr(backend, 'describe', lambda: 'cpu: 1 x cpu')
  caplog.set_level(logging.INFO, logger='absl')  # gan_jax logs through absl.
  backend.check()
  assert [r.getMessage() for r in caplog.records] == ['backend cpu: 1 x cpu']
  caplog.clear()
  _make(machine / 'nvidia0')
  backend.check()
  levels = [r.levelno for r in caplog.records]
  assert levels == [logging.INFO, logging.WARNING]
  assert 'jax[cuda12]' in caplog.records[1].getMessage()


def test_launch_logs_the_backend(tmp_path):
  # --mode=eval without a run stops right after start-up.
  result = run_launch(['--config=configs/default.py', '--mode=eval',
                       f'--workdir={tmp_path / "none"}'], devices=2)
  assert 'backend cpu: 2 x cpu' in result.stderr, result.stderr[-2000:]
  assert 'jax runs on the CPU' not in result.stderr  # JAX_PLATFORMS=cpu.
