"""Which inputs index a table, and how many rows it has: for checking fed values.

An integer input that reaches a `take` (an `Embedding`'s lookup, a gather) through
layout-only ops must lie in [0, rows) of the table. Out of range, NumPy raises a bare
IndexError deep in generated code, torch a device-side assert, and onnxruntime's
Gather an error naming no input; negative values NumPy would silently wrap. The API's
feed check and the train block's data check both read the limits from here.
"""
from __future__ import annotations

import numpy as np

# ops that pass an index tensor's values through unchanged (only its layout changes)
_LAYOUT = {"reshape", "expand_dims", "squeeze", "transpose", "broadcast_to", "slice",
           "getitem", "cast", "stop_gradient", "concat"}


def _index_source(g, n):
    """The input feeding node n's values through layout-only ops, or None."""
    for _ in range(64):
        nd = g.node(n)
        if nd.op == "input":
            return nd.attrs.get("name")
        if nd.op not in _LAYOUT or not nd.args:
            return None
        if nd.op == "cast" and not str(nd.type.dtype).startswith("i"):
            return None
        n = nd.args[0]
    return None


def index_limits(g) -> dict:
    """input name -> (rows of the smallest table it indexes, the take node's span);
    kept in `g.meta` until nodes are added (ids only grow, so the next id dates it)."""
    cached = g.meta.get("index_limits")
    if cached is not None and cached[0] == g._next:
        return cached[1]
    out = {}
    for n in g.topo_order():
        nd = g.node(n)
        if nd.op != "take":
            continue
        table, idx = nd.args
        t = g.type(table)
        axis = nd.attrs.get("axis", 0) % max(t.rank, 1)
        rows = t.shape[axis] if t.rank else None
        name = _index_source(g, idx) if isinstance(rows, int) else None
        if name is not None and (name not in out or rows < out[name][0]):
            out[name] = (rows, nd.span)
    g.meta["index_limits"] = (g._next, out)
    return out


def out_of_range(value, rows: int):
    """(min, max) of an integer array with an entry outside [0, rows), else None."""
    v = np.asarray(value)
    if v.size == 0 or v.dtype.kind not in "iu":
        return None
    lo, hi = int(v.min()), int(v.max())
    return (lo, hi) if lo < 0 or hi >= rows else None
