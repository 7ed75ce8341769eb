"""Test cases for compiler/primitives/reduce.py (schema: tests/opcases/__init__.py).

Each reduction is checked over axis None / int / negative int / tuple, with and
without keepdims. Inputs of max/min/argmax/argmin have well-separated distinct
values unless a case is about ties.
"""
from __future__ import annotations

import numpy as np
import torch

from . import Case


def normal(*shape, scale=1.0, shift=0.0):
    return lambda rng: shift + scale * rng.standard_normal(shape)


def distinct(*shape):
    """A shuffled grid 0.5 apart plus small noise: no ties, gaps far above eps."""
    n = int(np.prod(shape, dtype=np.int64))
    return lambda rng: ((rng.permutation(n) - n / 2) * 0.5
                        + rng.uniform(-0.1, 0.1, n)).reshape(shape)


def ints(lo, hi, *shape, dtype=np.int64):
    return lambda rng: rng.integers(lo, hi, shape).astype(dtype)


def _dims(x, axis):
    if axis is None:
        return tuple(range(x.dim()))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _ref_reduce(fn, axis, keepdims):
    """A torch reduction taking `dim` (tuple) and `keepdim`; no axes = identity."""
    def ref(x):
        dims = _dims(x, axis)
        return fn(x, dim=dims, keepdim=keepdims) if dims else x
    return ref


def _amax(x, dim, keepdim):
    return torch.amax(x, dim=dim, keepdim=keepdim)


def _amin(x, dim, keepdim):
    return torch.amin(x, dim=dim, keepdim=keepdim)


# (shape, axis, keepdims): every axis form, both keepdims
AXES = [
    ((3, 4), None, False),
    ((3, 4), None, True),
    ((3, 4), 1, False),
    ((3, 4), -2, True),
    ((2, 3, 4), (0, 2), False),
    ((2, 3, 4), (-1, 0), True),
    ((5,), 0, False),
    ((), None, False),
    ((2, 3), (), False),
]


def _tag(shape, axis, kd):
    s = "x".join(map(str, shape)) or "scalar"
    if axis is None:
        a = "all"
    else:
        a = str(axis) if isinstance(axis, int) else "_".join(map(str, axis)) or "none"
    return f"{s}-ax{a}" + ("-kd" if kd else "")


def reduce_cases(op, fn, gen, second_order=True, axes=AXES, **kw):
    return [Case(op, [gen(*shape)], attrs={"axis": axis, "keepdims": kd},
                 ref=_ref_reduce(fn, axis, kd), name=_tag(shape, axis, kd),
                 second_order=second_order, **kw)
            for shape, axis, kd in axes]


def _argref(fn, axis, keepdims):
    return lambda x: fn(x, dim=axis, keepdim=keepdims)


def _softmax_ref(axis):
    return lambda x: torch.softmax(x, dim=axis)


def _log_softmax_ref(axis):
    return lambda x: torch.log_softmax(x, dim=axis)


def _cumsum_ref(axis, reverse):
    if reverse:
        return lambda x: torch.flip(torch.cumsum(torch.flip(x, (axis,)), dim=axis), (axis,))
    return lambda x: torch.cumsum(x, dim=axis)


_NO_GRAD = {"grad": "integer tensor", "second_order": "integer tensor"}

CASES: list[Case] = [
    # ---- sum mean max min ---------------------------------------------------
    *reduce_cases("sum", torch.sum, normal),
    Case("sum", [ints(-5, 5, 3, 4)], attrs={"axis": 0, "keepdims": False},
         ref=_ref_reduce(torch.sum, 0, False), name="int", skip=_NO_GRAD),
    Case("sum", [ints(-5, 5, 3, 4, dtype=np.int32)], attrs={"axis": None, "keepdims": False},
         ref=lambda x: torch.sum(x, dtype=torch.int32), name="i32", skip=_NO_GRAD),
    *reduce_cases("mean", torch.mean, normal),
    *reduce_cases("max", _amax, distinct),
    *reduce_cases("min", _amin, distinct),
    # a two-way tie in every row: each tied element gets half the gradient, as
    # torch.amax does and as a central difference measures (the VJP jumps at
    # a tie, so no second-order check)
    Case("max", [np.array([[1.0, 3.0, 3.0, 0.0], [2.0, -1.0, 0.5, 2.0]])],
         attrs={"axis": 1, "keepdims": False}, ref=_ref_reduce(_amax, 1, False), name="ties"),
    Case("min", [np.array([[1.0, 0.0, 3.0, 0.0], [-1.0, -1.0, 0.5, 2.0]])],
         attrs={"axis": -1, "keepdims": True}, ref=_ref_reduce(_amin, -1, True), name="ties"),
    Case("max", [ints(-9, 9, 3, 4)], attrs={"axis": 1, "keepdims": False},
         ref=_ref_reduce(_amax, 1, False), name="int", skip=_NO_GRAD),
    Case("min", [ints(-9, 9, 3, 4)], attrs={"axis": None, "keepdims": True},
         ref=_ref_reduce(_amin, None, True), name="int", skip=_NO_GRAD),

    # ---- argmax argmin ------------------------------------------------------
    *[Case(op, [distinct(3, 4, 5)], attrs={"axis": axis, "keepdims": kd}, ref=_argref(fn, axis, kd),
           name=f"ax{axis}" + ("-kd" if kd else ""))
      for op, fn in [("argmax", torch.argmax), ("argmin", torch.argmin)]
      for axis, kd in [(0, False), (-1, True), (1, False)]],
    # ties: the first index wins in every backend
    Case("argmax", [np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])], attrs={"axis": 1},
         ref=_argref(torch.argmax, 1, False), name="ties"),
    Case("argmin", [np.array([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]])], attrs={"axis": 1},
         ref=_argref(torch.argmin, 1, False), name="ties"),
    Case("argmax", [ints(-2, 3, 4, 6)], attrs={"axis": 0, "keepdims": False},
         ref=_argref(torch.argmax, 0, False), name="int"),

    # ---- logsumexp softmax log_softmax --------------------------------------
    *reduce_cases("logsumexp", torch.logsumexp, normal),
    # far outside exp's range: only a max-shifted evaluation survives
    Case("logsumexp", [normal(3, 4, scale=200.0, shift=900.0)], attrs={"axis": 1, "keepdims": False},
         ref=lambda x: torch.logsumexp(x, dim=1), name="large", rtol=1e-12, atol=0,
         second_order=True),
    Case("logsumexp", [normal(3, 4, scale=200.0, shift=-900.0)], attrs={"axis": None, "keepdims": True},
         ref=lambda x: torch.logsumexp(x, dim=(0, 1), keepdim=True), name="very_negative",
         rtol=1e-12, atol=0, second_order=True),
    # a slice that is all -inf has logsumexp -inf, not NaN
    Case("logsumexp", [np.array([[-np.inf, -np.inf], [0.0, -np.inf]])], attrs={"axis": 1},
         ref=lambda x: torch.logsumexp(x, dim=1), name="neg_inf",
         skip={"grad": "infinite input", "second_order": "infinite input"}),
    *[Case(op, [gen(*shape)], attrs={"axis": axis}, ref=ref(axis),
           name=f"{'x'.join(map(str, shape))}-ax{axis}" + tag, second_order=True, **kw)
      for op, ref in [("softmax", _softmax_ref), ("log_softmax", _log_softmax_ref)]
      for shape, axis, gen, tag, kw in [
          ((3, 4), -1, normal, "", {}),
          ((2, 3, 4), 1, normal, "", {}),
          ((5,), 0, normal, "", {}),
          ((2, 5), 0, lambda *s: normal(*s, scale=300.0, shift=1000.0), "-large",
           {"rtol": 1e-9, "atol": 1e-12})]],
    # attr omitted: the last axis
    Case("softmax", [normal(2, 3)], ref=_softmax_ref(-1), name="default_axis"),
    Case("log_softmax", [normal(2, 3)], ref=_log_softmax_ref(-1), name="default_axis"),

    # ---- cumsum -------------------------------------------------------------
    *[Case("cumsum", [normal(*shape)], attrs={"axis": axis, "reverse": rev}, ref=_cumsum_ref(axis, rev),
           name=f"{'x'.join(map(str, shape))}-ax{axis}" + ("-rev" if rev else ""), second_order=True)
      for shape, axis, rev in [((3, 4), 1, False), ((3, 4), 0, True), ((2, 3, 4), -2, False),
                               ((2, 3, 4), -1, True), ((6,), 0, True)]],
    # ---- size: a count read off the shape (zero derivative) --------------------
    *[Case("size", [normal(*shape)], attrs={"axes": axes, "dtype": "f64"},
           ref=(lambda axes, shape: lambda x: torch.tensor(float(np.prod([shape[a] for a in axes])),
                                                          dtype=torch.float64))(axes, shape),
           name=f"{'x'.join(map(str, shape))}-ax{'_'.join(map(str, axes))}")
      for shape, axes in [((3, 4), (0,)), ((2, 3, 4), (0, 2)), ((5,), ())]],
    Case("cumsum", [ints(-5, 5, 3, 4, dtype=np.int32)], attrs={"axis": 1, "reverse": False},
         ref=lambda x: torch.cumsum(x, dim=1, dtype=torch.int32), name="i32", skip=_NO_GRAD),
]
