"""Reductions and axis-wise normalisations: sum, mean, max, min, argmax, argmin,
logsumexp, softmax, log_softmax, cumsum.

`axis` is None (every axis), an int or a tuple of ints (negative counts from the
end); `keepdims` keeps the reduced axes as size-1 dims. Reduced cotangents are put
back into the keepdims shape (`expand_dims` on each reduced axis) and then
broadcast against the input, either by an elementwise op with the input or by
`broadcast_like`, so every rule works for symbolic dims.

Lowerings see only the node, not its argument types, so they recover the reduced
axes from the attrs and the *result* rank (`_lowered_axes`); the shape rule has
already rejected out-of-range and duplicate axes.
"""
from __future__ import annotations

import numpy as np

from compiler.primitives.table import defprim
from compiler.core.types import TensorType, TypeMismatch, dim_prod, norm_axes, norm_axis

_INDEX = "integer-valued (an index)"


# ============================================================================
# shape rules
# ============================================================================

def _reduced_axes(t: TensorType, attrs) -> tuple[int, ...]:
    """The attrs' `axis` as a sorted tuple of non-negative axes of `t`."""
    axis = attrs.get("axis")
    if axis is None:
        return tuple(range(t.rank))
    items = (axis,) if isinstance(axis, int) else axis
    if not isinstance(items, (tuple, list)) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in items):
        raise TypeMismatch(f"axis must be None, an int or a tuple of ints, got {axis!r}")
    if items and t.rank == 0:
        raise TypeMismatch(f"cannot reduce a rank-0 tensor along axis {axis!r}")
    axes = [norm_axis(a, t.rank) for a in items]
    if len(set(axes)) != len(axes):
        raise TypeMismatch(f"axis {axis!r} names the same axis twice for a rank-{t.rank} tensor")
    return tuple(sorted(axes))


def _reduced_shape(t: TensorType, axes, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    return tuple(d for i, d in enumerate(t.shape) if i not in axes)


def _check_keepdims(attrs) -> bool:
    kd = attrs.get("keepdims", False)
    if not isinstance(kd, bool):
        raise TypeMismatch(f"keepdims must be true or false, got {kd!r}")
    return kd


def _reduce_numeric(ts, attrs) -> TensorType:
    """sum/max/min: float or int input, dtype kept."""
    (t,) = ts
    if t.dtype == "bool":
        raise TypeMismatch(f"expects a numeric (float or int) tensor, got {t}")
    axes = _reduced_axes(t, attrs)
    return t.with_shape(_reduced_shape(t, axes, _check_keepdims(attrs)))


def _reduce_float(ts, attrs) -> TensorType:
    """mean/logsumexp: float input."""
    (t,) = ts
    if not t.is_float:
        raise TypeMismatch(f"expects a float tensor, got {t}")
    return _reduce_numeric(ts, attrs)


def _single_axis(t: TensorType, attrs, default=None) -> int:
    axis = attrs.get("axis", default)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeMismatch(f"axis must be a single int, got {axis!r}")
    if t.rank == 0:
        raise TypeMismatch(f"expects a tensor of rank >= 1 (it works along axis {axis}), got {t}")
    return norm_axis(axis, t.rank)


def _arg_reduce(ts, attrs) -> TensorType:
    """argmax/argmin: the i64 index along one axis."""
    (t,) = ts
    if t.dtype == "bool":
        raise TypeMismatch(f"expects a numeric (float or int) tensor, got {t}")
    axis = _single_axis(t, attrs)
    return TensorType("i64", _reduced_shape(t, (axis,), _check_keepdims(attrs)))


def _along_axis_float(ts, attrs) -> TensorType:
    """softmax/log_softmax: float input, same type, one axis (default -1)."""
    (t,) = ts
    if not t.is_float:
        raise TypeMismatch(f"expects a float tensor, got {t}")
    _single_axis(t, attrs, -1)
    return t


def _cumsum_type(ts, attrs) -> TensorType:
    (t,) = ts
    if t.dtype == "bool":
        raise TypeMismatch(f"expects a numeric (float or int) tensor, got {t}")
    _single_axis(t, attrs)
    if not isinstance(attrs.get("reverse", False), bool):
        raise TypeMismatch(f"reverse must be true or false, got {attrs['reverse']!r}")
    return t


# ============================================================================
# helpers for lowerings and VJPs
# ============================================================================

def _lowered_axes(n):
    """Reduced axes (non-negative, sorted) from a node alone, or None for "all".

    The input rank is the result rank plus the number of dropped axes; with
    axis=None and keepdims=False it is unknown here, but then every axis goes, which
    each backend can say without naming them.
    """
    axis, kd = n.attrs.get("axis"), n.attrs.get("keepdims", False)
    if axis is None:
        return tuple(range(n.type.rank)) if kd else None
    items = (axis,) if isinstance(axis, int) else tuple(axis)
    rank = n.type.rank if kd else n.type.rank + len(items)
    return tuple(sorted(a % rank for a in items))


def _one_axis(n) -> int:
    """softmax/cumsum/argmax axis, non-negative."""
    axis = n.attrs.get("axis", -1 if n.op in ("softmax", "log_softmax") else None)
    rank = n.type.rank
    if n.op in ("argmax", "argmin") and not n.attrs.get("keepdims", False):
        rank += 1
    return axis % rank


def _keepdims_ct(g, n, ct):
    """The cotangent of a reduction in the keepdims shape (size-1 reduced axes)."""
    (x,) = n.args
    if n.attrs.get("keepdims", False):
        return ct
    for a in norm_axes(n.attrs.get("axis"), g.type(x).rank):  # ascending: positions hold
        ct = g.op("expand_dims", ct, axis=a)
    return ct


def _keepdims_out(g, n):
    """The node's own value in the keepdims shape."""
    return _keepdims_ct(g, n, n.id)


def _count(g, x, axes):
    """Number of elements reduced over, as a float scalar node of x's dtype.

    Static dims fold into one constant; symbolic ones are read off x's shape at
    run time by `size`.
    """
    t = g.type(x)
    dims = [t.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        return g.const(float(dim_prod(dims)), t.dtype)
    return g.op("size", x, axes=tuple(axes), dtype=t.dtype)


def _size_type(ts, attrs):
    (t,) = ts
    for a in attrs["axes"]:
        if not 0 <= a < t.rank:
            raise TypeMismatch(f"size: axis {a} is out of range for {t}")
    return TensorType(attrs["dtype"], ())


# size: how many elements x has along `axes` (a count read from the shape at run
# time: the divisor of `mean` over a symbolic batch dim). Its derivative is zero.
size = defprim("size", "prod_{a in axes} x.shape[a], as a scalar of `dtype`", 1, _size_type,
               static_args=(0,))


@size.vjp
def _(g, n, ct):
    return [None]


def _size_expr(x, axes) -> str:
    return "(" + (" * ".join(f"{x}.shape[{a}]" for a in axes) or "1") + ")"


size.numpy(lambda cg, n, x: f"np.asarray({_size_expr(x, n.attrs['axes'])}, dtype={cg.dtype(n.attrs['dtype'])})")
size.torch(lambda cg, n, x: f"torch.full((), {_size_expr(x, n.attrs['axes'])}, dtype={cg.dtype(n.attrs['dtype'])}, device={x}.device)")
size.onnx(lambda o, n, x: o.cast(o.op("ReduceProd", o.op("Gather", o.op("Shape", x), o.ints(list(n.attrs["axes"]))),
                                      o.ints([0]), keepdims=0), n.attrs["dtype"]))


def _np_axis(axes) -> str:
    return "None" if axes is None else repr(tuple(axes))


def _int_dtype_kw(cg, n) -> str:
    # NumPy and torch widen small ints when summing; keep the declared dtype.
    return "" if n.type.is_float else f", dtype={cg.dtype(n.type.dtype)}"


# The ufunc reductions (np.add.reduce, ...) skip np.sum/np.max's Python-level
# wrappers: a few microseconds per call, which is most of a small layer's cost.
_NP_UFUNC = {"sum": "np.add.reduce", "max": "np.maximum.reduce", "min": "np.minimum.reduce"}


# Low-precision runs (f16, bf16) accumulate sums, means and log-sum-exps in f32 and round
# once at the end, as torch's kernels do: an f16 running sum loses a bit per addition
# and overflows at 65504 long before the mean does (a batch of 64 losses of 1e3).
LOW_PRECISION = ("f16", "bf16")


def _accumulates_wide(cg, n) -> bool:
    return n.type.is_float and cg.run_dtype in LOW_PRECISION


def _np_reduce(fn: str, with_dtype: bool = False):
    def lower(cg, n, x):
        axes = _lowered_axes(n)
        if axes == ():
            return x  # reducing over no axes is the identity
        dt = _int_dtype_kw(cg, n) if with_dtype else ""
        kd = n.attrs.get("keepdims", False)
        wide = fn in ("sum", "mean") and _accumulates_wide(cg, n)
        if wide:
            dt = ", dtype=np.float32"
        if fn == "mean":
            out = f"np.add.reduce({x}, axis={_np_axis(axes)}, keepdims={kd}{dt}) / {_np_count(x, axes)}"
        else:
            out = f"{_NP_UFUNC.get(fn, f'np.{fn}')}({x}, axis={_np_axis(axes)}, keepdims={kd}{dt})"
        return f"np.asarray({out}).astype({cg.dtype(n.type.dtype)})" if wide else out
    return lower


def _np_count(x: str, axes) -> str:
    """The number of elements reduced over, read off the array at run time."""
    if axes is None:
        return f"{x}.size"
    return "(" + (" * ".join(f"{x}.shape[{a}]" for a in axes) or "1") + ")"


def _torch_reduce(fn: str, with_dtype: bool = False):
    def lower(cg, n, x):
        axes = _lowered_axes(n)
        if axes == ():
            return x  # torch reads an empty dim list as "all dims": special-case it
        dt = _int_dtype_kw(cg, n) if with_dtype else ""
        wide = fn in ("sum", "mean", "logsumexp") and _accumulates_wide(cg, n)
        if wide:
            x = f"{x}.float()"  # (see LOW_PRECISION)
        if axes is None:
            # all axes, result rank 0; every torch reduction accepts a flat view
            out = f"torch.{fn}({x}.reshape(-1), dim=0{dt})"
        else:
            out = f"torch.{fn}({x}, dim={tuple(axes)!r}, keepdim={n.attrs.get('keepdims', False)}{dt})"
        return f"{out}.to({cg.dtype(n.type.dtype)})" if wide else out
    return lower


_ONNX_WIDE = ("ReduceSum", "ReduceMean", "ReduceLogSumExp")
_ONNX_FLOAT = 1  # TensorProto.FLOAT; the builder's cast() means the run dtype


def _onnx_reduce(op_type: str):
    def lower(o, n, x):
        axes = _lowered_axes(n)
        if axes == ():
            return o.op("Identity", x)  # ONNX reads empty axes as "all axes"
        kd = int(bool(n.attrs.get("keepdims", False)))
        # onnxruntime's f16 ReduceLogSumExp overflows (inf at 1e4): f32 inside
        wide = op_type in _ONNX_WIDE and _accumulates_wide(o, n)
        if wide:
            x = o.op("Cast", x, to=_ONNX_FLOAT)
        if axes is None:
            out = o.op(op_type, x, keepdims=kd)  # no axes input: reduce everything
        else:
            out = o.op(op_type, x, o.ints(list(axes)), keepdims=kd)
        return o.cast(out, n.type.dtype) if wide else out
    return lower


# ============================================================================
# sum mean max min
# ============================================================================

sum_ = defprim("sum", "Σ x over axis", 1, _reduce_numeric)


@sum_.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("broadcast_like", _keepdims_ct(g, n, ct), x)]


sum_.numpy(_np_reduce("sum", with_dtype=True))
sum_.torch(_torch_reduce("sum", with_dtype=True))
sum_.onnx(_onnx_reduce("ReduceSum"))


mean = defprim("mean", "Σ x / N over axis (N = number of reduced elements)", 1, _reduce_float)


@mean.vjp
def _(g, n, ct):
    # divide before broadcasting: the division runs on the small reduced tensor
    (x,) = n.args
    count = _count(g, x, norm_axes(n.attrs.get("axis"), g.type(x).rank))
    return [g.op("broadcast_like", g.op("div", _keepdims_ct(g, n, ct), count), x)]


mean.numpy(_np_reduce("mean"))
mean.torch(_torch_reduce("mean"))
def _onnx_mean(o, n, x):
    # onnxruntime's ReduceMean of an empty slice is 0; NumPy and torch give NaN (0/0).
    # Where a reduced dim may be 0 at run time (a symbol), divide the sum by the count.
    t = o.type_of(n.args[0])
    axes = norm_axes(n.attrs.get("axis"), t.rank)
    dims = [t.shape[a] for a in axes]
    if all(isinstance(d, int) and d > 0 for d in dims):
        return _onnx_reduce("ReduceMean")(o, n, x)
    total = _onnx_reduce("ReduceSum")(o, n, x)
    # the count from the value's own run-time shape (not from the dims' symbols)
    count = o.op("ReduceProd", o.op("Gather", o.shape_of(x), o.ints(list(axes)), axis=0), keepdims=0)
    return o.op("Div", total, o.cast(count, n.type.dtype))


mean.onnx(_onnx_mean)


def _extremum_vjp(g, n, ct):
    # The gradient goes to the elements equal to the result, split evenly among
    # ties (as torch.amax/amin do; also what a central difference measures at a
    # two-way tie). The mask only feeds `where`'s condition and a bool→float cast,
    # neither of which passes a cotangent on, so the rule is differentiable again.
    (x,) = n.args
    axes = norm_axes(n.attrs.get("axis"), g.type(x).rank)
    hit = g.op("eq", x, _keepdims_out(g, n))
    ties = g.op("sum", g.op("cast", hit, dtype=g.type(ct).dtype), axis=axes, keepdims=True)
    share = g.op("div", _keepdims_ct(g, n, ct), ties)
    return [g.op("where", hit, share, g.scalar_like(0.0, ct))]


max_ = defprim("max", "max of x over axis", 1, _reduce_numeric)
max_.vjp(_extremum_vjp)
max_.numpy(_np_reduce("max"))
max_.torch(_torch_reduce("amax"))
max_.onnx(_onnx_reduce("ReduceMax"))


min_ = defprim("min", "min of x over axis", 1, _reduce_numeric)
min_.vjp(_extremum_vjp)
min_.numpy(_np_reduce("min"))
min_.torch(_torch_reduce("amin"))
min_.onnx(_onnx_reduce("ReduceMin"))


# ============================================================================
# argmax argmin: first index of the extremum along one axis, as i64
# ============================================================================

def _np_arg(fn):
    return lambda cg, n, x: (f"np.{fn}({x}, axis={_one_axis(n)}, "
                             f"keepdims={n.attrs.get('keepdims', False)}).astype(np.int64)")


def _torch_arg(fn):
    return lambda cg, n, x: f"torch.{fn}({x}, dim={_one_axis(n)}, keepdim={n.attrs.get('keepdims', False)})"


def _onnx_arg(op_type):
    # select_last_index=0: the first of equal extrema, as NumPy and torch pick
    return lambda o, n, x: o.op(op_type, x, axis=_one_axis(n),
                                keepdims=int(bool(n.attrs.get("keepdims", False))),
                                select_last_index=0)


argmax = defprim("argmax", "index of the first maximum along axis", 1, _arg_reduce, nondiff=_INDEX)
argmax.numpy(_np_arg("argmax"))
argmax.torch(_torch_arg("argmax"))
argmax.onnx(_onnx_arg("ArgMax"))

argmin = defprim("argmin", "index of the first minimum along axis", 1, _arg_reduce, nondiff=_INDEX)
argmin.numpy(_np_arg("argmin"))
argmin.torch(_torch_arg("argmin"))
argmin.onnx(_onnx_arg("ArgMin"))


# ============================================================================
# logsumexp softmax log_softmax
# ============================================================================

logsumexp = defprim("logsumexp", "ln Σ e^x over axis (stable)", 1, _reduce_float)


@logsumexp.vjp
def _(g, n, ct):
    # ∂/∂x = e^(x - lse) = softmax(x), built from the forward value
    (x,) = n.args
    p = g.op("exp", g.op("sub", x, _keepdims_out(g, n)))
    return [g.op("mul", _keepdims_ct(g, n, ct), p)]


def _lse_numpy(cg, n, x):
    # m + ln Σ e^(x - m) with m the max over the axes; a non-finite m (a slice
    # all -inf, or holding +inf/NaN) is replaced by 0 so the answer is the right
    # -inf/+inf/NaN instead of inf - inf.
    axes = _lowered_axes(n)
    if axes == ():
        return x
    ax, kd = _np_axis(axes), n.attrs.get("keepdims", False)
    if _accumulates_wide(cg, n):  # (see LOW_PRECISION)
        wide = cg.fresh("wide")
        cg.emit(f"{wide} = {x}.astype(np.float32)")
        return f"np.asarray({_lse_numpy_shifted(cg, n, wide, ax, kd)}).astype({cg.dtype(n.type.dtype)})"
    return _lse_numpy_shifted(cg, n, x, ax, kd)


def _lse_numpy_shifted(cg, n, x, ax, kd):
    m = cg.fresh("lse_max")
    # initial=-inf: an empty slice has max -inf (then lse = -inf, as torch), not an error
    cg.emit(f"{m} = np.maximum.reduce({x}, axis={ax}, keepdims=True, initial=-np.inf)")
    cg.emit(f"{m} = np.where(np.isfinite({m}), {m}, 0)")
    lse = f"np.log(np.add.reduce(np.exp({x} - {m}), axis={ax}, keepdims=True)) + {m}"
    return lse if kd else f"({lse}).reshape({cg.shape(n.type.shape)})"


def _lse_onnx(o, n, x):
    # m + ln Σ e^(x - m), as NumPy's: onnxruntime's f16 ReduceLogSumExp gives inf at
    # 1e4, so the shift by the max is written out (in f32 for f16 runs). A non-finite
    # m is replaced by 0 (then an all -inf slice gives -inf, a +inf entry +inf).
    axes = _lowered_axes(n)
    if axes == ():
        return o.op("Identity", x)
    kd = int(bool(n.attrs.get("keepdims", False)))
    wide = _accumulates_wide(o, n)
    zero = o.const(np.zeros(()))
    if wide:
        x, zero = o.op("Cast", x, to=_ONNX_FLOAT), o.op("Cast", zero, to=_ONNX_FLOAT)
    ax = () if axes is None else (o.ints(list(axes)),)
    m = o.op("ReduceMax", x, *ax, keepdims=1)
    m = o.op("Where", o.op("IsInf", m), zero, m)
    m = o.op("Where", o.op("IsNaN", m), zero, m)
    s = o.op("ReduceSum", o.op("Exp", o.op("Sub", x, m)), *ax, keepdims=1)
    out = o.op("Add", o.op("Log", s), m)
    if not kd:
        out = o.op("Squeeze", out, *ax) if ax else o.op("Reshape", out, o.ints([]))
    return o.cast(out, n.type.dtype) if wide else out


logsumexp.numpy(_lse_numpy)
logsumexp.torch(_torch_reduce("logsumexp"))
logsumexp.onnx(_lse_onnx)


softmax = defprim("softmax", "e^x / Σ e^x along axis (stable)", 1, _along_axis_float)


@softmax.vjp
def _(g, n, ct):
    # y ⊙ (ct - Σ ct ⊙ y) along the axis, y the forward value
    (x,) = n.args
    a = norm_axis(n.attrs.get("axis", -1), g.type(x).rank)
    dot = g.op("sum", g.op("mul", ct, n.id), axis=a, keepdims=True)
    return [g.op("mul", n.id, g.op("sub", ct, dot))]


def _softmax_numpy(cg, n, x):
    e = cg.fresh("exp_shifted")  # e^(x - max): never overflows
    cg.emit(f"{e} = np.exp({x} - np.max({x}, axis={_one_axis(n)}, keepdims=True, initial=-np.inf))")
    return f"{e} / np.sum({e}, axis={_one_axis(n)}, keepdims=True)"


softmax.numpy(_softmax_numpy)
softmax.torch(lambda cg, n, x: f"torch.softmax({x}, dim={_one_axis(n)})")
softmax.onnx(lambda o, n, x: o.op("Softmax", x, axis=_one_axis(n)))


log_softmax = defprim("log_softmax", "x - ln Σ e^x along axis (stable)", 1, _along_axis_float)


@log_softmax.vjp
def _(g, n, ct):
    # ct - softmax ⊙ Σ ct along the axis; softmax = e^(forward value)
    (x,) = n.args
    a = norm_axis(n.attrs.get("axis", -1), g.type(x).rank)
    total = g.op("sum", ct, axis=a, keepdims=True)
    return [g.op("sub", ct, g.op("mul", g.op("exp", n.id), total))]


def _log_softmax_numpy(cg, n, x):
    z = cg.fresh("shifted")  # x - max: the largest entry is 0, so the sum is >= 1
    cg.emit(f"{z} = {x} - np.max({x}, axis={_one_axis(n)}, keepdims=True, initial=-np.inf)")
    return f"{z} - np.log(np.sum(np.exp({z}), axis={_one_axis(n)}, keepdims=True))"


log_softmax.numpy(_log_softmax_numpy)
log_softmax.torch(lambda cg, n, x: f"torch.log_softmax({x}, dim={_one_axis(n)})")
log_softmax.onnx(lambda o, n, x: o.op("LogSoftmax", x, axis=_one_axis(n)))


# ============================================================================
# cumsum
# ============================================================================

cumsum = defprim("cumsum", "running Σ along axis (from the end when reverse)", 1, _cumsum_type)


@cumsum.vjp
def _(g, n, ct):
    # each input feeds every later (earlier, if reverse) output: sum the other way
    return [g.op("cumsum", ct, axis=n.attrs["axis"], reverse=not n.attrs.get("reverse", False))]


def _cumsum_numpy(cg, n, x):
    a, dt = _one_axis(n), _int_dtype_kw(cg, n)
    if n.attrs.get("reverse", False):
        return f"np.flip(np.cumsum(np.flip({x}, {a}), axis={a}{dt}), {a})"
    return f"np.cumsum({x}, axis={a}{dt})"


def _cumsum_torch(cg, n, x):
    a, dt = _one_axis(n), _int_dtype_kw(cg, n)
    if n.attrs.get("reverse", False):
        return f"torch.flip(torch.cumsum(torch.flip({x}, ({a},)), dim={a}{dt}), ({a},))"
    return f"torch.cumsum({x}, dim={a}{dt})"


cumsum.numpy(_cumsum_numpy)
cumsum.torch(_cumsum_torch)
cumsum.onnx(lambda o, n, x: o.op("CumSum", x, o.const(np.array(_one_axis(n), dtype=np.int64)),
                                 exclusive=0, reverse=int(bool(n.attrs.get("reverse", False)))))
