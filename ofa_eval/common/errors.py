"""The one exception type that the CLI turns into a one-line error and exit code 2."""


class OfaError(Exception):
    """A user-facing problem: bad input, a missing file, a store in the wrong state."""
