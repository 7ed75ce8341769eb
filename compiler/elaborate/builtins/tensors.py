"""Builtins on tensors: elementwise ops, reductions, shapes and constructors."""
from __future__ import annotations

import math

from compiler.core.types import TypeMismatch, norm_axis
from compiler.core.values import SymDim, Tensor
from compiler.elaborate.builtins.base import (
    _axis_arg,
    _bool,
    _bind,
    _describe,
    _dims,
    _dtype,
    _int,
    _ints,
    _tensor,
    builtin,
)
from dsl.errors import ShapeError, SpecError

# ---- elementwise ------------------------------------------------------------------------

_MATH = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "sin": math.sin,
         "cos": math.cos, "acos": math.acos, "tanh": math.tanh, "floor": math.floor, "ceil": math.ceil,
         "round": round, "log1p": math.log1p, "erf": math.erf,
         "sigmoid": lambda x: 1 / (1 + math.exp(-x)), "relu": lambda x: max(x, 0),
         "rsqrt": lambda x: 1 / math.sqrt(x), "reciprocal": lambda x: 1 / x,
         "sign": lambda x: (x > 0) - (x < 0), "neg": lambda x: -x,
         "softplus": lambda x: math.log1p(math.exp(-abs(x))) + max(x, 0)}


def _unary(op):
    def fn(ev, args, kwargs, span):
        x = _bind(op, args, kwargs, span, ["x"], {})["x"]
        if isinstance(x, (int, float)) and not isinstance(x, (bool, SymDim)):
            try:  # compile-time arithmetic, e.g. an init scale 1 / sqrt(fan_in)
                return _MATH[op](x)
            except (ValueError, OverflowError, ZeroDivisionError) as e:
                raise SpecError(f"`{op}({x})` is undefined: {e}", span) from None
        return ev.add(op, [_tensor(ev, x, span)], span)
    fn.__doc__ = f"{op}(x), elementwise"
    return fn


for _op in ("neg exp log log1p sqrt rsqrt abs sign sin cos acos tanh sigmoid relu softplus erf "
            "reciprocal floor ceil round").split():
    builtin(_op)(_unary(_op))


@builtin()
def stop_gradient(ev, args, kwargs, span):
    """x, blocking gradients"""
    x = _bind("stop_gradient", args, kwargs, span, ["x"], {})["x"]
    return ev.add("stop_gradient", [_tensor(ev, x, span)], span)


def _binary(op):
    def fn(ev, args, kwargs, span):
        b = _bind(op, args, kwargs, span, ["x", "y"], {})
        x, y = b["x"], b["y"]
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            for v in (x, y):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or isinstance(v, SymDim):
                    raise SpecError(f"`{op}` needs numbers or tensors, found {_describe(v)}", span)
            if op in ("maximum", "minimum"):
                return max(x, y) if op == "maximum" else min(x, y)
            if op == "pow":
                from compiler.elaborate.checks import compile_time_arith
                return compile_time_arith("**", x, y, span)
        tx = ev.to_tensor(x, span, like=y if isinstance(y, Tensor) else None)
        ty = ev.to_tensor(y, span, like=tx)
        return ev.add(op, [tx, ty], span)
    fn.__doc__ = f"{op}(x, y), broadcasting"
    return fn


for _op in ("maximum", "minimum", "pow", "matmul"):
    builtin(_op)(_binary(_op))


@builtin()
def where(ev, args, kwargs, span):
    """where(cond, a, b): a where cond holds, else b"""
    b = _bind("where", args, kwargs, span, ["cond", "a", "b"], {})
    c = _tensor(ev, b["cond"], span, "cond")
    like = b["a"] if isinstance(b["a"], Tensor) else b["b"] if isinstance(b["b"], Tensor) else None
    ta = ev.to_tensor(b["a"], span, like=like)
    tb = ev.to_tensor(b["b"], span, like=ta)
    return ev.add("where", [c, ta, tb], span)


@builtin()
def cast(ev, args, kwargs, span):
    """cast(x, dtype)"""
    b = _bind("cast", args, kwargs, span, ["x", "dtype"], {})
    x = _tensor(ev, b["x"], span)
    dt = _dtype(b["dtype"], span)
    return x if x.type.dtype == dt else ev.add("cast", [x], span, dtype=dt)


@builtin("float")
def to_float(ev, args, kwargs, span):
    """float(x): cast to f32"""
    x = _tensor(ev, _bind("float", args, kwargs, span, ["x"], {})["x"], span)
    return x if x.type.dtype == "f32" else ev.add("cast", [x], span, dtype="f32")


# ---- reductions ---------------------------------------------------------------------------

def _reduce(op):
    def fn(ev, args, kwargs, span):
        b = _bind(op, args, kwargs, span, ["x", "axis", "keepdims"], {"axis": None, "keepdims": False})
        x = _tensor(ev, b["x"], span)
        return ev.add(op, [x], span, axis=_axis_arg(b["axis"], span), keepdims=_bool(b["keepdims"], span, "keepdims"))
    fn.__doc__ = f"{op}(x, axis=None, keepdims=false)"
    return fn


for _op in ("sum", "mean", "max", "min", "logsumexp"):
    builtin(_op)(_reduce(_op))


def _arg_reduce(op):
    def fn(ev, args, kwargs, span):
        b = _bind(op, args, kwargs, span, ["x", "axis", "keepdims"], {"axis": -1, "keepdims": False})
        return ev.add(op, [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"),
                      keepdims=_bool(b["keepdims"], span, "keepdims"))
    fn.__doc__ = f"{op}(x, axis=-1, keepdims=false): integer indices"
    return fn


for _op in ("argmax", "argmin"):
    builtin(_op)(_arg_reduce(_op))


def _softmax(op):
    def fn(ev, args, kwargs, span):
        b = _bind(op, args, kwargs, span, ["x", "axis"], {"axis": -1})
        return ev.add(op, [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"))
    fn.__doc__ = f"{op}(x, axis=-1)"
    return fn


for _op in ("softmax", "log_softmax"):
    builtin(_op)(_softmax(_op))


@builtin()
def cumsum(ev, args, kwargs, span):
    """cumsum(x, axis=0, reverse=false)"""
    b = _bind("cumsum", args, kwargs, span, ["x", "axis", "reverse"], {"axis": 0, "reverse": False})
    return ev.add("cumsum", [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"),
                  reverse=_bool(b["reverse"], span, "reverse"))


# ---- shapes ----------------------------------------------------------------------------------

@builtin()
def reshape(ev, args, kwargs, span):
    """reshape(x, shape): one dim may be -1"""
    b = _bind("reshape", args, kwargs, span, ["x", "shape"], {})
    return ev.add("reshape", [_tensor(ev, b["x"], span)], span,
                  shape=_dims(b["shape"], span, negative_ok=True))


@builtin()
def flatten(ev, args, kwargs, span):
    """flatten(x, start=1): merge dims from `start` on"""
    from compiler.core.types import dim_prod
    b = _bind("flatten", args, kwargs, span, ["x", "start"], {"start": 1})
    x = _tensor(ev, b["x"], span)
    s = norm_axis(_int(b["start"], span, "start"), x.type.rank)
    shape = x.type.shape[:s] + (dim_prod(x.type.shape[s:]),)
    return ev.add("reshape", [x], span, shape=shape)


@builtin()
def transpose(ev, args, kwargs, span):
    """transpose(x, perm=reversed axes)"""
    b = _bind("transpose", args, kwargs, span, ["x", "perm"], {"perm": None})
    x = _tensor(ev, b["x"], span)
    perm = tuple(reversed(range(x.type.rank))) if b["perm"] is None else _ints(b["perm"], span, "perm")
    return ev.add("transpose", [x], span, perm=perm)


@builtin()
def swapaxes(ev, args, kwargs, span):
    """swapaxes(x, a, b)"""
    b = _bind("swapaxes", args, kwargs, span, ["x", "a", "b"], {})
    x = _tensor(ev, b["x"], span)
    r = x.type.rank
    try:
        i, j = norm_axis(_int(b["a"], span, "a"), r), norm_axis(_int(b["b"], span, "b"), r)
    except TypeMismatch as e:
        raise ShapeError(str(e), span) from None
    perm = list(range(r))
    perm[i], perm[j] = perm[j], perm[i]
    return ev.add("transpose", [x], span, perm=tuple(perm))


@builtin()
def expand_dims(ev, args, kwargs, span):
    """expand_dims(x, axis)"""
    b = _bind("expand_dims", args, kwargs, span, ["x", "axis"], {})
    return ev.add("expand_dims", [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"))


@builtin()
def squeeze(ev, args, kwargs, span):
    """squeeze(x, axis)"""
    b = _bind("squeeze", args, kwargs, span, ["x", "axis"], {})
    return ev.add("squeeze", [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"))


@builtin()
def broadcast_to(ev, args, kwargs, span):
    """broadcast_to(x, shape)"""
    b = _bind("broadcast_to", args, kwargs, span, ["x", "shape"], {})
    return ev.add("broadcast_to", [_tensor(ev, b["x"], span)], span, shape=_dims(b["shape"], span))


@builtin()
def concat(ev, args, kwargs, span):
    """concat(xs, axis=0)"""
    b = _bind("concat", args, kwargs, span, ["xs", "axis"], {"axis": 0})
    xs = b["xs"]
    if not isinstance(xs, tuple) or not xs:
        raise SpecError("concat needs a non-empty list of tensors", span)
    return ev.add("concat", [_tensor(ev, x, span) for x in xs], span, axis=_int(b["axis"], span, "axis"))


@builtin()
def stack(ev, args, kwargs, span):
    """stack(xs, axis=0): a new axis"""
    b = _bind("stack", args, kwargs, span, ["xs", "axis"], {"axis": 0})
    xs = b["xs"]
    if not isinstance(xs, tuple) or not xs:
        raise SpecError("stack needs a non-empty list of tensors", span)
    axis = _int(b["axis"], span, "axis")
    parts = [ev.add("expand_dims", [_tensor(ev, x, span)], span, axis=axis) for x in xs]
    return parts[0] if len(parts) == 1 else ev.add("concat", parts, span, axis=axis)


@builtin()
def split(ev, args, kwargs, span):
    """split(x, n_or_sizes, axis=-1): a tuple of slices"""
    b = _bind("split", args, kwargs, span, ["x", "parts", "axis"], {"axis": -1})
    x = _tensor(ev, b["x"], span)
    try:
        axis = norm_axis(_int(b["axis"], span, "axis"), x.type.rank)
    except TypeMismatch as e:
        raise ShapeError(str(e), span) from None
    size = x.type.shape[axis]
    parts = b["parts"]
    if isinstance(parts, int) and not isinstance(parts, bool):
        if parts < 1:
            raise SpecError(f"split needs a positive number of parts, found {parts}", span)
        if not isinstance(size, int) or size % parts:
            raise ShapeError(f"cannot split dim {size} into {parts} equal parts", span)
        sizes = (size // parts,) * parts
    else:
        sizes = _ints(parts, span, "sizes")
        if isinstance(size, int) and sum(sizes) != size:
            raise ShapeError(f"split sizes {list(sizes)} add up to {sum(sizes)}, the dim is {size}",
                             span)
    out, start = [], 0
    for s in sizes:
        out.append(ev.add("slice", [x], span, axis=axis, start=start, stop=start + s, step=1))
        start += s
    return tuple(out)


@builtin()
def take(ev, args, kwargs, span):
    """take(x, idx, axis=0): gather along an axis with an integer tensor"""
    b = _bind("take", args, kwargs, span, ["x", "idx", "axis"], {"axis": 0})
    return ev.add("take", [_tensor(ev, b["x"], span), _tensor(ev, b["idx"], span, "idx")], span,
                  axis=_int(b["axis"], span, "axis"))


@builtin()
def one_hot(ev, args, kwargs, span):
    """one_hot(idx, depth, dtype="f32")"""
    b = _bind("one_hot", args, kwargs, span, ["idx", "depth", "dtype"], {"dtype": "f32"})
    return ev.add("one_hot", [_tensor(ev, b["idx"], span, "idx")], span,
                  depth=_int(b["depth"], span, "depth"), dtype=_dtype(b["dtype"], span))


@builtin()
def pad(ev, args, kwargs, span):
    """pad(x, pads, value=0): pads is one (before, after) pair per axis"""
    b = _bind("pad", args, kwargs, span, ["x", "pads", "value"], {"value": 0.0})
    x = _tensor(ev, b["x"], span)
    pads = b["pads"]
    if not isinstance(pads, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in pads):
        raise SpecError("pads must be a list of (before, after) pairs", span)
    for p in pads:
        for v in p:
            _int(v, span, "a pad width")
    value = b["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, SymDim):
        raise SpecError(f"pad's `value` must be a number, found {_describe(value)}", span)
    return ev.add("pad", [x], span, pads=tuple(tuple(p) for p in pads), value=float(value))


@builtin()
def flip(ev, args, kwargs, span):
    """flip(x, axis)"""
    b = _bind("flip", args, kwargs, span, ["x", "axis"], {})
    return ev.add("flip", [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"))


@builtin()
def arange(ev, args, kwargs, span):
    """arange(n, dtype="i64"): 0, 1, ..., n-1 (n may be a symbolic dim)"""
    b = _bind("arange", args, kwargs, span, ["n", "dtype"], {"dtype": "i64"})
    n = b["n"]
    if isinstance(n, bool) or not isinstance(n, (int, str)):
        raise SpecError(f"arange needs a dim, found {_describe(n)}", span)
    if isinstance(n, int) and n < 0:
        raise SpecError(f"arange needs a non-negative length, found {n}", span)
    return ev.add("arange", [], span, length=str(n) if isinstance(n, SymDim) else n,
                  dtype=_dtype(b["dtype"], span))


@builtin()
def zeros(ev, args, kwargs, span):
    """zeros(shape, dtype="f32")"""
    b = _bind("zeros", args, kwargs, span, ["shape", "dtype"], {"dtype": "f32"})
    return _filled(ev, 0.0, b, span)


@builtin()
def ones(ev, args, kwargs, span):
    """ones(shape, dtype="f32")"""
    b = _bind("ones", args, kwargs, span, ["shape", "dtype"], {"dtype": "f32"})
    return _filled(ev, 1.0, b, span)


def _filled(ev, value, b, span):
    shape = _dims(b["shape"], span)
    dt = _dtype(b["dtype"], span)
    c = ev.add("const", [], span, value=value, dtype=dt, shape=())
    return ev.add("broadcast_to", [c], span, shape=shape) if shape else c


@builtin()
def dim(ev, args, kwargs, span):
    """dim(x, axis): a dim of x's shape (an int or a symbol)"""
    b = _bind("dim", args, kwargs, span, ["x", "axis"], {})
    x = _tensor(ev, b["x"], span)
    try:
        d = x.type.shape[norm_axis(_int(b["axis"], span, "axis"), x.type.rank)]
    except TypeMismatch as e:
        raise ShapeError(str(e), span) from None
    return SymDim(d) if isinstance(d, str) else d


