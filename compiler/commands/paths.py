"""Checks on the paths a command reads and writes: a bad one is a usage error (exit 2)
with a plain message, never a traceback or a hang (a FIFO given as the spec would
block the read forever)."""
from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from compiler.commands.usage import UsageError


def _stat(path: str, flag: str):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:  # ENAMETOOLONG, ENOTDIR (a path under a file), ELOOP, EACCES
        raise UsageError(f"{flag} {_short(path)}: {e.strerror}") from None


def _short(path: str) -> str:
    return repr(path) if len(path) <= 120 else repr(path[:60] + "..." + path[-40:]) + f" ({len(path)} characters)"


def check_spec_path(path: str) -> None:
    """The spec must be a regular file when it exists (a missing one is the loader's error)."""
    if path == "":
        raise UsageError("the spec path is empty")
    st = _stat(path, "spec")
    # a directory is the loader's own error (exit 1); a FIFO or a device would block
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise UsageError(f"spec {_short(path)} is not a regular file (a FIFO, a device or a socket)")


def check_output_file(path: str, flag: str = "-o") -> None:
    """An output file: not empty, not a directory, in a directory that exists."""
    if path == "":
        raise UsageError(f"{flag}: the output path is empty")
    st = _stat(path, flag)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{flag} {_short(path)} is a directory")
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        # a FIFO would block the write until someone reads it
        raise UsageError(f"{flag} {_short(path)} is not a regular file (a FIFO or a socket)")
    parent = os.path.dirname(os.path.abspath(path)) or "."
    pst = _stat(parent, flag)
    if pst is None:
        raise UsageError(f"{flag} {_short(path)}: the directory {_short(parent)} does not exist")
    if not stat.S_ISDIR(pst.st_mode):
        raise UsageError(f"{flag} {_short(path)}: {_short(parent)} is not a directory")


def check_run_dir(path: str | None, flag: str = "--out") -> None:
    """A run directory: an existing directory, or one that can be made."""
    if path is None:
        return
    if path == "":
        raise UsageError(f"{flag}: the run directory path is empty")
    st = _stat(path, flag)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{flag} {_short(path)} exists and is not a directory")
    if st is None:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{flag} {_short(path)}: cannot make the directory: {e.strerror}") from None


@contextmanager
def writing(path: str, flag: str = "-o"):
    """Turn a failed write (a full device, a read-only file system) into a usage error."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                       errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EDQUOT):
            raise UsageError(f"{flag} {_short(path)}: cannot write: {e.strerror}") from None
        raise
