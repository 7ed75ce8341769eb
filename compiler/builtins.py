"""Functions every spec can call without importing anything.

Most wrap one primitive (keyword arguments become its attrs). A few are built
from several primitives (`split`, `stack`, indexing), and a few are special forms:
`grad` differentiates the graph built so far, `scan` elaborates its body into a
nested graph, `repeat` evaluates its layer expression N times. Layers, losses and
activations beyond these live in the language itself, in `specs/std/`.
"""
from __future__ import annotations

import math

from dsl import ast as A
from dsl.errors import ShapeError, SpecError

from .types import TypeMismatch, norm_axis
from .values import Builtin, Closure, InitSpec, Instance, Record, Sequential, SymDim, Tensor

BUILTINS: dict[str, Builtin] = {}
INIT_SCOPE: dict[str, Builtin] = {}


def builtin(name=None, *, table=None, lazy=False):
    def deco(fn):
        n = name or fn.__name__.rstrip("_")
        (table if table is not None else BUILTINS)[n] = Builtin(n, fn, (fn.__doc__ or "").strip(),
                                                                lazy=lazy)
        return fn
    return deco


# ---- argument handling ------------------------------------------------------------------

def _bind(name, args, kwargs, span, params: list[str], defaults: dict):
    """Bind positional/keyword args to `params`; missing ones take `defaults`."""
    if len(args) > len(params):
        raise SpecError(f"`{name}` takes at most {len(params)} arguments ({', '.join(params)}), "
                        f"got {len(args)}", span)
    out = dict(zip(params, args))
    for k, v in kwargs.items():
        if k not in params:
            raise SpecError(f"`{name}` has no argument `{k}`", span,
                            hint=f"its arguments are: {', '.join(params)}")
        if k in out:
            raise SpecError(f"`{name}`: `{k}` given twice", span)
        out[k] = v
    for p in params:
        if p not in out:
            if p not in defaults:
                raise SpecError(f"`{name}` needs `{p}`", span)
            out[p] = defaults[p]
    return out


def _tensor(ev, v, span, what="argument"):
    if isinstance(v, Tensor):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, (bool, SymDim)):
        return ev.to_tensor(float(v) if isinstance(v, float) else v, span)
    raise SpecError(f"{what} must be a tensor, found {_describe(v)}", span)


def _int(v, span, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{what} must be an integer, found {_describe(v)}", span)
    return v


def _ints(v, span, what, n=None):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * (n or 1)
    if isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if n is not None and len(v) != n:
            raise SpecError(f"{what} needs {n} integers, found {len(v)}", span)
        return v
    raise SpecError(f"{what} must be an integer or a tuple of integers, found {_describe(v)}", span)


def _axis_arg(v, span):
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, tuple):
        return tuple(_int(a, span, "axis") for a in v)
    raise SpecError(f"axis must be an integer or a tuple of integers, found {_describe(v)}", span)


def _dims(v, span, what="shape", negative_ok=False):
    if isinstance(v, (int, str)) and not isinstance(v, bool):
        v = (v,)
    if not isinstance(v, tuple) or not all(isinstance(d, (int, str)) and not isinstance(d, bool)
                                           for d in v):
        raise SpecError(f"{what} must be a list of dims, found {_describe(v)}", span)
    if not negative_ok and any(isinstance(d, int) and d < 0 for d in v):
        raise ShapeError(f"{what} {list(v)} has a negative dim", span)
    return tuple(str(d) if isinstance(d, SymDim) else d for d in v)


def _describe(v):
    from .elaborate import describe
    return describe(v)


def _dtype(v, span):
    if not isinstance(v, str) or v not in ("f32", "f64", "f16", "i64", "i32", "bool"):
        shown = f'"{v}"' if isinstance(v, str) else _describe(v)
        raise SpecError(f"unknown dtype {shown}; use one of \"f32\", \"f64\", \"i64\", \"i32\", "
                        "\"bool\"", span)
    return v


# ---- elementwise ------------------------------------------------------------------------

_MATH = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "sin": math.sin,
         "cos": math.cos, "tanh": math.tanh, "floor": math.floor, "ceil": math.ceil,
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


for _op in ("neg exp log log1p sqrt rsqrt abs sign sin cos tanh sigmoid relu softplus erf "
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
                from .elaborate import compile_time_arith
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
        return ev.add(op, [x], span, axis=_axis_arg(b["axis"], span), keepdims=bool(b["keepdims"]))
    fn.__doc__ = f"{op}(x, axis=None, keepdims=false)"
    return fn


for _op in ("sum", "mean", "max", "min", "logsumexp"):
    builtin(_op)(_reduce(_op))


def _arg_reduce(op):
    def fn(ev, args, kwargs, span):
        b = _bind(op, args, kwargs, span, ["x", "axis", "keepdims"], {"axis": -1, "keepdims": False})
        return ev.add(op, [_tensor(ev, b["x"], span)], span, axis=_int(b["axis"], span, "axis"),
                      keepdims=bool(b["keepdims"]))
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
                  reverse=bool(b["reverse"]))


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
    from .types import dim_prod
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


# ---- convolution and pooling -------------------------------------------------------------------

def _conv(nd):
    def fn(ev, args, kwargs, span):
        b = _bind(f"conv{nd}d", args, kwargs, span, ["x", "w", "stride", "padding", "dilation", "groups"],
                  {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        x, w = _tensor(ev, b["x"], span), _tensor(ev, b["w"], span)
        return ev.add("conv", [x, w], span, stride=_ints(b["stride"], span, "stride", nd),
                      padding=_ints(b["padding"], span, "padding", nd),
                      dilation=_ints(b["dilation"], span, "dilation", nd),
                      groups=_int(b["groups"], span, "groups"))
    fn.__doc__ = f"conv{nd}d(x, w, stride=1, padding=0, dilation=1, groups=1): x [B, C, ...], w [O, C/groups, ...]"
    return fn


def _pool(op, nd):
    def fn(ev, args, kwargs, span):
        b = _bind(f"{op}{nd}d", args, kwargs, span, ["x", "kernel", "stride", "padding"],
                  {"stride": None, "padding": 0})
        x = _tensor(ev, b["x"], span)
        k = _ints(b["kernel"], span, "kernel", nd)
        s = k if b["stride"] is None else _ints(b["stride"], span, "stride", nd)
        return ev.add(op, [x], span, kernel=k, stride=s, padding=_ints(b["padding"], span, "padding", nd))
    fn.__doc__ = f"{op}{nd}d(x, kernel, stride=kernel, padding=0)"
    return fn


for _nd in (1, 2):
    builtin(f"conv{_nd}d")(_conv(_nd))
    builtin(f"max_pool{_nd}d")(_pool("max_pool", _nd))
    builtin(f"avg_pool{_nd}d")(_pool("avg_pool", _nd))


# ---- randomness ---------------------------------------------------------------------------------

@builtin()
def normal(ev, args, kwargs, span):
    """normal(shape, mean=0, std=1): seeded Gaussian noise, fresh each step"""
    b = _bind("normal", args, kwargs, span, ["shape", "mean", "std"], {"mean": 0.0, "std": 1.0})
    z = ev.make_noise("normal", _dims(b["shape"], span), span)
    return _affine(ev, z, b["mean"], b["std"], span)


@builtin()
def uniform(ev, args, kwargs, span):
    """uniform(shape, low=0, high=1): seeded uniform noise, fresh each step"""
    b = _bind("uniform", args, kwargs, span, ["shape", "low", "high"], {"low": 0.0, "high": 1.0})
    u = ev.make_noise("uniform", _dims(b["shape"], span), span)
    scale = ev.binary("-", b["high"], b["low"], _Fake(span))
    return _affine(ev, u, b["low"], scale, span)


def _affine(ev, z, shift, scale, span):
    if not (isinstance(scale, (int, float)) and scale == 1):
        z = ev.binary("*", z, scale, _Fake(span))
    if not (isinstance(shift, (int, float)) and shift == 0):
        z = ev.binary("+", z, shift, _Fake(span))
    return z


class _Fake:
    """Stands in for a BinOp node when builtins reuse the evaluator's arithmetic."""

    def __init__(self, span):
        self.span = span
        self.left = self.right = self


# ---- special forms: grad, scan, repeat ------------------------------------------------------------

@builtin()
def grad(ev, args, kwargs, span):
    """grad(y, wrt): dy/dwrt of a scalar y, for a tensor or a tuple of tensors (any order)"""
    from .autodiff import grad as ad_grad
    b = _bind("grad", args, kwargs, span, ["y", "wrt"], {})
    y = b["y"]
    if not isinstance(y, Tensor) or y.type.rank != 0 or not y.type.is_float:
        raise ShapeError(f"grad needs a float scalar to differentiate, found {_describe(y)} "
                         "(reduce it with sum or mean first)", span)
    wrt = b["wrt"]
    single = isinstance(wrt, Tensor)
    items = (wrt,) if single else wrt.as_tuple() if isinstance(wrt, Record) else wrt
    if not isinstance(items, tuple) or not all(isinstance(w, Tensor) for w in items):
        raise SpecError(f"grad's `wrt` must be a tensor or a tuple of tensors, found {_describe(wrt)}",
                        span)
    for w in items:
        if not w.type.is_float:
            raise ShapeError(f"cannot differentiate with respect to an integer tensor {w.type}", span)
    nodes = ad_grad(ev.graph, ev.lift(y), [ev.lift(w) for w in items], span=span)
    out = tuple(Tensor(ev.frame, n) for n in nodes)
    return out[0] if single else out


@builtin()
def scan(ev, args, kwargs, span):
    """scan(f, xs, init, axis=0, reverse=false, length=none): fold f(carry, x_t) -> (carry, y_t)"""
    from .elaborate import Frame
    from .ir import Graph
    b = _bind("scan", args, kwargs, span, ["f", "xs", "init", "axis", "reverse", "length"],
              {"xs": (), "axis": 0, "reverse": False, "length": None, "init": ()})
    f = b["f"]
    if not isinstance(f, (Closure, Instance, Builtin, Sequential)):
        raise SpecError(f"scan's first argument must be a function or layer, found {_describe(f)}", span)
    xs = b["xs"]
    x_single = isinstance(xs, Tensor)
    xs_flat = (xs,) if x_single else xs
    if not isinstance(xs_flat, tuple) or not all(isinstance(x, Tensor) for x in xs_flat):
        raise SpecError(f"scan's `xs` must be a tensor or a tuple of tensors, found {_describe(xs)}", span)
    axis = _int(b["axis"], span, "axis")
    if axis < 0:
        raise SpecError("scan's axis must be non-negative", span)
    length = b["length"]
    for x in xs_flat:
        if x.type.rank <= axis:
            raise ShapeError(f"scan over axis {axis} of {x.type}: no such axis", span)
        d = x.type.shape[axis]
        if length is None:
            length = d
        elif str(length) != str(d):
            raise ShapeError(f"scanned inputs disagree on the length of axis {axis}: {length} vs {d}", span)
    if length is None:
        raise SpecError("scan without `xs` needs `length`", span)
    if isinstance(length, bool) or not isinstance(length, (int, str)) or \
            isinstance(length, int) and length < 0:
        raise SpecError(f"scan's `length` must be a non-negative integer or a dim, found "
                        f"{_describe(length)}", span)
    length = str(length) if isinstance(length, SymDim) else length
    init_leaves, rebuild = _flatten(b["init"], span, "init")
    init_leaves = [_tensor(ev, v, span, "init") for v in init_leaves]

    outer = ev.frame
    body = Graph(f"{outer.graph.name}.scan")
    frame = Frame(body, outer, length=length, axis=axis)
    carries = [Tensor(frame, body.add("input", (), {"name": f"carry{i}", "dtype": t.type.dtype,
                                                      "shape": t.type.shape}))
               for i, t in enumerate(init_leaves)]
    slices = []
    for i, x in enumerate(xs_flat):
        t = x.type
        shape = t.shape[:axis] + t.shape[axis + 1:]
        slices.append(Tensor(frame, body.add("input", (), {"name": f"x{i}", "dtype": t.dtype,
                                                             "shape": shape})))
    ev.frame = frame
    try:
        x_arg = slices[0] if x_single else tuple(slices)
        res = ev.call(f, [rebuild(carries), x_arg] if xs_flat else [rebuild(carries)], {}, span)
        if not isinstance(res, tuple) or len(res) != 2:
            raise SpecError(f"a scan body must return (new_carry, y), found {_describe(res)}", span)
        new_leaves, rebuild_new = _flatten(res[0], span, "the new carry")
        if len(new_leaves) != len(init_leaves):
            raise SpecError(f"the scan body returns {len(new_leaves)} carried values, init has "
                            f"{len(init_leaves)}", span)
        y_leaves, rebuild_y = _flatten(res[1], span, "y")
        new_nodes = [ev.lift(ev.to_tensor(v, span, like=c)) for v, c in zip(new_leaves, carries)]
        for i, (n, c) in enumerate(zip(new_nodes, carries)):
            if body.type(n) != c.type:
                raise ShapeError(f"scan carry {i} enters as {c.type} but the body returns "
                                 f"{body.type(n)}", span)
        y_nodes = [ev.lift(_tensor(ev, v, span, "y")) for v in y_leaves]
    finally:
        ev.frame = outer
    # body inputs in the contract's order: carries, x slices (incl. hoisted noise), captures
    hoisted = [n for _, n in frame.extra_xs]
    captures = [frame.captures[o] for o in frame.capture_list]
    body.inputs = [c.node for c in carries] + [s.node for s in slices] + hoisted + captures
    body.meta["results"] = new_nodes + y_nodes
    xs_all = list(xs_flat) + [t for t, _ in frame.extra_xs]
    const_nodes = list(frame.capture_list)
    node = outer.graph.add("scan", [ev.lift(t) for t in init_leaves] + [ev.lift(t) for t in xs_all]
                           + const_nodes,
                           {"body": body, "n_carry": len(init_leaves), "n_x": len(xs_all),
                            "n_const": len(const_nodes), "axis": axis, "reverse": bool(b["reverse"]),
                            "length": length}, span=span)
    outs = [Tensor(outer, outer.graph.add("tuple_get", [node], {"index": i}, span=span))
            for i in range(len(init_leaves) + len(y_nodes))]
    return (rebuild_new(outs[:len(init_leaves)]), rebuild_y(outs[len(init_leaves):]))


def _flatten(tree, span, what):
    """Leaves of a nested tuple of tensors, and a function rebuilding the structure."""
    if isinstance(tree, Record):
        tree = tree.as_tuple()
    if isinstance(tree, tuple):
        parts = [_flatten(t, span, what) for t in tree]
        leaves = [leaf for p in parts for leaf in p[0]]

        def rebuild(vals, parts=parts):
            out, i = [], 0
            for p_leaves, p_rebuild in parts:
                out.append(p_rebuild(vals[i:i + len(p_leaves)]))
                i += len(p_leaves)
            return tuple(out)
        return leaves, rebuild
    if tree is None:
        return [], lambda vals: ()
    return [tree], lambda vals: vals[0]


@builtin(lazy=True)
def repeat(ev, args, kwargs, span, scope):
    """repeat(n, Layer(...)): n instances of the layer, applied in sequence"""
    if kwargs or len(args) != 2:
        raise SpecError("repeat takes two arguments: repeat(n, Layer(...))", span)
    n = ev.eval(args[0], scope)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SpecError(f"repeat needs a positive integer count, found {_describe(n)}", args[0].span)
    items = []
    for _ in range(n):
        v = ev.eval(args[1], scope)
        if not isinstance(v, Instance):
            raise SpecError(f"repeat needs a layer instance such as `Block(64)`, found {_describe(v)}",
                            args[1].span)
        items.append(v)
    return Sequential(items, owner=ev.instance)


@builtin()
def identity(ev, args, kwargs, span):
    """identity(x) = x"""
    return _bind("identity", args, kwargs, span, ["x"], {})["x"]


@builtin("error")
def error_(ev, args, kwargs, span):
    """error(message): stop compiling with a located error, e.g. for an unknown
    value of a string hyperparameter"""
    msg = _bind("error", args, kwargs, span, ["message"], {})["message"]
    raise SpecError(msg if isinstance(msg, str) else _describe(msg), span)


@builtin("len")
def len_(ev, args, kwargs, span):
    """len(tuple)"""
    v = _bind("len", args, kwargs, span, ["x"], {})["x"]
    if isinstance(v, tuple):
        return len(v)
    raise SpecError(f"len needs a tuple, found {_describe(v)}", span)


# ---- indexing ------------------------------------------------------------------------------------

def index_tensor(ev, x: Tensor, subs, scope, span):
    """x[...]: slices, integers (drop the axis), `...`, and one integer tensor (gather)."""
    rank = x.type.rank
    n_ell = sum(isinstance(s, A.Ellipsis_) for s in subs)
    if n_ell > 1:
        raise SpecError("at most one `...` in an index", span)
    explicit = len(subs) - n_ell
    if explicit > rank:
        raise ShapeError(f"too many indices ({explicit}) for {x.type}", span)
    full = []
    for s in subs:
        if isinstance(s, A.Ellipsis_):
            full += [A.Slice(None, None, None)] * (rank - explicit)
        else:
            full.append(s)
    full += [A.Slice(None, None, None)] * (rank - len(full))
    axis = 0
    for s in full:
        if isinstance(s, A.Slice):
            start, stop, step = (None if p is None else ev.eval(p, scope) for p in (s.start, s.stop, s.step))
            for p in (start, stop, step):
                if p is not None and (isinstance(p, bool) or not isinstance(p, int)):
                    raise SpecError(f"slice bounds must be integers, found {_describe(p)}", span)
            if step == 0:
                raise SpecError("a slice step must not be zero", span)
            if (start, stop, step) != (None, None, None) and (start or 0, stop, step or 1) != (0, None, 1):
                x = ev.add("slice", [x], span, axis=axis, start=start, stop=stop, step=step or 1)
            axis += 1
        elif isinstance(s, int) and not isinstance(s, bool):
            d = x.type.shape[axis]
            if isinstance(d, int) and not -d <= s < d:
                raise ShapeError(f"index {s} is out of range for axis {axis} of size {d}", span)
            stop = s + 1 if s != -1 else None
            x = ev.add("slice", [x], span, axis=axis, start=s, stop=stop, step=1)
            x = ev.add("squeeze", [x], span, axis=axis)
        elif isinstance(s, Tensor):
            x = ev.add("take", [x, s], span, axis=axis)
            axis += s.type.rank
        else:
            raise SpecError(f"cannot index with {_describe(s)}", span)
    return x


# ---- initializers (the scope of `param W: [...] ~ init`) -------------------------------------------

def _init(kind, params, defaults):
    def fn(ev, args, kwargs, span):
        b = _bind(kind, args, kwargs, span, params, defaults)
        vals = []
        for p in params:
            v = b[p]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"initializer `{kind}`: `{p}` must be a number, found {_describe(v)}",
                                span)
            vals.append(float(v))
        return InitSpec(kind, tuple(vals))
    return fn


for _name, _params, _defaults in [
        ("zeros", [], {}), ("ones", [], {}),
        ("normal", ["mean", "std"], {"mean": 0.0, "std": 1.0}),
        ("uniform", ["low", "high"], {"low": -0.05, "high": 0.05}),
        ("glorot", ["gain"], {"gain": 1.0}), ("glorot_normal", ["gain"], {"gain": 1.0}),
        ("he", ["gain"], {"gain": 1.0}), ("he_uniform", ["gain"], {"gain": 1.0}),
        ("orthogonal", ["gain"], {"gain": 1.0}), ("const", ["value"], {}),
        ("lecun", ["gain"], {"gain": 1.0})]:
    builtin(_name, table=INIT_SCOPE)(_init(_name, _params, _defaults))
INIT_SCOPE["xavier"] = INIT_SCOPE["glorot"]
INIT_SCOPE["kaiming"] = INIT_SCOPE["he"]

from . import builtins_fused  # noqa: E402,F401  (composite ops: registers more builtins)
