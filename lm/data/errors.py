"""The one exception type of the data package."""


class DataError(ValueError):
  """A data problem the user can fix: a missing file, an unprepared dataset, a vocab mismatch.

  The message is one line that names the config field or path and says what would fix it.
  """
