"""Image datasets: TFDS (mocked, and a real array_record dataset) and own images.

`tfds.testing.mock_data` supports `tfds.data_source` in this TFDS version: it
replaces the array_record reader with deterministic random examples of each
dataset's real feature spec (example `i` is always the same), so the TFDS
tests run the real `gan_jax.data.tfds_data` code on mnist, fashion_mnist,
cifar10 and celeb_a. The mock skips the files and their decoding, so one test
also writes a tiny real array_record dataset (a builder with a uint8 Tensor
feature, which TFDS can write without TensorFlow) and reads it back unmocked.
"""
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax import data
from gan_jax.data import own_images
from gan_jax.data import tfds_data
from gan_jax.errors import UserError
from tests.conftest import ROOT
from tests.conftest import tiny_config

tfds.disable_progress_bar()


def _config(name, **fields):
  config = tiny_config()
  config.data.name = name
  for key, value in fields.items():
    config.data[key] = value
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _to_uint8(batch):
  """Inverts the [-1, 1] scaling (exact for uint8 sources)."""
  return np.round((batch + 1) * 127.5).astype(np.uint8)


def _check_batch(batch, shape):
  assert batch.shape == shape and batch.dtype == np.float32
  assert batch.min() >= -1 and batch.max() <= 1


def _ids(batch, lookup):
  """The source indices of a batch's examples, by their exact bytes."""
  return [lookup[image.tobytes()] for image in _to_uint8(batch)]


# ---------------------------------------------------------------- TFDS, mocked


@pytest.mark.parametrize('name,shape', [
    ('mnist', (28, 28, 1)), ('fashion_mnist', (28, 28, 1)),
    ('cifar10', (32, 32, 3)), ('celeb_a', (64, 64, 3))])
def test_tfds_shapes_dtype_range(name, shape):
  with tfds.testing.mock_data(num_examples=12):
    it = data.build(_config(name, data_dir='/nonexistent'), 4, 0, 1)
    assert it.example_shape == shape
    for batch in _take(it, 4):  # Crosses an epoch (3 batches each).
      _check_batch(batch, (4, *shape))


def test_celeb_a_is_center_cropped():
  with tfds.testing.mock_data(num_examples=8):
    raw = tfds.data_source('celeb_a', split='train')
    crops = {raw[i]['image'][20:198].tobytes(): i for i in range(8)}
    # image_size 178: the crop only, no resize, so examples match exactly.
    it = data.build(_config('celeb_a', image_size=178), 8, 0, 1)
    assert sorted(_ids(next(it), crops)) == list(range(8))


def test_tfds_hosts_get_disjoint_shares_of_each_epoch():
  with tfds.testing.mock_data(num_examples=20):
    raw = tfds.data_source('mnist', split='train')
    lookup = {raw[i]['image'].tobytes(): i for i in range(20)}
    assert len(lookup) == 20
    config = _config('mnist', seed=3)
    # Global batch 6: 3 batches (18 examples) per epoch, 2 dropped.
    hosts = [data.build(config, 3, i, 2) for i in range(2)]
    whole = data.build(config, 6, 0, 1)
    epochs = []
    for _ in range(3):
      seen = [[], []]
      for _ in range(3):
        parts = [next(h) for h in hosts]
        np.testing.assert_array_equal(np.concatenate(parts), next(whole))
        for i, part in enumerate(parts):
          seen[i] += _ids(part, lookup)
      assert not set(seen[0]) & set(seen[1])
      epoch = seen[0] + seen[1]
      assert len(set(epoch)) == 18
      epochs.append(epoch)
    # Reshuffled every epoch: no two epochs in the same order.
    assert len({tuple(e) for e in epochs}) == 3
    assert len(set(epochs[0]) | set(epochs[1]) | set(epochs[2])) == 20


def test_tfds_resume_gives_identical_batches():
  with tfds.testing.mock_data(num_examples=10):
    config = _config('cifar10', seed=7)
    it = data.build(config, 4, 1, 2)
    _take(it, 3)  # Past the end of the first epoch (1 batch per epoch).
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 4)
    fresh = data.build(config, 4, 1, 2)
    fresh.set_state(state)
    for a, b in zip(expected, _take(fresh, 4)):
      np.testing.assert_array_equal(a, b)


def test_missing_tfds_dataset_is_one_clear_line(tmp_path, caplog):
  (tmp_path / 'mnist' / '3.0.1').mkdir(parents=True)  # A folder, no dataset.
  with pytest.raises(UserError) as e:
    data.build(_config('mnist', data_dir=str(tmp_path)), 4, 0, 1)
  # TFDS's own warnings ('Variant folder ... has no dataset_info.json') are
  # dropped: the error line says what is wrong.
  assert not [r for r in caplog.records
              if 'tensorflow_datasets' in r.pathname], caplog.text
  message = str(e.value)
  assert '\n' not in message
  assert 'tfds build mnist --file_format=array_record' in message
  assert '--config.data.data_dir=' in message and str(tmp_path) in message
  assert os.listdir(tmp_path) == ['mnist']  # Nothing downloaded or written.
  assert os.listdir(tmp_path / 'mnist') == ['3.0.1']


def test_too_small_tfds_split():
  with tfds.testing.mock_data(num_examples=5):
    with pytest.raises(UserError, match='fewer than one global batch'):
      data.build(_config('mnist'), 4, 0, 2)


# ------------------------------------------------- TFDS, real array_record


class GanJaxTestDigits(tfds.core.GeneratorBasedBuilder):
  """14 examples of 6 x 6 x 1; example i is filled with 10 * i."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'image': tfds.features.Tensor(shape=(6, 6, 1), dtype=np.uint8)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(14):
      yield i, {'image': np.full((6, 6, 1), 10 * i, np.uint8)}


def test_real_array_record_dataset(tmp_path, monkeypatch):
  GanJaxTestDigits(data_dir=str(tmp_path),
                   file_format='array_record').download_and_prepare()
  monkeypatch.setitem(tfds_data.DATASETS, 'gan_jax_test_digits',
                      ((6, 6, 1), None, None))
  config = _config('gan_jax_test_digits', data_dir=str(tmp_path))
  it = tfds_data.build(config, 7, 0, 1)
  assert it.example_shape == (6, 6, 1)
  for _ in range(2):  # Two epochs, each every example once.
    batches = np.concatenate(_take(it, 2))
    _check_batch(batches, (14, 6, 6, 1))
    values = _to_uint8(batches)
    assert (values == values[:, :1, :1]).all()
    assert sorted(values[:, 0, 0, 0] // 10) == list(range(14))
  with pytest.raises(UserError, match="split 'validation'"):
    tfds_data.build(_config('gan_jax_test_digits', data_dir=str(tmp_path),
                            split='validation'), 7, 0, 1)
  # As if prepared by a plain `tfds build` (TFRecord, which needs TensorFlow).
  info = tmp_path / 'gan_jax_test_digits' / '1.0.0' / 'dataset_info.json'
  info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
  with pytest.raises(UserError, match='prepared as tfrecord') as e:
    tfds_data.build(config, 7, 0, 1)
  assert '\n' not in str(e.value) and '--file_format=array_record' in str(e.value)


# ---------------------------------------------------------- own images: folder


def _palette(n):
  """n well-separated RGB colours; gray ones are (v, v, v)."""
  colours = [(8 * i, 255 - 8 * i, (40 * i) % 256) for i in range(n)]
  return colours


def _write_folder(root, n_rgb=20, n_gray=10):
  """Images of unique constant colour inside a center square, white outside.

  Returns the colour of each readable image (as RGB) by file.
  """
  sizes = [(40, 30), (30, 40), (64, 64), (100, 50), (17, 23), (33, 33)]
  colours = {}
  for i in range(n_rgb + n_gray):
    width, height = sizes[i % len(sizes)]
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    gray = i >= n_rgb
    if gray:
      colour = (8 * i + 4,) * 3
      pixels = np.full((height, width), 255, np.uint8)
      pixels[top:top + side, left:left + side] = colour[0]
    else:
      colour = _palette(n_rgb)[i]
      pixels = np.full((height, width, 3), 255, np.uint8)
      pixels[top:top + side, left:left + side] = colour
    folder = os.path.join(root, 'sub', 'deeper') if i % 7 == 0 else root
    os.makedirs(folder, exist_ok=True)
    # JPEGs are square: with a non-square one, decoding at reduced scale
    # (draft) may place the crop half a pixel into the white border.
    ext = '.jpg' if i in (2, 26) else ('.PNG' if i == 5 else '.png')
    path = os.path.join(folder, f'img{i:02d}{ext}')
    Image.fromarray(pixels).save(path, quality=100, subsampling=0)
    colours[path] = colour
  with open(os.path.join(root, 'broken.png'), 'wb') as f:
    f.write(b'this is not a png')
  buf = io.BytesIO()
  Image.fromarray(np.zeros((50, 50, 3), np.uint8) + 9).save(buf, 'png')
  with open(os.path.join(root, 'sub', 'truncated.png'), 'wb') as f:
    f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
  with open(os.path.join(root, 'notes.txt'), 'w') as f:
    f.write('not an image, ignored')
  return colours


def _nearest(batch, colours):
  """Index of each example's colour in `colours` (asserting a close match)."""
  table = np.array(colours, np.int32)
  out = []
  for image in _to_uint8(batch).astype(np.int32):
    assert (image == image[:1, :1]).all() or np.ptp(image, (0, 1)).max() <= 3
    dist = np.abs(table - image.reshape(-1, 3).mean(0)).max(1)
    assert dist.min() <= 3
    out.append(int(dist.argmin()))
  return out


def test_folder_of_images(tmp_path, caplog):
  colours = _write_folder(str(tmp_path))
  config = _config('images', path=str(tmp_path), image_size=16, channels=3)
  with caplog.at_level(logging.WARNING):
    it = data.build(config, 6, 0, 1)
  assert 'Skipping 2 unreadable image file(s) of 32' in caplog.text
  assert it.example_shape == (16, 16, 3)
  palette = list(colours.values())
  for _ in range(2):  # 30 images: 5 batches per epoch, each image once.
    batches = _take(it, 5)
    for batch in batches:
      _check_batch(batch, (6, 16, 16, 3))
    ids = [i for batch in batches for i in _nearest(batch, palette)]
    assert sorted(ids) == list(range(30))


def test_folder_channels(tmp_path):
  _write_folder(str(tmp_path))
  with pytest.raises(UserError, match='mixes 10 grayscale and 20 color') as e:
    data.build(_config('images', path=str(tmp_path)), 6, 0, 1)
  assert '--config.data.channels=1' in str(e.value)
  gray_only = tmp_path / 'gray'
  gray_only.mkdir()
  for i in range(4):
    Image.fromarray(np.full((9, 12), 60 * i, np.uint8)).save(gray_only / f'{i}.png')
  it = data.build(_config('images', path=str(gray_only)), 4, 0, 1)
  assert it.example_shape == (64, 64, 1)  # Default size, channels inferred.
  batch = next(it)
  _check_batch(batch, (4, 64, 64, 1))
  assert sorted(_to_uint8(batch)[:, 0, 0, 0]) == [0, 60, 120, 180]


# ------------------------------------------------------------- own images: npz


def _npz(tmp_path, name='images.npz', **arrays):
  path = str(tmp_path / name)
  np.savez(path, **arrays)
  return path


def test_npz_uint8_sharded_and_resumed(tmp_path):
  images = np.repeat(np.arange(24, dtype=np.uint8)[:, None, None] * 10, 5, 1)
  images = np.repeat(images, 7, 2)  # 24 x 5 x 7, example i filled with 10 i.
  config = _config('images', path=_npz(tmp_path, images=images), seed=1)
  hosts = [data.build(config, 4, i, 2) for i in range(2)]
  assert hosts[0].example_shape == (5, 7, 1)
  for _ in range(2):  # 3 global batches of 8 per epoch.
    parts = [np.concatenate(_take(h, 3)) for h in hosts]
    for part in parts:
      _check_batch(part, (12, 5, 7, 1))
    ids = [list(_to_uint8(p)[:, 0, 0, 0] // 10) for p in parts]
    assert sorted(ids[0] + ids[1]) == list(range(24))
  np.testing.assert_allclose(parts[0][0], parts[0][0, 0, 0, 0])
  state = json.loads(json.dumps(hosts[1].get_state()))
  expected = _take(hosts[1], 3)
  fresh = data.build(config, 4, 1, 2)
  fresh.set_state(state)
  for a, b in zip(expected, _take(fresh, 3)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('values,expected', [
    (np.array([0, 0.5, 1], np.float32), [-1, 0, 1]),  # [0, 1]
    (np.array([-1, -0.5, 0.25], np.float64), [-1, -0.5, 0.25]),  # [-1, 1]
    (np.array([0, 51, 255], np.int64), [-1, -0.6, 1]),  # Integers: [0, 255].
])
def test_npz_value_ranges(tmp_path, values, expected):
  images = np.broadcast_to(values[:, None, None, None], (3, 4, 4, 3))
  config = _config('images', path=_npz(tmp_path, images=images))
  batch = next(data.build(config, 3, 0, 1))
  _check_batch(batch, (3, 4, 4, 3))
  np.testing.assert_allclose(sorted(batch[:, 0, 0, 0]), expected, atol=1e-6)


def test_npz_channel_conversion(tmp_path):
  gray = np.full((4, 8, 8), 200, np.uint8)
  it = data.build(_config('images', path=_npz(tmp_path, images=gray),
                          channels=3), 4, 0, 1)
  assert it.example_shape == (8, 8, 3)
  np.testing.assert_allclose(next(it), 200 / 127.5 - 1, atol=1e-6)
  rgb = np.zeros((4, 8, 8, 3), np.uint8)
  rgb[..., 1] = 255  # Pure green: luminance 0.587 * 255 = 150.
  it = data.build(_config('images', path=_npz(tmp_path, 'rgb.npz', images=rgb),
                          channels=1), 4, 0, 1)
  assert it.example_shape == (8, 8, 1)
  assert (_to_uint8(next(it)) == 150).all()


def test_worker_processes_give_the_same_batches(tmp_path):
  images = np.arange(16 * 4 * 4, dtype=np.uint8).reshape(16, 4, 4, 1)
  config = _config('images', path=_npz(tmp_path, images=images))
  expected = _take(data.build(config, 4, 0, 1), 6)
  config.data.num_workers = 2
  it = data.build(config, 4, 0, 1)
  try:
    for a, b in zip(expected, _take(it, 6)):
      np.testing.assert_array_equal(a, b)
  finally:
    it.close()


# ---------------------------------------------------------------- bad data


def _error(config, host_batch=4, hosts=1):
  with pytest.raises(UserError) as e:
    data.build(config, host_batch, 0, hosts)
  message = str(e.value)
  assert '\n' not in message
  return message


def test_bad_own_data_errors(tmp_path):
  missing = str(tmp_path / 'nowhere')
  assert 'does not exist' in _error(_config('images', path=missing))
  assert 'data.path is not set' in _error(_config('images'))

  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'readme.txt').write_text('no images')
  assert 'no .png/.jpg/.jpeg files under' in _error(_config('images', path=str(empty)))

  junk = tmp_path / 'junk'
  junk.mkdir()
  for i in range(3):
    (junk / f'{i}.png').write_bytes(b'garbage')
  assert 'none of the 3 image files' in _error(_config('images', path=str(junk)))

  few = tmp_path / 'few'
  few.mkdir()
  for i in range(5):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(few / f'{i}.png')
  message = _error(_config('images', path=str(few)), 4, 2)
  assert 'only 5 examples' in message and '--config.batch_size' in message

  path = _npz(tmp_path, 'keys.npz', pictures=np.zeros((8, 4, 4)), labels=np.zeros(8))
  message = _error(_config('images', path=path))
  assert "no array named 'images'" in message and 'pictures, labels' in message

  ragged = np.empty(2, object)
  ragged[0], ragged[1] = np.zeros((4, 4)), np.zeros((4, 4, 3))
  path = str(tmp_path / 'ragged.npz')
  np.savez(path, images=ragged)
  assert 'object array' in _error(_config('images', path=path))
  garbage = tmp_path / 'garbage.npz'  # Neither a zip nor an .npy.
  garbage.write_bytes(b'not an archive')
  assert 'is not an .npz file' in _error(_config('images', path=str(garbage)))
  single = tmp_path / 'single.npz'
  with open(single, 'wb') as f:
    np.save(f, np.zeros((8, 4, 4), np.uint8))  # np.save, whatever the name.
  assert 'holds a single array (np.save)' in _error(
      _config('images', path=str(single)))

  for shape, words in [((32, 32, 3), 'one H x W x C image, or N grayscale'),
                       ((8, 3, 16, 16), 'channels first'),
                       ((8, 16, 16, 4), '4 channels'),
                       ((8, 16), 'expected N x H x W')]:
    path = _npz(tmp_path, 'shape.npz', images=np.zeros(shape, np.uint8))
    assert words in _error(_config('images', path=path))

  path = _npz(tmp_path, 'range.npz', images=np.full((8, 6, 6), 2.5))
  assert 'range over [2.5, 2.5]' in _error(_config('images', path=path))
  path = _npz(tmp_path, 'small.npz', images=np.zeros((3, 6, 6), np.uint8))
  assert 'only 3 examples' in _error(_config('images', path=path))
  path = _npz(tmp_path, 'size.npz', images=np.zeros((8, 6, 6), np.uint8))
  message = _error(_config('images', path=path, image_size=64))
  assert 'are 6 x 6' in message and 'image_size=6' in message
  message = _error(_config('images', path=path, channels=2))
  assert 'data.channels must be 1 or 3' in message
  text = tmp_path / 'images.csv'
  text.write_text('1,2,3')
  assert 'neither a folder nor an .npz' in _error(_config('images', path=str(text)))


_ORPHAN_SCRIPT = '''
import sys, time
import numpy as np
from gan_jax.data import pipeline
images = np.zeros((16, 4, 4, 1), np.uint8)
it = pipeline.build(pipeline.ArrayBatches(images), 16, (4, 4, 1), seed=0,
                    host_batch_size=4, process_index=0, process_count=1,
                    num_workers=2)
next(it)
print('ready', flush=True)
time.sleep(600)
'''


def _descendants(pid):
  """The pids of `pid`'s descendant processes (from /proc)."""
  found, todo = [], [pid]
  while todo:
    p = todo.pop()
    for task in os.listdir(f'/proc/{p}/task') if os.path.exists(f'/proc/{p}/task') else []:
      try:
        with open(f'/proc/{p}/task/{task}/children') as f:
          kids = [int(c) for c in f.read().split()]
      except OSError:
        kids = []
      found += kids
      todo += kids
  return found


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except OSError:
    return False


def test_a_worker_started_after_its_parent_died_exits():
  """The worker init watches the pid it was given, not its parent at init.

  A worker reparented before its init ran (its training process was killed
  while it was still starting) must not adopt the new parent as its own.
  """
  script = ('import os, sys, time\n'
            'from gan_jax.data import pipeline\n'
            'pipeline.die_with_parent(0, 1, parent=int(sys.argv[1]))\n'
            'time.sleep(30)\n'
            'sys.exit(3)\n')
  not_its_parent = os.getpid() + 1  # The child's parent is this process.
  proc = subprocess.run([sys.executable, '-c', script, str(not_its_parent)],
                        cwd=ROOT, timeout=50, check=False)
  assert proc.returncode == 0
  # Its own parent alive: the watch keeps the worker running.
  script_alive = script.replace('time.sleep(30)', 'time.sleep(2)')
  proc = subprocess.run([sys.executable, '-c', script_alive, str(os.getpid())],
                        cwd=ROOT, timeout=50, check=False)
  assert proc.returncode == 3


@pytest.mark.skipif(not os.path.exists('/proc/self/task'), reason='needs /proc')
def test_worker_processes_die_with_a_killed_parent():
  """After SIGKILL of the training process its grain workers exit too."""
  proc = subprocess.Popen([sys.executable, '-c', _ORPHAN_SCRIPT], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'ready'
    workers = _descendants(proc.pid)
    assert workers, 'no worker processes started'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # A worker still importing when its parent dies runs its init late: give
    # a loaded machine time to get there.
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(w) for w in workers):
      time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:
      os.kill(w, signal.SIGKILL)
    assert not left, f'worker processes {left} outlived their parent'
  finally:
    proc.kill()
