"""Allocator settings for training loops: no steady-state page faulting.

glibc's malloc hands every block of 128 KiB or more (growing to 32 MiB with its
dynamic threshold) back to the OS with munmap / a heap trim when it is freed, and
the next step's temporaries of the same size are faulted in again page by page: a
transformer train step took ~2,000 minor page faults, its time going to the kernel
zeroing pages. `tune_allocator` raises the trim and mmap thresholds (`mallopt`), so
freed memory is kept for reuse; the process then holds the peak of one step.

Override with the environment variable ``DLC_MALLOC``: ``off`` leaves glibc's
defaults, ``trim=BYTES,mmap=BYTES`` sets the two thresholds. glibc's own
``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_``, when set, are respected
(they are read at process start and this does not touch them). Not glibc (macOS,
musl): nothing is done.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_TRIM = 1 << 30   # keep up to 1 GiB of freed heap
DEFAULT_MMAP = 32 << 20  # blocks below 32 MiB (glibc's maximum) come from the heap, reused

_applied: dict | None = None


def settings(env=None) -> dict | None:
    """The thresholds to set, per ``DLC_MALLOC`` (None: leave the allocator alone)."""
    env = os.environ if env is None else env
    spec = env.get("DLC_MALLOC", "").strip().lower()
    if spec in ("off", "0", "no", "false"):
        return None
    out = {"trim": DEFAULT_TRIM, "mmap": DEFAULT_MMAP}
    if "MALLOC_TRIM_THRESHOLD_" in env:
        out.pop("trim")
    if "MALLOC_MMAP_THRESHOLD_" in env:
        out.pop("mmap")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, val = part.partition("=")
        if not sep or key not in ("trim", "mmap") or not val.isdigit():
            raise ValueError(f"DLC_MALLOC: expected off or trim=BYTES,mmap=BYTES, got {part!r}")
        out[key] = int(val)
    return out


def tune_allocator(env=None) -> dict | None:
    """Apply `settings` once per process; returns what was set (None: nothing)."""
    global _applied
    if _applied is not None:
        return _applied
    want = settings(env)
    if not want:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = {}
    # mallopt takes an int: thresholds are capped at 2 GiB - 1
    if "mmap" in want and mallopt(M_MMAP_THRESHOLD, min(want["mmap"], 2**31 - 1)):
        done["mmap"] = want["mmap"]
    if "trim" in want and mallopt(M_TRIM_THRESHOLD, min(want["trim"], 2**31 - 1)):
        done["trim"] = want["trim"]
    _applied = done
    return done
