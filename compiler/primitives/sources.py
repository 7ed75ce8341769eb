"""Source nodes: values that come from outside the graph, and constants.

Sources have no VJP rule of their own: autodiff stops at them (a gradient *with
respect to* an input or parameter is read off at the source).
"""
from __future__ import annotations

import numpy as np

from compiler.primitives.table import defprim
from compiler.core.types import TensorType, TypeMismatch
from compiler.primitives._rules import attr_type

_SOURCE = "a graph source"

# input: a named value fed by the caller (data, labels, dims from its shape)
inp = defprim("input", "a named tensor fed by the caller", 0, attr_type, nondiff=_SOURCE)
# param: a trainable tensor; attrs: name, dtype, shape, init (tuple, see compiler.init)
param = defprim("param", "a named trainable tensor", 0, attr_type, nondiff=_SOURCE)
# state: a non-trainable tensor carried between steps (batch-norm running stats)
state = defprim("state", "a named non-trainable tensor carried across steps", 0, attr_type,
                nondiff=_SOURCE)
# noise: drawn fresh every step on the host from the run's seeded generator and
# fed like an input, so every backend sees the same numbers. attrs: dist, shape.
noise = defprim("noise", "seeded host noise, attrs dist in {normal, uniform}", 0, attr_type,
                nondiff=_SOURCE)

const = defprim("const", "a tensor of static shape filled with one scalar", 0, attr_type,
                nondiff="a constant")
const.numpy(lambda cg, n: cg.full(n.attrs["shape"], n.attrs["value"], n.attrs["dtype"]))
const.torch(lambda cg, n: cg.full(n.attrs["shape"], n.attrs["value"], n.attrs["dtype"]))
const.onnx(lambda o, n: o.const(np.full(n.attrs["shape"], n.attrs["value"],
                                        dtype=o.np_dtype(n.attrs["dtype"]))))


def _arange_type(ts, attrs) -> TensorType:
    return TensorType(attrs.get("dtype", "i64"), (attrs["length"],))


# arange: 0, 1, ..., length-1 (length may be a symbolic dim, e.g. T)
arange = defprim("arange", "[0, 1, ..., length-1]", 0, _arange_type, nondiff="integer-valued")
arange.numpy(lambda cg, n: f"np.arange({cg.dim(n.attrs['length'])}, dtype={cg.dtype(n.attrs.get('dtype', 'i64'))})")
arange.torch(lambda cg, n: f"torch.arange({cg.dim(n.attrs['length'])}, dtype={cg.dtype(n.attrs.get('dtype', 'i64'))}, device=_dev)")
arange.onnx(lambda o, n: o.op("Range", o.const(np.array(0, dtype=o.np_dtype(n.attrs.get('dtype', 'i64')))),
                              o.cast(o.dim_scalar(n.attrs["length"]), n.attrs.get("dtype", "i64")),
                              o.const(np.array(1, dtype=o.np_dtype(n.attrs.get('dtype', 'i64'))))))


def check_source_name(name: str) -> None:
    if not name:
        raise TypeMismatch("sources need a name")
