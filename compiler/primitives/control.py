"""Structural primitives: stop_gradient, tuple projection, and scan (recurrence)."""
from __future__ import annotations

from compiler.primitives.table import defprim
from compiler.core.types import TypeMismatch
from compiler.primitives._rules import same

stop_gradient = defprim("stop_gradient", "x, with a zero derivative", 1, same)


@stop_gradient.vjp
def _(g, n, ct):
    return [None]


stop_gradient.numpy("{0}")
stop_gradient.torch("{0}.detach()")
stop_gradient.onnx(lambda o, n, x: o.op("Identity", x))


def _tuple_get_type(ts, attrs):
    (t,) = ts
    if not isinstance(t, tuple):
        raise TypeMismatch("tuple_get expects a multi-result node")
    return t[attrs["index"]]


# tuple_get: result `index` of a multi-result node (scan). Its VJP is handled by
# autodiff directly: cotangents of projections are gathered per result.
tuple_get = defprim("tuple_get", "the index-th result of a multi-result node", 1, _tuple_get_type)
tuple_get.numpy("{0}[{index}]")
tuple_get.torch("{0}[{index}]")
tuple_get.onnx(lambda o, n, x: x[n.attrs["index"]])


def _scan_type(ts, attrs):
    body, nc, nx_ = attrs["body"], attrs["n_carry"], attrs["n_x"]
    axis, length = attrs["axis"], attrs["length"]
    results = body.meta["results"]
    if len(body.inputs) != len(ts):
        raise TypeMismatch(f"scan body takes {len(body.inputs)} values, got {len(ts)}")
    for i, (outer, inner) in enumerate(zip(ts[:nc], results[:nc])):
        if body.type(inner) != outer:
            raise TypeMismatch(f"scan carry {i} enters as {outer} but the body returns "
                               f"{body.type(inner)}")
    for x in ts[nc:nc + nx_]:
        if x.rank <= axis or x.shape[axis] != length:
            raise TypeMismatch(f"scanned input {x} has no axis {axis} of length {length}")
    ys = []
    for y in results[nc:]:
        t = body.type(y)
        ys.append(t.with_shape(t.shape[:axis] + (length,) + t.shape[axis:]))
    return tuple(ts[:nc]) + tuple(ys)


# scan: a loop over `axis` threading carries; lowered per backend (it nests a graph:
# Python loop over a generated body function; ONNX Loop), VJP in compiler/transform/autodiff.py
# (reverse scan over the stored carries). See docs/internals.md "scan".
scan = defprim("scan", "(c, x_t) -> (c', y_t) folded over t, ys stacked", None, _scan_type)
