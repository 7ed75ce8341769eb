"""Static resource limits, checked while a spec is built (before anything is allocated).

A spec that asks for more than a limit gets a located error instead of a MemoryError,
an OverflowError or a hang. Each limit is read from an environment variable when it is
set (a plain integer, e.g. ``DLC_MAX_TENSOR_ELEMENTS=10000000000``); docs/guarantees.md
lists them with their defaults.
"""
from __future__ import annotations

import os

DEFAULTS = {
    # elements of one tensor whose shape is static (2^31: a 8 GiB f32 tensor)
    "DLC_MAX_TENSOR_ELEMENTS": 2 ** 31,
    # bytes of all parameters and states of one model, at 4 bytes an element (16 GiB)
    "DLC_MAX_PARAM_BYTES": 16 * 2 ** 30,
    # nodes of one graph (forward, gradient or step; each scan body counts separately)
    "DLC_MAX_GRAPH_NODES": 2_000_000,
    # rows of a data set (synthetic sizes, files)
    "DLC_MAX_DATASET_ROWS": 100_000_000,
    # the count of `repeat(n, Layer(...))`
    "DLC_MAX_REPEAT": 10_000,
}


def limit(name: str) -> int:
    """The limit `name` (a key of DEFAULTS), from the environment or its default."""
    raw = os.environ.get(name)
    if raw is None:
        return DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        return DEFAULTS[name]
    return value if value > 0 else DEFAULTS[name]


def describe(name: str) -> str:
    return f"{limit(name):,} (set {name} to change it)"
