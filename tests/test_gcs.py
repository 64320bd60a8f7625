"""gs:// paths end to end, against a local Cloud Storage emulator
(gcp-storage-emulator, run in this process): a `--workdir gs://bucket/run`
killed with SIGKILL and launched again ends bitwise where an uninterrupted
one does, --mode=eval reads from the bucket, and a missing bucket is one
error line; the lock's takeover is conditional on the generation it read;
a folder of images on gs:// reads as the same folder on a local disk; the
feature networks' weights (Inception, classifier) and the reference
statistics' cache may be on gs://, and tools/train_classifier.py and
tools/convert_inception_weights.py write there.

Versions verified: gcp-storage-emulator 2026.7.19, gcsfs 2026.10.1,
etils 1.15.0, tensorstore 0.1.86, orbax-checkpoint 0.12.8, tensorboardX 2.6.5.
"""
import io
import json
import logging
import os
import signal
import socket
import urllib.parse
import urllib.request
import uuid

import jax
import numpy as np
import pytest

# Read by gcsfs at import: without it gcsfs uses ExtendedGcsFileSystem, which
# asks the storage-control gRPC API (which the emulator lacks) about each
# bucket: a 60 s timeout per call. And epath must not pick tf.io.gfile.
os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
os.environ.setdefault('EPATH_USE_TF', 'false')

from tests.conftest import importorskip_extra  # pylint: disable=g-import-not-at-top
from tests.conftest import run_launch  # pylint: disable=g-import-not-at-top
from tests.conftest import tiny_digits_run  # pylint: disable=g-import-not-at-top
from tests.test_fault_tolerance import final_state  # pylint: disable=g-import-not-at-top
from tests.test_fault_tolerance import BASE  # pylint: disable=g-import-not-at-top
from tests.test_fault_tolerance import SLOW  # pylint: disable=g-import-not-at-top
from tests.test_fault_tolerance import start_launch  # pylint: disable=g-import-not-at-top
from tests.test_fault_tolerance import wait_for  # pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.extras

importorskip_extra('gcsfs', 'gcsfs')
importorskip_extra('gcp_storage_emulator', 'gcp-storage-emulator')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _patch_emulator():
  """Four gaps of gcp-storage-emulator 2026.7.19 that the clients hit (only
  the server, in this process, needs them):
  - no x-goog-generation header on downloads: tensorstore's read-modify-write
    of an OCDBT manifest fails now and then with 'Malformed StorageGeneration';
  - no objects.moveTo route: gcsfs tries it on every rename, gets 501,
    retries ~34 s, then copies;
  - ifGenerationMatch ignored on uploads and deletes: the lock's exclusive
    create would silently overwrite, its takeover delete a new lock."""
  from http import HTTPStatus  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator import server as srv  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  if getattr(srv, '_gan_jax_patched', False):
    return

  def move(request, response, storage, *args, **kwargs):
    del args, kwargs
    b, src, dst = (request.params[k]
                   for k in ('bucket_name', 'object_id', 'dest_object_id'))
    try:
      obj = objects._copy(request.base_url, storage, b, src, b, dst)  # pylint: disable=protected-access
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    objects._delete(storage, b, src)  # pylint: disable=protected-access
    response.json(obj)

  orig_insert = objects.insert

  def insert(request, response, storage, *args, **kwargs):
    want = request.query.get('ifGenerationMatch')
    if want and 'upload_id' not in request.query:
      name = (request.query.get('name') or [None])[0]
      if name is None and isinstance(request.data, dict):
        name = ((request.data.get('meta') or {}).get('name')
                or request.data.get('name'))
      try:
        current = storage.get_file_obj(request.params['bucket_name'],
                                       name)['generation']
      except NotFound:
        current = '0'
      if str(current) != want[0]:
        response.status = HTTPStatus.PRECONDITION_FAILED
        msg = 'At least one of the pre-conditions you specified did not hold.'
        response.json({'error': {'code': 412, 'message': msg, 'errors': [
            {'reason': 'conditionNotMet', 'message': msg}]}})
        return
    return orig_insert(request, response, storage, *args, **kwargs)

  orig_download = objects.download

  def download(request, response, storage, *args, **kwargs):
    orig_download(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params['bucket_name'],
                                 request.params['object_id'])
    except NotFound:
      return
    response['x-goog-generation'] = str(obj['generation'])
    response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))

  orig_delete = objects.delete

  def delete(request, response, storage, *args, **kwargs):
    want = request.query.get('ifGenerationMatch')
    if want:
      try:
        current = storage.get_file_obj(request.params['bucket_name'],
                                       request.params['object_id'])
      except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
      if str(current['generation']) != want[0]:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
    return orig_delete(request, response, storage, *args, **kwargs)

  objects.download = download  # objects.get calls it for alt=media.
  replace = {orig_insert: insert, orig_download: download,
             orig_delete: delete}

  move_route = (r'^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/'
                r'(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$',
                {'POST': move})
  srv.HANDLERS = (move_route,) + tuple(
      (rx, {m: replace.get(h, h) for m, h in hs.items()})
      for rx, hs in srv.HANDLERS)

  # gcsfs races a GET against a list for exists() and drops the loser:
  # silence the emulator's BrokenPipeError traceback for each.
  orig_close = srv.Response.close

  def close(self):
    try:
      orig_close(self)
    except (BrokenPipeError, ConnectionResetError):
      pass

  srv.Response.close = close

  # Test-only: the bucket 'denied' answers 401 as real GCS does to a caller
  # without credentials.
  orig_handle = srv.Router.handle

  def handle(self, method):
    h = self._request_handler  # pylint: disable=protected-access
    path = h.path.split('?')[0] + '/'
    if '/b/denied/' in path or path.startswith('/denied/'):
      msg = ('Anonymous caller does not have storage.objects.list access to '
             'the Google Cloud Storage bucket.')
      body = json.dumps({'error': {'code': 401, 'message': msg, 'errors': [
          {'message': msg, 'reason': 'required'}]}}).encode()
      n = int(h.headers.get('Content-Length') or 0)
      if n:
        h.rfile.read(n)
      h.send_response(401)
      h.send_header('Content-Type', 'application/json')
      h.send_header('Content-Length', str(len(body)))
      h.end_headers()
      h.wfile.write(body)
      return None
    return orig_handle(self, method)

  srv.Router.handle = handle
  srv._gan_jax_patched = True  # pylint: disable=protected-access


@pytest.fixture(scope='module')
def gcs_emulator():
  """The emulator, started once for this module (tensorstore reads its
  endpoint once per process; no other module uses it, and its server thread
  must be gone before tests that check for leftover threads), with every client of this process and of launch.py subprocesses
  (they inherit the environment) pointed at it. Yields its URL."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  _patch_emulator()
  logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)
  port = _free_port()
  server = create_server('127.0.0.1', port, in_memory=True)
  server.start()
  url = f'http://127.0.0.1:{port}'
  mp = pytest.MonkeyPatch()
  for k, v in {'STORAGE_EMULATOR_HOST': url,     # gcsfs
               'TENSORSTORE_GCS_HTTP_URL': url,  # orbax's arrays
               'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'x',  # tensorstore: no ADC
               'FSSPEC_GCS_TOKEN': 'anon'}.items():   # gcsfs: no credentials
    mp.setenv(k, v)
  import fsspec.config  # pylint: disable=g-import-not-at-top
  mp.setitem(fsspec.config.conf, 'gcs',
             {**fsspec.config.conf.get('gcs', {}), 'token': 'anon'})
  try:
    yield url
  finally:
    mp.undo()
    server.stop()


@pytest.fixture
def bucket(gcs_emulator):
  """A new empty bucket: 'gs://<name>'."""
  name = f'test-{uuid.uuid4().hex[:12]}'
  urllib.request.urlopen(urllib.request.Request(
      f'{gcs_emulator}/storage/v1/b?project=test', method='POST',
      data=json.dumps({'name': name}).encode(),
      headers={'Content-Type': 'application/json'})).read()
  return f'gs://{name}'


def _objects(url, gs_prefix):
  """Names of the objects under gs_prefix, asked of the server (no cache)."""
  name, _, prefix = gs_prefix[len('gs://'):].partition('/')
  query = urllib.parse.urlencode({'prefix': prefix})
  with urllib.request.urlopen(f'{url}/storage/v1/b/{name}/o?{query}') as r:
    return [o['name'] for o in json.load(r).get('items', [])]


def test_sigkill_relaunch_and_eval_on_gcs(gcs_emulator, bucket):
  straight, killed = f'{bucket}/straight', f'{bucket}/killed'
  args = BASE + SLOW
  result = run_launch(args + [f'--workdir={straight}'])
  assert result.returncode == 0, result.stderr[-3000:]

  proc = start_launch(args + [f'--workdir={killed}'])
  wait_for(lambda: f'{killed[len(bucket) + 1:]}/checkpoints/10/'
           'commit_success.txt' in _objects(gcs_emulator, killed), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # The lock of the killed run is left behind: the relaunch on this host
  # takes it over.
  result = run_launch(args + [f'--workdir={killed}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint' in result.stderr

  (sa, da), (sb, db) = final_state(straight), final_state(killed)
  assert da == db and int(sa.step) == int(sb.step) == 60
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  names = _objects(gcs_emulator, killed)
  run = killed[len(bucket) + 1:]
  assert f'{run}/run.lock' not in names  # Released at the end.
  assert f'{run}/samples/step_0000060.png' in names
  assert any(n.startswith(f'{run}/tensorboard/events.') for n in names)
  from etils import epath  # pylint: disable=g-import-not-at-top
  steps = [json.loads(l)['step'] for l in
           (epath.Path(killed) / 'metrics.jsonl').read_text().splitlines()]
  assert steps == sorted(steps) and steps[-1] == 60  # Cut back on resume.

  result = run_launch(args + [f'--workdir={straight}', '--mode=eval'])
  assert result.returncode == 0, result.stderr[-3000:]
  saved = json.loads((epath.Path(straight) / 'eval_step_60.json').read_text())
  assert saved['step'] == 60
  # --mode=sample writes its .npz (writers.save_npz) to the bucket too.
  result = run_launch(args + [f'--workdir={straight}', '--mode=sample',
                              '--num_samples=20'])
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(io.BytesIO((epath.Path(straight) / 'samples_step_60.npz')
                          .read_bytes())) as sampled:
    assert sampled['samples'].shape == (20, 2) and int(sampled['step']) == 60
  assert not any(n.endswith('.tmp') for n in _objects(gcs_emulator, straight))


@pytest.mark.parametrize('bucket_name', ['no-such-bucket-x', 'denied'])
def test_bad_bucket_is_one_error_line(gcs_emulator, bucket_name):
  result = run_launch(BASE + [f'--workdir=gs://{bucket_name}/run'])
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert f'gs://{bucket_name}/run' in errors[0]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]


def test_lock_on_gcs(bucket):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from gan_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  run = f'{bucket}/run'
  lock = f'{run}/{workdir_lib.LOCK}'
  workdir_lib._create(lock, 'first')  # pylint: disable=protected-access
  with pytest.raises(FileExistsError):  # Exclusive, as O_EXCL locally.
    workdir_lib._create(lock, 'second')  # pylint: disable=protected-access
  assert epath.Path(lock).read_text() == 'first'
  epath.Path(lock).write_text(json.dumps(
      {'host': 'elsewhere', 'pid': 1, 'since': 'then'}))
  with pytest.raises(UserError, match='another host'):
    workdir_lib.lock(run)
  epath.Path(lock).unlink()
  workdir_lib.lock(run)
  assert json.loads(epath.Path(lock).read_text())['pid'] == os.getpid()
  workdir_lib.release(run)
  assert not epath.Path(lock).exists()


def test_npz_data_on_gcs(bucket, tiny):
  import io  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax import data  # pylint: disable=g-import-not-at-top
  from gan_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  images = np.random.RandomState(0).randint(0, 256, (16, 8, 8, 3), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, images=images)
  (epath.Path(bucket) / 'images.npz').write_bytes(buffer.getvalue())
  config = tiny()
  config.data.name = 'images'
  config.data.path = f'{bucket}/images.npz'
  batch = next(data.build(config, 16, 0, 1))
  assert np.asarray(batch).shape[1:] == (8, 8, 3)
  config.data.path = f'{bucket}/missing.npz'
  with pytest.raises(UserError, match='does not exist'):
    data.build(config, 16, 0, 1)


def _put_object(url, gs_path, data):
  """Uploads `data` to gs_path straight to the server (no gcsfs)."""
  name, _, key = gs_path[len('gs://'):].partition('/')
  query = urllib.parse.urlencode({'uploadType': 'media', 'name': key})
  urllib.request.urlopen(urllib.request.Request(
      f'{url}/upload/storage/v1/b/{name}/o?{query}', data=data, method='POST',
      headers={'Content-Type': 'application/octet-stream'})).read()


def _generation(url, gs_path):
  """The object's generation, asked of the server (no cache)."""
  name, _, key = gs_path[len('gs://'):].partition('/')
  key = urllib.parse.quote(key, safe='')
  with urllib.request.urlopen(f'{url}/storage/v1/b/{name}/o/{key}') as r:
    return json.load(r)['generation']


def test_lock_takeover_leaves_a_lock_replaced_after_the_read(
    gcs_emulator, bucket, monkeypatch):
  """Between reading a dead run's lock and deleting it, another run takes it
  over (deletes it, creates its own): the delete must not remove that one.
  The new lock here has the same text: only its generation tells them apart."""
  import fsspec  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  lock = f'{bucket}/run/{workdir_lib.LOCK}'
  text = json.dumps({'host': 'here', 'pid': 1, 'since': 'then'})
  epath.Path(lock).write_text(text)
  fs = fsspec.core.url_to_fs(lock)[0]  # The instance the lock code uses.
  request, replaced = fs._request, []  # pylint: disable=protected-access

  async def replace_after_reading(method, path, *args, **kwargs):
    out = await request(method, path, *args, **kwargs)
    where = urllib.parse.unquote(' '.join(map(str, (path, *args))))
    media = kwargs.get('alt') == 'media' or 'alt=media' in path
    if method == 'GET' and media and workdir_lib.LOCK in where and not replaced:
      _put_object(gcs_emulator, lock, text.encode())
      replaced.append(True)
    return out

  monkeypatch.setattr(fs, '_request', replace_after_reading)
  assert not workdir_lib._take_over(lock, text)  # pylint: disable=protected-access
  assert replaced
  assert epath.Path(lock).read_text() == text  # The new lock is kept.
  monkeypatch.undo()
  assert workdir_lib._take_over(lock, text)  # pylint: disable=protected-access
  assert not epath.Path(lock).exists()


def _write_pngs(root, shape, per_class=3):
  """`per_class` random PNGs of `shape` (H, W) or (H, W, 3) in each of root/a
  and root/b, and a file that is not an image; returns root."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for name in ('a', 'b'):
    (root / name).mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.randint(0, 256, shape, np.uint8)).save(
          root / name / f'{i}.png')
  (root / 'notes.txt').write_text('not an image')
  return root


def _upload(local, url):
  """Copies the local folder `local` to the gs:// folder `url`."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  for path in sorted(local.rglob('*')):
    if path.is_file():
      (epath.Path(url) / path.relative_to(local).as_posix()).write_bytes(
          path.read_bytes())


def test_image_folder_on_gcs_reads_as_the_local_folder(bucket, tmp_path, tiny):
  from gan_jax import data  # pylint: disable=g-import-not-at-top
  local = _write_pngs(tmp_path / 'faces', (10, 12, 3))  # Cropped, resized.
  _upload(local, f'{bucket}/faces')
  batches = []
  for path in (str(local), f'{bucket}/faces/'):
    config = tiny()
    config.data.name = 'images'
    config.data.path = path
    config.data.image_size = 8
    config.num_classes = 2  # Labels from the class subfolders.
    images, labels = next(data.build(config, 6, 0, 1))
    batches.append((np.asarray(images), np.asarray(labels)))
  (local_images, local_labels), (gcs_images, gcs_labels) = batches
  assert local_images.shape == (6, 8, 8, 3)
  assert sorted(local_labels) == [0, 0, 0, 1, 1, 1]
  np.testing.assert_array_equal(gcs_images, local_images)
  np.testing.assert_array_equal(gcs_labels, local_labels)


def test_gcs_folder_without_images_is_one_error_line(bucket, tmp_path, tiny):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax import data  # pylint: disable=g-import-not-at-top
  from gan_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  (epath.Path(bucket) / 'notes' / 'readme.txt').write_text('no images here')
  config = tiny()
  config.data.name = 'images'
  config.data.path = f'{bucket}/notes'
  with pytest.raises(UserError, match='no .png/.jpg/.jpeg files under') as e:
    data.build(config, 16, 0, 1)
  assert f'{bucket}/notes' in str(e.value) and '\n' not in str(e.value)
  missing = f'{bucket}/no-such-folder'
  result = run_launch(['--config=configs/own_images.py:size=28',
                       f'--config.data.path={missing}',
                       f'--workdir={tmp_path / "run"}'])
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, result.stderr[-3000:]
  assert f'data.path {missing} does not exist' in errors[0]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]


def test_inception_weights_on_gcs(bucket, tmp_path):
  """config.eval.inception_weights=gs://...: loaded, hashed as the same file
  on a local disk is, kept while the object is not written again and loaded
  again when it is."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from gan_jax.metrics import image_metrics  # pylint: disable=g-import-not-at-top
  from gan_jax.metrics import inception  # pylint: disable=g-import-not-at-top
  shapes = inception._expected_shapes()  # pylint: disable=protected-access
  local = tmp_path / 'weights.npz'  # Zeros: 100 KB compressed, not 95 MB.
  np.savez_compressed(local, **{k: np.zeros(s, np.float32)
                                for k, s in shapes.items()})
  url = f'{bucket}/weights/fid_inception.npz'
  epath.Path(url).write_bytes(local.read_bytes())
  eval_config = {'inception_weights': url}
  extractor = image_metrics.get_extractor(eval_config)
  assert extractor.weights_path == url
  assert extractor.weights_hash == inception.weights_hash(str(local))
  assert image_metrics.get_extractor(eval_config) is extractor
  # The object written again (re-converted weights): loaded and hashed anew.
  first_hash = extractor.weights_hash
  np.savez_compressed(local, **{k: np.full(s, 0.5, np.float32)
                                for k, s in shapes.items()})
  epath.Path(url).write_bytes(local.read_bytes())
  rewritten = image_metrics.get_extractor(eval_config)
  assert rewritten is not extractor
  assert rewritten.weights_hash == inception.weights_hash(str(local))
  assert rewritten.weights_hash != first_hash
  missing = f'{bucket}/weights/missing.npz'
  with pytest.raises(UserError, match=f'not found at {missing}'):
    image_metrics.get_extractor({'inception_weights': missing})


def test_reference_cache_on_gcs_is_read_back_not_recomputed(gcs_emulator,
                                                           bucket):
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax.metrics import reference  # pylint: disable=g-import-not-at-top
  images = np.random.RandomState(0).uniform(-1, 1, (40, 4, 4, 1)).astype(
      np.float32)
  calls = []

  def batches_fn(split):
    calls.append(split)
    return iter([images[:20], images[20:]])

  def extract(x):
    return {'pool': x.reshape(len(x), -1)}

  def stats():
    return reference.reference_stats(
        extract, batches_fn, dataset=f'images:{bucket}/faces', split='train',
        resolution=(4, 4), num_images=40, weights_hash='ab' * 32,
        cache_dir=f'{bucket}/cache/')

  first = stats()
  assert calls == ['train'] and first.path.startswith(f'{bucket}/cache/')
  # One object: no temporary one next to it.
  assert _objects(gcs_emulator, f'{bucket}/cache') == [
      first.path[len(bucket) + 1:]]
  again = stats()
  assert calls == ['train']  # Read back, not recomputed.
  for name in ('mu', 'sigma', 'features'):
    np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
  # A cut-off file (what a writer killed mid-write leaves, if it writes in
  # place) reads as missing: computed and written again.
  saved = epath.Path(first.path).read_bytes()
  epath.Path(first.path).write_bytes(saved[:len(saved) // 2])
  third = stats()
  assert calls == ['train', 'train']
  np.testing.assert_array_equal(third.features, first.features)
  assert epath.Path(first.path).read_bytes() == saved


def test_classifier_trained_to_gcs_is_read_back(gcs_emulator, bucket,
                                                tmp_path, monkeypatch):
  """tools/train_classifier.py with a gs:// WORKDIR writes the checkpoint to
  the bucket (not to a local folder named 'gs:'); it loads as written, and a
  later save there replaces it."""
  from gan_jax.metrics import classifier  # pylint: disable=g-import-not-at-top
  from tests.test_classifier_metrics import _config  # pylint: disable=g-import-not-at-top
  from tests.test_classifier_metrics import _squares  # pylint: disable=g-import-not-at-top
  from tools import train_classifier  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  images, labels = _squares(96, seed=0)
  npz = tmp_path / 'squares.npz'
  np.savez(npz, images=((images + 1) * 127.5).round().astype(np.uint8),
           labels=labels)
  config = _config(npz)
  config.num_epochs = 1
  record = train_classifier.train(config, f'{bucket}/clf/')
  assert not os.path.exists(tmp_path / 'gs:')
  assert sorted(o for o in _objects(gcs_emulator, f'{bucket}/clf')
                if not o.startswith('clf/params/')) == ['clf/classifier.json']
  spec, params, content = classifier.load(f'{bucket}/clf')
  assert content['heldout_accuracy'] == record['heldout_accuracy']
  assert spec.image_shape == (28, 28, 1) and spec.num_classes == 4
  untrained = jax.tree.map(np.asarray, spec.init(0))
  classifier.save(f'{bucket}/clf', spec, untrained)
  _, again, content = classifier.load(f'{bucket}/clf')
  assert 'heldout_accuracy' not in content
  jax.tree.map(np.testing.assert_array_equal, again, untrained)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(params), jax.tree.leaves(untrained)))


def test_classifier_weights_and_reference_cache_on_gcs(gcs_emulator, bucket,
                                                       tmp_path):
  """A run on a gs:// image folder whose clf metrics take the classifier
  from gs:// and cache the reference statistics there; --mode=eval reads the
  cache back (the object is not written again) and gets the same number."""
  from gan_jax.metrics import classifier  # pylint: disable=g-import-not-at-top
  spec = classifier.Spec(image_shape=(28, 28, 1), num_classes=4,
                         widths=(8, 16), features=32)
  classifier.save(str(tmp_path / 'clf'), spec, spec.init(0))  # Untrained.
  _upload(tmp_path / 'clf', f'{bucket}/clf')
  _upload(_write_pngs(tmp_path / 'digits', (28, 28), per_class=8),
          f'{bucket}/digits')
  workdir = tmp_path / 'run'
  args = [
      *tiny_digits_run(f'{bucket}/digits', workdir),
      '--config.eval.metrics=fid_clf', '--config.eval.num_samples=32',
      '--config.eval.num_reference=32', '--config.eval.sample_batch_size=16',
      f'--config.eval.cache_dir={bucket}/cache',
      f'--config.eval.classifier_checkpoint={bucket}/clf']
  result = run_launch(args)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'metrics.jsonl') as f:
    evals = [row for row in map(json.loads, f) if 'fid_clf' in row]
  assert len(evals) == 1 and np.isfinite(evals[0]['fid_clf'])
  cached = _objects(gcs_emulator, f'{bucket}/cache')
  assert len(cached) == 1 and cached[0].endswith('.npz')
  generation = _generation(gcs_emulator, f'{bucket}/{cached[0]}')

  result = run_launch(args + ['--mode=eval'])
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'eval_step_2.json') as f:
    evaluated = json.load(f)
  assert evaluated['fid_clf'] == evals[0]['fid_clf']
  # The copy on gs:// hashes as the local checkpoint does.
  assert evaluated['feature_networks'] == {'classifier': {
      'path': f'{bucket}/clf',
      'sha256': classifier.checkpoint_hash(str(tmp_path / 'clf'))}}
  assert evals[0]['feature_networks'] == evaluated['feature_networks']
  assert _objects(gcs_emulator, f'{bucket}/cache') == cached
  assert _generation(gcs_emulator, f'{bucket}/{cached[0]}') == generation


def test_inception_weights_converted_to_gcs(gcs_emulator, bucket, tmp_path,
                                            monkeypatch):
  """tools/convert_inception_weights.py with a gs:// OUT.npz writes the object
  (not a local folder named 'gs:', no .tmp left), the same bytes as a local
  conversion, and it loads as config.eval.inception_weights."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from gan_jax.metrics import inception  # pylint: disable=g-import-not-at-top
  from tests.test_inception import _load_tool  # pylint: disable=g-import-not-at-top
  from tests.test_inception import _random_fid_state_dict  # pylint: disable=g-import-not-at-top
  from tests.test_inception import torch  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  pth, local = tmp_path / 'random.pth', tmp_path / 'local.npz'
  torch.save(_random_fid_state_dict(), pth)
  tool = _load_tool()
  url = f'{bucket}/weights/fid.npz'
  assert tool.main(['convert', str(pth), url]) == 0
  assert tool.main(['convert', str(pth), str(local)]) == 0
  assert not os.path.exists(tmp_path / 'gs:')
  assert _objects(gcs_emulator, f'{bucket}/weights') == ['weights/fid.npz']
  assert epath.Path(url).read_bytes() == local.read_bytes()
  assert inception.FeatureExtractor(url, batch_size=2).weights_hash == (
      inception.weights_hash(str(local)))
