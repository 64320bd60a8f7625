"""Converts pytorch-fid's FID Inception weights (.pth) into the .npz gan_jax loads.

  wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  python tools/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth [OUT.npz]

OUT.npz (a local path or a gs:// URL) defaults to
~/.cache/gan_jax/fid_inception_v3-2015-12-05.npz; point
config.eval.inception_weights at it. torch is needed only here (any version
that can `torch.load` the file); the renaming itself is
`gan_jax.metrics.inception.from_torch_state_dict`, which tests/test_inception.py
checks against pytorch-fid's own network.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from gan_jax import workdir
from gan_jax import writers
from gan_jax.errors import UserError
from gan_jax.metrics import inception
# pylint: enable=g-import-not-at-top,wrong-import-position


def load_torch_state_dict(pth_path):
  """The state dict of a .pth file as name -> numpy array."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('converting the .pth needs torch: pip install torch '
                    '(any version; or pip install -r requirements-test.txt)'
                    ) from None
  if not os.path.isfile(pth_path):
    raise UserError(f'no file {pth_path!r}: pass the downloaded .pth (the '
                    'wget line of this tool\'s --help)')
  state_dict = torch.load(pth_path, map_location='cpu', weights_only=True)
  if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
    state_dict = state_dict['state_dict']
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def convert(pth_path, npz_path):
  """Writes the converted weights of `pth_path` to `npz_path` (local or
  gs://; whole or not at all); returns it."""
  flat = inception.from_torch_state_dict(load_torch_state_dict(pth_path))
  if not workdir.is_remote(npz_path):
    npz_path = os.path.expanduser(npz_path)
    os.makedirs(os.path.dirname(os.path.abspath(npz_path)), exist_ok=True)
  writers.save_npz(npz_path, flat)
  return npz_path


def main(argv):
  if len(argv) not in (2, 3) or argv[1] in ('-h', '--help'):
    print(__doc__)
    return 2
  out = argv[2] if len(argv) == 3 else inception.DEFAULT_WEIGHTS
  try:
    workdir.check_out_file(out, flag='OUT.npz', remote_ok=True)
    out = convert(argv[1], out)
  except UserError as e:
    sys.exit(f'error: {e}')
  print(f'wrote {out} (sha256 {inception.weights_hash(out)[:12]})')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
