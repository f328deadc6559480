"""The one exception type for mistakes a user can fix (bad files, bad flags, missing data)."""


class TunerError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with code 2."""
