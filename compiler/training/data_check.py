"""Data that cannot index the model: checked once, before the first step.

A data field that reaches a `take` (an `Embedding`'s lookup, a gather) as its index
must lie in [0, rows) of the table it indexes. Out of range, NumPy raises a bare
IndexError deep in generated code, torch a device-side assert, and onnxruntime's
Gather an error naming no input; here it is one located error at the train block's
data line, naming the field, its range and the table. Negative indices are refused
too: NumPy would wrap them, torch's embedding would not.
"""
from __future__ import annotations

import numpy as np

from dsl.errors import SpecError

# ops that pass an index tensor's values through unchanged (only its layout changes)
_LAYOUT = {"reshape", "expand_dims", "squeeze", "transpose", "broadcast_to", "slice",
           "getitem", "cast", "stop_gradient", "concat"}


def _index_source(g, n):
    """The input feeding node n's values through layout-only ops, or None."""
    seen = 0
    while seen < 64:
        nd = g.node(n)
        if nd.op == "input":
            return nd.attrs.get("name")
        if nd.op not in _LAYOUT or not nd.args:
            return None
        if nd.op == "cast" and not str(nd.type.dtype).startswith("i"):
            return None
        n = nd.args[0]
        seen += 1
    return None


def index_limits(g) -> dict:
    """input name -> (rows of the smallest table it indexes, the take node's span)."""
    out = {}
    for n in g.topo_order():
        nd = g.node(n)
        if nd.op != "take":
            continue
        table, idx = nd.args
        t = g.type(table)
        axis = nd.attrs.get("axis", 0) % max(t.rank, 1)
        rows = t.shape[axis] if t.rank else None
        if not isinstance(rows, int):
            continue
        name = _index_source(g, idx)
        if name is None:
            continue
        if name not in out or rows < out[name][0]:
            out[name] = (rows, nd.span)
    return out


def check_index_ranges(g, parts, span) -> None:
    limits = index_limits(g)
    if not limits:
        return
    for part in parts:
        for name, (rows, where) in limits.items():
            v = part.fields.get(name)
            if v is None or v.size == 0 or v.dtype.kind not in "iu":
                continue
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi >= rows:
                loc = f" (`take` at {where.path}:{where.line})" if where is not None else ""
                raise SpecError(
                    f"data field `{name}` holds values in [{lo}, {hi}], but the model uses it "
                    f"to index a table of {rows} rows{loc}", span,
                    hint=f"every `{name}` must be in [0, {rows}): raise the vocabulary size "
                         f"(e.g. an Embedding's `vocab`) or re-map the data")
