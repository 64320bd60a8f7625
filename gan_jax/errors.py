"""The one exception type that `launch.py` turns into a one-line message."""


class UserError(Exception):
  """A problem the user can fix: bad config, missing data, unwritable workdir.

  `launch.py` prints `error: <message>` and exits with status 2, without a
  traceback, so the message must say what is wrong and what to do about it.
  """
