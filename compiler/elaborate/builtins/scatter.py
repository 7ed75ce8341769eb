"""Builtins over index lists: `scatter_add` and `segment_sum` (graph message passing).

Both wrap the `scatter_add` primitive (shape rule, VJP = `take`, NumPy `np.add.at`,
torch `index_add`, ONNX `ScatterElements(reduction='add')`): `take` gathers a row per
edge, `segment_sum` adds the messages of the edges back into their target rows.
"""
from __future__ import annotations

from compiler.core.types import TypeMismatch, norm_axis
from compiler.elaborate.builtins.base import _bind, _dims, _int, _tensor, builtin
from dsl.errors import ShapeError


def _axis(t, axis, span):
    try:
        return norm_axis(_int(axis, span, "axis"), t.type.rank)
    except TypeMismatch as e:
        raise ShapeError(str(e), span) from None


def _check_index(idx, span):
    if idx.type.dtype not in ("i64", "i32"):
        raise ShapeError(f"the index must be an integer tensor, found {idx.type}", span)


@builtin()
def scatter_add(ev, args, kwargs, span):
    """scatter_add(like, idx, upd, axis=0): zeros shaped like `like`, with
    upd[.., j.., ..] added at position idx[j..] along `axis` (repeated indices add up)"""
    b = _bind("scatter_add", args, kwargs, span, ["like", "idx", "upd", "axis"], {"axis": 0})
    like = _tensor(ev, b["like"], span, "like")
    idx = _tensor(ev, b["idx"], span, "idx")
    upd = _tensor(ev, b["upd"], span, "upd")
    _check_index(idx, span)
    return ev.add("scatter_add", [like, idx, upd], span, axis=_axis(like, b["axis"], span))


@builtin()
def segment_sum(ev, args, kwargs, span):
    """segment_sum(data, ids, segments, axis=0): out[s] = sum of data[j] over the j with
    ids[j] = s, for s < segments (a dim or an int); the other axes are kept"""
    b = _bind("segment_sum", args, kwargs, span, ["data", "ids", "segments", "axis"], {"axis": 0})
    data = _tensor(ev, b["data"], span, "data")
    ids = _tensor(ev, b["ids"], span, "ids")
    _check_index(ids, span)
    (segments,) = _dims(b["segments"], span, "segments")
    a = _axis(data, b["axis"], span)
    if ids.type.rank != 1:
        raise ShapeError(f"segment_sum needs 1-D ids, found {ids.type}", span)
    shape = tuple(data.type.shape)
    if shape[a] != ids.type.shape[0]:
        raise ShapeError(f"segment_sum: data has {shape[a]} entries along axis {a}, ids has "
                         f"{ids.type.shape[0]}", span)
    # `like` only carries the output shape (a static argument: it is never read)
    zero = ev.add("const", [], span, value=0.0, dtype=data.type.dtype, shape=())
    like = ev.add("broadcast_to", [zero], span, shape=shape[:a] + (segments,) + shape[a + 1:])
    return ev.add("scatter_add", [like, ids, data], span, axis=a)
