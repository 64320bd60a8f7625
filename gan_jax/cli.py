"""The command lines of launch.py, tools/ and benchmarks/: a mistake in the
flags or the config (an unknown field, a bad value, a config file that cannot
be loaded) ends in one `error:` line and exit status 2, not absl's traceback.

    app.run(main, flags_parser=cli.parse_flags)   # then, in main:
    config = cli.config(_CONFIG)
"""
import importlib.util
import os
import sys

from absl import flags
from absl import logging
import ml_collections

from gan_jax.errors import UserError


def fail(message):
  """The one error line, and exit 2.

  os._exit: after a failed save or restore, orbax's and tensorstore's threads
  would hold the interpreter's exit up for minutes, or print tracebacks from
  their callbacks as it shuts down; the error is out, so leave now.
  """
  print(f'error: {message}', file=sys.stderr, flush=True)
  logging.flush()
  sys.stdout.flush()
  os._exit(2)  # pylint: disable=protected-access


def flag_value(argv, name):
  """The last value of `--name=V` or `--name V` in argv, or None."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(f'--{name}='):
      value = a.split('=', 1)[1]
    elif a == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_source(argv):
  """The `--config` value (path[:arg]) in argv, or None."""
  return flag_value(argv, 'config')


def unknown_field(argv):
  """Names the first --config.a.b=... override that the config lacks."""
  source = config_source(argv)
  if source is None:
    return None
  path, _, arg = source.partition(':')
  spec = importlib.util.spec_from_file_location('_user_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    return _not_a_config_dict(config)
  for a in argv:
    if not a.startswith('--config.'):
      continue
    node = config
    field = a[len('--config.'):].split('=', 1)[0]
    for part in field.split('.'):
      if not hasattr(node, 'keys') or part not in node:
        have = (', '.join(sorted(node.keys())) if hasattr(node, 'keys')
                else 'none')
        return (f'unknown config field {field!r} in {a}; the fields at that '
                f'level are: {have}')
      node = node[part]
  return None


def parse_flags(argv):
  """absl's parser, with flag and config errors in one line."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    fail(flag_error(e, argv))


def flag_error(e, argv):
  """The one line that parse_flags prints for the exception `e` of parsing
  `argv` (tests/test_fuzz.py checks it on every rejected case)."""
  if isinstance(e, UserError):  # gan_jax/run_config.py: no run's config.
    return str(e)
  if isinstance(e, (AttributeError, KeyError)):
    try:
      message = unknown_field(argv)
    except Exception:  # pylint: disable=broad-except
      message = None
    if message is not None:
      return message
  # A config file that raised: keep its last line ("ValueError: ...").
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  prefix = 'ValueError: '  # configs/default.py's own message, as is.
  if not lines:  # E.g. a bare `assert` in a config file.
    return (f'bad command line: {type(e).__name__} with no message '
            f'(--config={config_source(argv)})')
  if lines[-1].startswith(f'{prefix}config argument '):
    return f'{lines[-1][len(prefix):]} (--config={config_source(argv)})'
  return _not_a_config(argv, lines) or (
      f'bad command line: {lines[0]}' +
      (f' ... {lines[-1]}' if len(lines) > 1 else ''))


def _not_a_config(argv, lines):
  """The error for a --config file that is missing or not a config
  (ml_collections loads it as module `config_config`), or None."""
  source = config_source(argv)
  if source is None or 'config_config' not in ' '.join(lines):
    return None
  if 'No such file' in lines[-1]:
    return f'--config={source}: no such file; pass one of configs/*.py'
  why = ('it defines no get_config()' if 'get_config' in lines[0] else
         'it defines command-line flags: a script?' if 'defined twice' in
         lines[0] else None)
  return why and (f'--config={source} is not a config file ({why}); pass one '
                  'of configs/*.py, or a file with get_config() returning an '
                  'ml_collections.ConfigDict')


def check_out(path, flag='--out'):
  """Exits with one `error:` line unless the file `path` (a script's output)
  can be written (gan_jax/workdir.py check_out_file): checked before the
  work. SystemExit, not fail(): scripts also call their main() in-process."""
  # Imported here: workdir imports jax, which launch.py (importing this
  # module first) loads only after its flags are parsed.
  from gan_jax import workdir  # pylint: disable=g-import-not-at-top
  try:
    workdir.check_out_file(path, flag)
  except UserError as e:
    raise SystemExit(f'error: {e}') from None


def config(config_flag):
  """The config of a DEFINE_config_file flag; a file that cannot be loaded
  (missing, unreadable) is one line. Its errors surface here, on first use."""
  try:
    value = config_flag.value
    if hasattr(value, 'keys'):
      value.keys()  # A file that failed to load raises OSError here.
  except OSError as e:
    fail(f'cannot load the config: {" ".join(str(e).split())[:300]}')
  if not isinstance(value, ml_collections.ConfigDict):
    fail(_not_a_config_dict(value))
  return value


def _not_a_config_dict(value):
  return (f"the --config file's get_config() returned {type(value).__name__} "
          f'{str(value)[:40]!r}, not an ml_collections.ConfigDict')
