"""Shape primitives: reshape, transpose, axes in and out, broadcasting, concat,
slicing, gather/scatter along an axis, one-hot, padding and flipping.

Symbolic dims flow through every rule: ``reshape`` checks element counts with
`dim_prod`/`dim_div`, ``slice``/``pad``/``concat`` do offset arithmetic with
`dim_lin`. Where a lowering needs a symbolic dim's value it asks ``cg.dim`` /
``o.dims``; ``reshape`` leaves one unknown dim to the backend (-1) so that the common
``[B, T, D] -> [B*T, D]`` needs no symbol at run time.
"""
from __future__ import annotations

import numpy as np

from compiler.primitives.table import defprim
from compiler.core.types import (TensorType, TypeMismatch, broadcast_shapes, dim_div, dim_prod, norm_axis, shape_str)
from compiler.primitives._rules import dim_lin

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -2 ** 63


def _require_int(t: TensorType, what: str) -> None:
    if t.dtype not in ("i64", "i32"):
        raise TypeMismatch(f"{what} must be an integer tensor, got {t}")


def _src(cg, d) -> str:
    """Source of one dim: ints literally, symbols read at run time."""
    return str(d) if isinstance(d, int) else cg.dim(d)


def _tuple_src(cg, dims) -> str:
    return "(" + "".join(f"{_src(cg, d)}, " for d in dims) + ")"


def _onnx_vec(o, dims) -> str:
    dims = list(dims)
    return o.ints(dims) if all(isinstance(d, int) for d in dims) else o.dims(dims)


def _axes(axis, rank: int) -> tuple[int, ...]:
    """An int or a tuple of ints, normalised (order kept, duplicates rejected)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = tuple(norm_axis(a, rank) for a in axes)
    if len(set(out)) != len(out):
        raise TypeMismatch(f"repeated axis in {axis}")
    return out


# ---- reshape ------------------------------------------------------------------

def _reshape_type(ts, attrs) -> TensorType:
    (t,) = ts
    shape = tuple(attrs["shape"])
    if sum(1 for d in shape if d == -1) > 1:
        raise TypeMismatch(f"at most one -1 allowed in the target shape {shape_str(shape)}")
    if any(isinstance(d, int) and d < -1 for d in shape):
        raise TypeMismatch(f"negative dim in the target shape {shape_str(shape)}")
    total = dim_prod(t.shape)
    known = dim_prod(d for d in shape if d != -1)
    if -1 in shape:
        rest = dim_div(total, known)
        if rest is None:
            raise TypeMismatch(f"cannot reshape {t} to {shape_str(shape)}: "
                               f"{total} elements are not a multiple of {known}")
        shape = tuple(rest if d == -1 else d for d in shape)
    elif known != total:
        raise TypeMismatch(f"cannot reshape {t} ({total} elements) to "
                           f"{shape_str(shape)} ({known} elements)")
    return t.with_shape(shape)


def _reshape_target(shape) -> tuple:
    # Let the backend infer one symbolic dim (-1) rather than compute it: a symbol
    # like "B*T" is then never read at run time.
    # Only when it is the one symbolic dim and every other dim is a static non-zero:
    # a -1 beside a dim that is 0 at run time is ambiguous (empty tensors), and
    # NumPy, torch and ONNX all refuse it, so then every dim is given explicitly.
    dims = list(shape)
    sym = [i for i, d in enumerate(dims) if isinstance(d, str)]
    if len(sym) == 1 and all(d != 0 for d in dims):
        dims[sym[0]] = -1
    return tuple(dims)


reshape = defprim("reshape", "x viewed with a new shape of the same size (one dim may be -1)",
                  1, _reshape_type)


@reshape.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("reshape", ct, shape=tuple(g.type(x).shape))]


reshape.numpy(lambda cg, n, x: f"np.reshape({x}, {_tuple_src(cg, _reshape_target(n.type.shape))})")
reshape.torch(lambda cg, n, x: f"torch.reshape({x}, {_tuple_src(cg, _reshape_target(n.type.shape))})")
# allowzero: a dim that is 0 at run time means 0 (empty tensors), not "copy the input's"
reshape.onnx(lambda o, n, x: o.op("Reshape", x, _onnx_vec(o, _reshape_target(n.type.shape)),
                                  allowzero=1))


# ---- transpose -------------------------------------------------------------------

def _perm(attrs, rank: int) -> tuple[int, ...]:
    perm = attrs.get("perm")
    if perm is None:
        return tuple(reversed(range(rank)))
    perm = tuple(perm)
    if sorted(p % rank if rank else p for p in perm) != list(range(rank)) or \
            any(not -rank <= p < rank for p in perm):
        raise TypeMismatch(f"perm {perm} is not a permutation of the {rank} axes")
    return tuple(p % rank for p in perm)


def _transpose_type(ts, attrs) -> TensorType:
    (t,) = ts
    perm = _perm(attrs, t.rank)
    return t.with_shape(tuple(t.shape[p] for p in perm))


transpose = defprim("transpose", "y.shape[i] = x.shape[perm[i]] (perm None reverses the axes)",
                    1, _transpose_type)


@transpose.vjp
def _(g, n, ct):
    perm = _perm(n.attrs, len(n.type.shape))
    inv = tuple(int(i) for i in np.argsort(perm))
    return [g.op("transpose", ct, perm=inv)]


transpose.numpy(lambda cg, n, x: f"{x}.transpose({_perm(n.attrs, len(n.type.shape))})")
transpose.torch(lambda cg, n, x: f"{x}.permute({_perm(n.attrs, len(n.type.shape))})")
transpose.onnx(lambda o, n, x: o.op("Transpose", x, perm=list(_perm(n.attrs, len(n.type.shape)))))


# ---- expand_dims / squeeze -----------------------------------------------------------

def _expand_dims_type(ts, attrs) -> TensorType:
    (t,) = ts
    a = norm_axis(attrs["axis"], t.rank + 1)
    return t.with_shape(t.shape[:a] + (1,) + t.shape[a:])


expand_dims = defprim("expand_dims", "x with a new length-1 axis at position axis", 1,
                      _expand_dims_type)


@expand_dims.vjp
def _(g, n, ct):
    a = norm_axis(n.attrs["axis"], len(n.type.shape))
    return [g.op("squeeze", ct, axis=a)]


def _ed_axis(n) -> int:
    return norm_axis(n.attrs["axis"], len(n.type.shape))


# an index `x[:, None]` rather than np.expand_dims, whose Python wrapper costs ~3 us
expand_dims.numpy(lambda cg, n, x: f"{x}[{':, ' * _ed_axis(n)}None]")
expand_dims.torch(lambda cg, n, x: f"torch.unsqueeze({x}, {_ed_axis(n)})")
expand_dims.onnx(lambda o, n, x: o.op("Unsqueeze", x, o.ints([_ed_axis(n)])))


def _squeeze_axes(t: TensorType, axis) -> tuple[int, ...]:
    if axis is None:
        raise TypeMismatch("squeeze needs an axis")
    return tuple(sorted(_axes(axis, t.rank)))


def _squeeze_type(ts, attrs) -> TensorType:
    (t,) = ts
    axes = _squeeze_axes(t, attrs.get("axis"))
    for a in axes:
        if t.shape[a] != 1:
            raise TypeMismatch(f"cannot squeeze axis {a} of {t}: its length is {t.shape[a]}, not 1")
    return t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))


squeeze = defprim("squeeze", "x without its length-1 axis `axis` (an int or a tuple)", 1, _squeeze_type)


@squeeze.vjp
def _(g, n, ct):
    (x,) = n.args
    for a in _squeeze_axes(g.type(x), n.attrs.get("axis")):  # ascending: positions stay valid
        ct = g.op("expand_dims", ct, axis=a)
    return [ct]


def _sq_axes_from_node(n) -> tuple[int, ...]:
    # the input's rank is the result's plus the number of squeezed axes
    axis = n.attrs["axis"]
    k = 1 if isinstance(axis, int) else len(axis)
    return tuple(sorted(_axes(axis, len(n.type.shape) + k)))


squeeze.numpy(lambda cg, n, x: f"np.squeeze({x}, axis={_sq_axes_from_node(n)})")
squeeze.torch(lambda cg, n, x: f"torch.squeeze({x}, {_sq_axes_from_node(n)})")
squeeze.onnx(lambda o, n, x: o.op("Squeeze", x, o.ints(list(_sq_axes_from_node(n)))))


# ---- broadcasting ---------------------------------------------------------------------

def _broadcast_check(t: TensorType, shape: tuple) -> None:
    try:
        out = broadcast_shapes(t.shape, shape)
    except TypeMismatch:
        out = None
    if len(t.shape) > len(shape) or out != shape:
        raise TypeMismatch(f"cannot broadcast {shape_str(t.shape)} to {shape_str(shape)}")


def _broadcast_to_type(ts, attrs) -> TensorType:
    (t,) = ts
    shape = tuple(attrs["shape"])
    _broadcast_check(t, shape)
    return t.with_shape(shape)


broadcast_to = defprim("broadcast_to", "x repeated along broadcast axes to the given shape", 1,
                       _broadcast_to_type)


@broadcast_to.vjp
def _(g, n, ct):
    return [g.unbroadcast(ct, n.args[0])]


broadcast_to.numpy(lambda cg, n, x: f"np.broadcast_to({x}, {_tuple_src(cg, n.type.shape)})")
broadcast_to.torch(lambda cg, n, x: f"torch.broadcast_to({x}, {_tuple_src(cg, n.type.shape)})")
broadcast_to.onnx(lambda o, n, x: o.op("Expand", x, _onnx_vec(o, n.type.shape)))


def _broadcast_like_type(ts, attrs) -> TensorType:
    t, like = ts
    _broadcast_check(t, tuple(like.shape))
    return t.with_shape(like.shape)


broadcast_like = defprim("broadcast_like", "x broadcast to like's shape (like's values unused)", 2,
                         _broadcast_like_type, static_args=(1,))


@broadcast_like.vjp
def _(g, n, ct):
    return [g.unbroadcast(ct, n.args[0]), None]


broadcast_like.numpy("np.broadcast_to({0}, np.shape({1}))")
broadcast_like.torch("{0}.expand_as({1})")
broadcast_like.onnx(lambda o, n, x, like: o.op("Expand", x, o.op("Shape", like)))


# ---- concat ------------------------------------------------------------------------------

def _concat_type(ts, attrs) -> TensorType:
    if not ts:
        raise TypeMismatch("concat needs at least one tensor")
    t0 = ts[0]
    a = norm_axis(attrs["axis"], t0.rank)
    for i, t in enumerate(ts[1:], 1):
        if t.dtype != t0.dtype:
            raise TypeMismatch(f"dtypes differ: argument 0 is {t0.dtype}, argument {i} is {t.dtype}")
        if t.rank != t0.rank or any(x != y for j, (x, y) in enumerate(zip(t.shape, t0.shape)) if j != a):
            raise TypeMismatch(f"shapes must agree except on axis {a}: argument 0 is "
                               f"{shape_str(t0.shape)}, argument {i} is {shape_str(t.shape)}")
    total = dim_lin(*((1, t.shape[a]) for t in ts))
    if total is None:
        raise TypeMismatch("cannot add the symbolic lengths "
                           + " + ".join(str(t.shape[a]) for t in ts) + f" along axis {a}")
    return t0.with_shape(t0.shape[:a] + (total,) + t0.shape[a + 1:])


concat = defprim("concat", "[x_0, x_1, ...] joined along axis", None, _concat_type)


@concat.vjp
def _(g, n, ct):
    # Slice each piece back out. Bounds stay static ints where possible: offsets
    # before a symbolic piece count from the start, those after it from the end.
    a = norm_axis(n.attrs["axis"], len(n.type.shape))
    total = n.type.shape[a]
    out, start = [], 0
    for x in n.args:
        length = g.type(x).shape[a]
        stop = dim_lin((1, start), (1, length))
        rest = dim_lin((1, total), (-1, stop))
        if isinstance(start, int) and isinstance(stop, int):
            lo, hi = start, stop
        elif isinstance(rest, int):
            hi = -rest if rest else None
            lo = -(length + rest) if isinstance(start, str) and isinstance(length, int) else start
        else:
            lo, hi = start, stop
        out.append(g.op("slice", ct, axis=a, start=lo, stop=hi, step=1))
        start = stop
    return out


def _cat_axis(n) -> int:
    return norm_axis(n.attrs["axis"], len(n.type.shape))


concat.numpy(lambda cg, n, *xs: f"np.concatenate([{', '.join(xs)}], axis={_cat_axis(n)})")
concat.torch(lambda cg, n, *xs: f"torch.cat([{', '.join(xs)}], dim={_cat_axis(n)})")
concat.onnx(lambda o, n, *xs: o.op("Concat", *xs, axis=_cat_axis(n)))


# ---- slice ---------------------------------------------------------------------------------

def slice_bounds(dim, start, stop, step):
    """(first index, count) of ``range(dim)[start:stop:step]`` as Dims.

    Static dims follow NumPy exactly (negatives, clamping, negative steps). With a
    symbolic dim (or a symbolic bound) the step must be 1 and bounds are taken to be
    in range: a negative int counts from the end, a symbol is a position.
    """
    step = 1 if step is None else step
    if step == 0:
        raise TypeMismatch("slice step cannot be 0")
    if isinstance(dim, int) and not isinstance(start, str) and not isinstance(stop, str):
        r = range(dim)[slice(start, stop, step)]
        return (r.start if len(r) else 0), len(r)
    if step != 1:
        raise TypeMismatch(f"a slice of the symbolic length {dim} needs step 1, got {step}")

    def pos(b, default):
        if b is None:
            return default
        if isinstance(b, int) and b < 0:
            return dim_lin((1, dim), (1, b))
        return b

    first, last = pos(start, 0), pos(stop, dim)
    count = dim_lin((1, last), (-1, first))
    if count is None:
        raise TypeMismatch(f"cannot tell the length of [{start}:{stop}] of an axis of length {dim}")
    if isinstance(count, int) and count < 0:
        raise TypeMismatch(f"slice [{start}:{stop}] of an axis of length {dim} is empty or reversed")
    return first, count


def _slice_args(attrs, rank):
    a = norm_axis(attrs["axis"], rank)
    step = attrs.get("step")
    return a, attrs.get("start"), attrs.get("stop"), (1 if step is None else step)


def _slice_type(ts, attrs) -> TensorType:
    (t,) = ts
    a, start, stop, step = _slice_args(attrs, t.rank)
    _, count = slice_bounds(t.shape[a], start, stop, step)
    return t.with_shape(t.shape[:a] + (count,) + t.shape[a + 1:])


slice_ = defprim("slice", "x[..., start:stop:step, ...] on one axis (NumPy semantics)", 1,
                 _slice_type)


@slice_.vjp
def _(g, n, ct):
    (x,) = n.args
    xt = g.type(x)
    a, start, stop, step = _slice_args(n.attrs, xt.rank)
    dim = xt.shape[a]
    first, count = slice_bounds(dim, start, stop, step)

    def pad_axis(v, before, after):
        pads = tuple((before, after) if i == a else (0, 0) for i in range(xt.rank))
        return g.op("pad", v, pads=pads, value=0.0)

    if count == 0:  # nothing selected: the gradient is zeros of x's shape
        return [pad_axis(ct, dim, 0)]
    if step == 1:
        return [pad_axis(ct, first, dim_lin((1, dim), (-1, first), (-1, count)))]
    # Strided (static dim): spread ct onto every |step|-th slot by padding a new
    # axis of length |step| and folding it in, then shift into place. Only our own
    # linear ops are used, so the rule is exact and differentiable again.
    if step < 0:
        ct = g.op("flip", ct, axis=a)
        first, step = first + step * (count - 1), -step
    e = g.op("expand_dims", ct, axis=a + 1)
    e = g.op("pad", e, pads=tuple((0, step - 1) if i == a + 1 else (0, 0) for i in range(xt.rank + 1)),
             value=0.0)
    shape = list(g.type(ct).shape)
    shape[a] = count * step
    spread = g.op("reshape", e, shape=tuple(shape))
    tail = dim - first - count * step
    if tail < 0:
        spread = g.op("slice", spread, axis=a, start=0, stop=count * step + tail, step=1)
        tail = 0
    return [pad_axis(spread, first, tail)]


def _bound_src(cg, b) -> str:
    return "" if b is None else _src(cg, b)


def _slice_numpy(cg, n, x):
    a, start, stop, step = _slice_args(n.attrs, len(n.type.shape))
    return f"{x}[{':, ' * a}{_bound_src(cg, start)}:{_bound_src(cg, stop)}:{step}]"


def _slice_torch(cg, n, x):
    a, start, stop, step = _slice_args(n.attrs, len(n.type.shape))
    if step > 0:
        return f"{x}[{':, ' * a}{_bound_src(cg, start)}:{_bound_src(cg, stop)}:{step}]"
    # torch has no negative steps: flip, then take the mirrored slice. Index j of x
    # is index -1-j of the flipped axis, which also maps clamping correctly, so
    # the input length is not needed.
    lo, hi = (None if b is None else -1 - b for b in (start, stop))
    return f"torch.flip({x}, ({a},))[{':, ' * a}{_bound_src(cg, lo)}:{_bound_src(cg, hi)}:{-step}]"


def _slice_onnx(o, n, x):
    a, start, stop, step = _slice_args(n.attrs, len(n.type.shape))
    if start is None:
        start = 0 if step > 0 else INT64_MAX
    if stop is None:
        stop = INT64_MAX if step > 0 else INT64_MIN
    return o.op("Slice", x, _onnx_vec(o, [start]), _onnx_vec(o, [stop]), o.ints([a]), o.ints([step]))


slice_.numpy(_slice_numpy)
slice_.torch(_slice_torch)
slice_.onnx(_slice_onnx)


# ---- take / scatter_add ------------------------------------------------------------------

def _take_type(ts, attrs) -> TensorType:
    t, idx = ts
    _require_int(idx, "the index")
    a = norm_axis(attrs["axis"], t.rank)
    return t.with_shape(t.shape[:a] + tuple(idx.shape) + t.shape[a + 1:])


take = defprim("take", "y[..., j..., ...] = x[..., idx[j...], ...] along axis (NumPy take)", 2,
               _take_type, static_args=(1,))


@take.vjp
def _(g, n, ct):
    x, idx = n.args
    return [g.op("scatter_add", x, idx, ct, axis=n.attrs["axis"]), None]


def _take_numpy(cg, n, x, idx):
    return f"np.take({x}, {idx}, axis={n.attrs['axis']})"


def _take_torch(cg, n, x, idx):
    a = n.attrs["axis"]
    # one advanced index after full slices is exactly NumPy take (negatives wrap);
    # a negative axis is resolved against x's rank at run time
    lead = f"(slice(None),) * {a}" if a >= 0 else f"(slice(None),) * ({x}.dim() + ({a}))"
    return f"{x}[{lead} + ({idx},)]"


take.numpy(_take_numpy)
take.torch(_take_torch)
take.onnx(lambda o, n, x, idx: o.op("Gather", x, idx, axis=n.attrs["axis"]))


def _scatter_add_type(ts, attrs) -> TensorType:
    like, idx, upd = ts
    _require_int(idx, "the index")
    a = norm_axis(attrs["axis"], like.rank)
    want = like.shape[:a] + tuple(idx.shape) + like.shape[a + 1:]
    if tuple(upd.shape) != tuple(want):
        raise TypeMismatch(f"updates must have shape {shape_str(want)} (like {shape_str(like.shape)} "
                           f"with axis {a} replaced by the index shape {shape_str(idx.shape)}), "
                           f"found {shape_str(upd.shape)}")
    if upd.dtype != like.dtype:
        raise TypeMismatch(f"dtypes differ: like is {like.dtype}, updates are {upd.dtype}")
    return upd.with_shape(like.shape)


scatter_add = defprim("scatter_add", "zeros like `like`, then y[.., idx[j..], ..] += upd[.., j.., ..]",
                      3, _scatter_add_type, static_args=(0, 1))


@scatter_add.vjp
def _(g, n, ct):
    like, idx, upd = n.args
    return [None, None, g.op("take", ct, idx, axis=n.attrs["axis"])]


def _sa_axis(n) -> int:
    return norm_axis(n.attrs["axis"], len(n.type.shape))


scatter_add.numpy(lambda cg, n, like, idx, upd:
                  f"{cg.helper('scatter_add_axis')}({like}, {idx}, {upd}, {_sa_axis(n)})")


def _scatter_add_torch(cg, n, like, idx, upd):
    a = _sa_axis(n)
    # index_add wants non-negative 1-D indices and the index axes folded into one
    return (f"torch.zeros_like({like}, dtype={upd}.dtype).index_add({a}, "
            f"torch.remainder({idx}, {like}.shape[{a}]).reshape(-1), "
            f"{upd}.reshape(tuple({like}.shape[:{a}]) + (-1,) + tuple({like}.shape[{a + 1}:])))")


def _scatter_add_onnx(o, n, like, idx, upd):
    a = _sa_axis(n)
    r = len(n.type.shape)
    zero = o.const(np.zeros((), dtype=o.np_dtype(n.type.dtype)))
    out = o.op("Expand", zero, o.op("Shape", like))
    # ScatterElements wants indices shaped like the updates: fold the index axes
    # into one and broadcast the indices across the other axes.
    length = o.op("Shape", like, start=a, end=a + 1)
    idx = o.op("Mod", o.cast(idx, "i64"), length)
    idx = o.op("Reshape", idx, o.ints([1] * a + [-1] + [1] * (r - a - 1)))
    parts = []
    if a > 0:
        parts.append(o.op("Shape", like, start=0, end=a))
    parts.append(o.ints([-1]))
    if a < r - 1:
        parts.append(o.op("Shape", like, start=a + 1))
    upd = o.op("Reshape", upd, parts[0] if len(parts) == 1 else o.op("Concat", *parts, axis=0))
    idx = o.op("Expand", idx, o.op("Shape", upd))
    return o.op("ScatterElements", out, idx, upd, axis=a, reduction="add")


scatter_add.torch(_scatter_add_torch)
scatter_add.onnx(_scatter_add_onnx)


# ---- one_hot -----------------------------------------------------------------------------

def _one_hot_type(ts, attrs) -> TensorType:
    (idx,) = ts
    _require_int(idx, "one_hot's input")
    return TensorType(attrs.get("dtype", "f32"), tuple(idx.shape) + (attrs["depth"],))


# out-of-range indices give an all-zero row on every backend (NumPy comparison
# semantics), never an error or a wrapped-around hot position
one_hot = defprim("one_hot", "y[..., k] = (idx[...] == k) for k < depth", 1, _one_hot_type,
                  nondiff="integer input")
one_hot.numpy(lambda cg, n, idx: f"({idx}[..., None] == "
                                 f"np.arange({_src(cg, n.attrs['depth'])})).astype({cg.dtype(n.type.dtype)})")
one_hot.torch(lambda cg, n, idx: f"(torch.unsqueeze({idx}, -1) == torch.arange("
                                 f"{_src(cg, n.attrs['depth'])}, device=_dev)).to({cg.dtype(n.type.dtype)})")


def _one_hot_onnx(o, n, idx):
    rng = o.op("Range", o.const(np.array(0, dtype=np.int64)), o.dim_scalar(n.attrs["depth"]),
               o.const(np.array(1, dtype=np.int64)))
    hot = o.op("Equal", o.op("Unsqueeze", o.cast(idx, "i64"), o.ints([-1])), rng)
    return o.cast(hot, n.type.dtype)


one_hot.onnx(_one_hot_onnx)


# ---- pad -----------------------------------------------------------------------------------

def _pads(attrs, rank: int) -> tuple:
    pads = tuple(tuple(p) for p in attrs["pads"])
    if len(pads) != rank or any(len(p) != 2 for p in pads):
        raise TypeMismatch(f"pads must hold one (before, after) pair per axis ({rank}), got {attrs['pads']}")
    if any(isinstance(v, int) and v < 0 for p in pads for v in p):
        raise TypeMismatch(f"pads must be non-negative, got {attrs['pads']}")
    return pads


def _pad_type(ts, attrs) -> TensorType:
    (t,) = ts
    pads = _pads(attrs, t.rank)
    shape = []
    for d, (b, a) in zip(t.shape, pads):
        out = dim_lin((1, d), (1, b), (1, a))
        if out is None:
            raise TypeMismatch(f"cannot add pads ({b}, {a}) to the length {d}")
        shape.append(out)
    return t.with_shape(shape)


pad = defprim("pad", "x surrounded by pads[i] = (before, after) copies of value on axis i", 1,
              _pad_type)


@pad.vjp
def _(g, n, ct):
    (x,) = n.args
    xt = g.type(x)
    for i, ((b, a), d) in enumerate(zip(_pads(n.attrs, xt.rank), xt.shape)):
        if b == 0 and a == 0:
            continue
        stop = (-a if a else None) if isinstance(a, int) else dim_lin((1, b), (1, d))
        ct = g.op("slice", ct, axis=i, start=b, stop=stop, step=1)
    return [ct]


def _pad_numpy(cg, n, x):
    pads = _pads(n.attrs, len(n.type.shape))
    src = "(" + "".join(f"({_src(cg, b)}, {_src(cg, a)}), " for b, a in pads) + ")"
    return f"np.pad({x}, {src}, constant_values={n.attrs.get('value', 0)!r})"


def _pad_torch(cg, n, x):
    pads = list(_pads(n.attrs, len(n.type.shape)))
    while pads and pads[0] == (0, 0):  # F.pad lists trailing axes first; skip unpadded leading ones
        pads.pop(0)
    flat = ", ".join(f"{_src(cg, b)}, {_src(cg, a)}" for b, a in reversed(pads))
    return f"F.pad({x}, [{flat}], value={n.attrs.get('value', 0)!r})" if pads else x


def _pad_onnx(o, n, x):
    pads = _pads(n.attrs, len(n.type.shape))
    vec = _onnx_vec(o, [b for b, _ in pads] + [a for _, a in pads])
    value = o.const(np.array(n.attrs.get("value", 0), dtype=o.np_dtype(n.type.dtype)))
    return o.op("Pad", x, vec, value)


pad.numpy(_pad_numpy)
pad.torch(_pad_torch)
pad.onnx(_pad_onnx)


# ---- flip ----------------------------------------------------------------------------------

def _flip_type(ts, attrs) -> TensorType:
    (t,) = ts
    _axes(attrs["axis"], t.rank)
    return t


flip = defprim("flip", "x reversed along axis (an int or a tuple)", 1, _flip_type)


@flip.vjp
def _(g, n, ct):
    return [g.op("flip", ct, axis=n.attrs["axis"])]


def _flip_axes(n) -> tuple[int, ...]:
    return _axes(n.attrs["axis"], len(n.type.shape))


flip.numpy(lambda cg, n, x: f"np.flip({x}, axis={_flip_axes(n)})")
flip.torch(lambda cg, n, x: f"torch.flip({x}, {_flip_axes(n)})")


def _flip_onnx(o, n, x):
    axes = list(_flip_axes(n))
    k = len(axes)
    return o.op("Slice", x, o.ints([-1] * k), o.ints([INT64_MIN] * k), o.ints(axes), o.ints([-1] * k))


flip.onnx(_flip_onnx)
