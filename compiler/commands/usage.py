"""Bad usage (a missing file, a bad flag, a device that is not there): exit code 2.

Its own room so that every command can raise it without importing the dispatcher."""

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage rather than a bad spec; the CLI prints the message and exits 2."""
