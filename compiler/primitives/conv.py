"""Convolution and pooling over 1 or 2 spatial dims, PyTorch layout.

x is ``[B, C, *S]``, a conv weight ``[O, C/groups, *K]``; conv is cross-correlation
(no kernel flip) with symmetric zero padding; bias is not part of it.

Gradients are closed under differentiation, so double backprop (WGAN-GP, Hessian
vector products) works to any order. ``conv`` is bilinear; its two adjoints are
primitives of their own:

* ``conv_transpose(y, w)``: the adjoint in x (PyTorch ``conv_transpose``);
* ``conv_weight_grad(x, y)``: the adjoint in w.

Each of the three is linear in each argument and the VJPs map among them
(``<g, conv_transpose(y, w)> = <conv(g, w), y> = <conv_weight_grad(g, y), w>``).
Max pooling routes gradients to each window's first maximum through the pair
``max_pool_scatter`` / ``max_pool_gather``, again adjoint to each other; average
pooling is a fixed depthwise kernel, so its VJP is a ``conv_transpose``. Average
pooling counts padded zeros (PyTorch's default ``count_include_pad=True``).
"""
from __future__ import annotations

from math import prod

import numpy as np

from compiler.primitives.table import MissingRule, defprim
from compiler.core.types import TensorType, TypeMismatch, dim_mul, shape_str
from compiler.primitives._rules import dim_lin

_LETTER = {1: "1d", 2: "2d"}


def _tup(v, n: int, default: int, what: str) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    if len(v) != n or not all(isinstance(i, int) for i in v):
        raise TypeMismatch(f"{what} must be an int or {n} ints (one per spatial dim), got {v}")
    return v


def _spatial_rank(x: TensorType, what="input") -> int:
    n = x.rank - 2
    if n not in (1, 2):
        raise TypeMismatch(f"{what} must be [batch, channels, *spatial] with 1 or 2 spatial dims, "
                           f"got {x}")
    return n


def conv_params(attrs, n: int):
    """(stride, padding, dilation, groups) normalised to tuples of n ints."""
    stride = _tup(attrs.get("stride"), n, 1, "stride")
    padding = _tup(attrs.get("padding"), n, 0, "padding")
    dilation = _tup(attrs.get("dilation"), n, 1, "dilation")
    groups = attrs.get("groups") or 1
    if min(stride + dilation) < 1 or min(padding) < 0 or groups < 1:
        raise TypeMismatch(f"stride and dilation must be >= 1 and padding >= 0, got "
                           f"stride={stride} padding={padding} dilation={dilation} groups={groups}")
    return stride, padding, dilation, groups


def _out_len(s, k: int, stride: int, pad: int, dil: int, what: str):
    """floor((s + 2 pad - dil (k-1) - 1) / stride) + 1, symbolic when stride is 1.

    ``what`` names the window in messages ("kernel", "pooling window")."""
    span = dil * (k - 1) + 1
    if isinstance(s, int):
        if s + 2 * pad < span:
            raise TypeMismatch(f"the {what} ({span} wide) is larger than the padded input "
                               f"({s} + 2*{pad})")
        return (s + 2 * pad - span) // stride + 1
    if stride != 1:
        raise TypeMismatch(f"a symbolic spatial length ({s}) needs stride 1, got {stride}")
    return dim_lin((1, s), (1, 2 * pad - span + 1))


def _check_float_pair(x: TensorType, w: TensorType, names: str) -> None:
    if not (x.is_float and w.is_float):
        raise TypeMismatch(f"expects float tensors ({names})")
    if x.dtype != w.dtype:
        raise TypeMismatch(f"dtypes differ: {x.dtype} vs {w.dtype} ({names})")


def _kernel_sizes(w: TensorType, names: str) -> tuple[int, ...]:
    ks = tuple(w.shape[2:])
    if not all(isinstance(k, int) for k in ks):
        raise TypeMismatch(f"kernel sizes must be static ({names})")
    return ks


# ---- conv -------------------------------------------------------------------------------

def _conv_type(ts, attrs) -> TensorType:
    x, w = ts
    names = f"x is {x}, w is {w}"
    n = _spatial_rank(x)
    if w.rank != x.rank:
        raise TypeMismatch(f"weight must be [out, in/groups, *kernel] with {n} kernel dims ({names})")
    _check_float_pair(x, w, names)
    stride, padding, dilation, groups = conv_params(attrs, n)
    c, o, cg = x.shape[1], w.shape[0], w.shape[1]
    if dim_lin((groups, cg)) != c:
        expects = f"{cg}" if groups == 1 else f"{cg} per group x {groups} groups"
        raise TypeMismatch(f"input channels differ: x has {c}, w expects {expects} ({names})")
    if isinstance(o, int) and o % groups:
        raise TypeMismatch(f"{o} output channels do not split into {groups} groups ({names})")
    ks = _kernel_sizes(w, names)
    so = tuple(_out_len(x.shape[2 + i], ks[i], stride[i], padding[i], dilation[i], "kernel")
               for i in range(n))
    return TensorType(x.dtype, (x.shape[0], o) + so)


conv = defprim("conv", "y[b,o,s] = sum_{c,k} x[b, c, s*stride + k*dilation - padding] w[o,c,k]",
               2, _conv_type)


def _output_padding(x_spatial, y_spatial, ks, stride, padding, dilation):
    """How much of x a conv_transpose of y must add back (the rows a stride skipped)."""
    out = []
    for s, so, k, st, p, d in zip(x_spatial, y_spatial, ks, stride, padding, dilation):
        if isinstance(s, int) and isinstance(so, int):
            out.append(s - ((so - 1) * st - 2 * p + d * (k - 1) + 1))
        else:
            out.append(0)  # symbolic lengths only arise with stride 1: nothing skipped
    return tuple(out)


def _same_conv_attrs(attrs, n):
    stride, padding, dilation, groups = conv_params(attrs, n)
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@conv.vjp
def _(g, n, ct):
    x, w = n.args
    tx, tw = g.type(x), g.type(w)
    k = tx.rank - 2
    at = _same_conv_attrs(n.attrs, k)
    op = _output_padding(tx.shape[2:], n.type.shape[2:], tw.shape[2:], at["stride"],
                         at["padding"], at["dilation"])
    dx = g.op("conv_transpose", ct, w, output_padding=op, **at)
    dw = g.op("conv_weight_grad", x, ct, kernel=tuple(tw.shape[2:]), **at)
    return [dx, dw]


def _conv_numpy(cg, n, x, w):
    # windows need the kernel size, which only w's shape knows: read it at run time
    s, p, d, groups = conv_params(n.attrs, len(n.type.shape) - 2)
    win = f"{cg.helper('conv_windows')}({x}, {w}.shape[2:], {s}, {p}, {d}, 0)"
    return f"{cg.helper('conv_forward')}({win}, {w}, {groups})"


def _conv_torch(cg, n, x, w):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    return f"F.conv{_LETTER[k]}({x}, {w}, stride={s}, padding={p}, dilation={d}, groups={groups})"


def _conv_onnx(o, n, x, w):
    s, p, d, groups = conv_params(n.attrs, len(n.type.shape) - 2)
    return o.op("Conv", x, w, strides=list(s), pads=list(p) * 2, dilations=list(d), group=groups)


conv.numpy(_conv_numpy)
conv.torch(_conv_torch)
conv.onnx(_conv_onnx)


# ---- conv_transpose: the adjoint of conv in x ----------------------------------------------

def _conv_transpose_type(ts, attrs) -> TensorType:
    y, w = ts
    names = f"x is {y}, w is {w}"
    n = _spatial_rank(y)
    if w.rank != y.rank:
        raise TypeMismatch(f"weight must be [in, out/groups, *kernel] with {n} kernel dims ({names})")
    _check_float_pair(y, w, names)
    stride, padding, dilation, groups = conv_params(attrs, n)
    op = _tup(attrs.get("output_padding"), n, 0, "output_padding")
    if y.shape[1] != w.shape[0]:
        raise TypeMismatch(f"input channels differ: x has {y.shape[1]}, w expects {w.shape[0]} ({names})")
    if isinstance(w.shape[0], int) and w.shape[0] % groups:
        raise TypeMismatch(f"{w.shape[0]} input channels do not split into {groups} groups ({names})")
    for i in range(n):
        if not 0 <= op[i] < max(stride[i], dilation[i]):
            raise TypeMismatch(f"output_padding {op} must be below stride or dilation ({names})")
    ks = _kernel_sizes(w, names)
    size = []
    for i in range(n):
        s = dim_lin((stride[i], y.shape[2 + i]),
                    (1, -stride[i] - 2 * padding[i] + dilation[i] * (ks[i] - 1) + op[i] + 1))
        if s is None or (isinstance(s, int) and s < 1):
            raise TypeMismatch(f"conv_transpose output length is not positive ({names})")
        size.append(s)
    return TensorType(y.dtype, (y.shape[0], dim_lin((groups, w.shape[1]))) + tuple(size))


conv_transpose = defprim(
    "conv_transpose", "adjoint of conv in x: x[b, c, s*stride + k*dilation - padding] += y[b,o,s] w[o,c,k]",
    2, _conv_transpose_type)


@conv_transpose.vjp
def _(g, n, ct):
    y, w = n.args
    tw = g.type(w)
    at = _same_conv_attrs(n.attrs, len(n.type.shape) - 2)
    # conv_transpose(y, w) = J_x^T y for conv(., w), so pairing with ct:
    # <ct, conv_transpose(y, w)> = <conv(ct, w), y>
    dy = g.op("conv", ct, w, **at)
    dw = g.op("conv_weight_grad", ct, y, kernel=tuple(tw.shape[2:]), **at)
    return [dy, dw]


def _op(n, k):
    return _tup(n.attrs.get("output_padding"), k, 0, "output_padding")


def _conv_transpose_numpy(cg, n, y, w):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    return f"{cg.helper('conv_transpose_nd')}({y}, {w}, {s}, {p}, {d}, {groups}, {_op(n, k)})"


def _conv_transpose_torch(cg, n, y, w):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    return (f"F.conv_transpose{_LETTER[k]}({y}, {w}, stride={s}, padding={p}, "
            f"output_padding={_op(n, k)}, groups={groups}, dilation={d})")


def _conv_transpose_onnx(o, n, y, w):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    return o.op("ConvTranspose", y, w, strides=list(s), pads=list(p) * 2, dilations=list(d),
                group=groups, output_padding=list(_op(n, k)))


conv_transpose.numpy(_conv_transpose_numpy)
conv_transpose.torch(_conv_transpose_torch)
conv_transpose.onnx(_conv_transpose_onnx)


# ---- conv_weight_grad: the adjoint of conv in w ----------------------------------------------

def _conv_weight_grad_type(ts, attrs) -> TensorType:
    x, y = ts
    names = f"x is {x}, y is {y}"
    n = _spatial_rank(x)
    if y.rank != x.rank:
        raise TypeMismatch(f"x and y must have the same rank ({names})")
    _check_float_pair(x, y, names)
    stride, padding, dilation, groups = conv_params(attrs, n)
    ks = _tup(attrs.get("kernel"), n, 1, "kernel")
    if x.shape[0] != y.shape[0]:
        raise TypeMismatch(f"batch sizes differ ({names})")
    c, o = x.shape[1], y.shape[1]
    for what, ch in (("input", c), ("output", o)):
        if not isinstance(ch, int) or ch % groups:
            raise TypeMismatch(f"{what} channels ({ch}) must be static and split into "
                               f"{groups} groups ({names})")
    so = tuple(_out_len(x.shape[2 + i], ks[i], stride[i], padding[i], dilation[i], "kernel")
               for i in range(n))
    if so != tuple(y.shape[2:]):
        raise TypeMismatch(f"y's spatial shape must be conv's output shape {shape_str(so)} ({names})")
    return TensorType(x.dtype, (o, c // groups) + ks)


conv_weight_grad = defprim(
    "conv_weight_grad",
    "adjoint of conv in w: dw[o,c,k] = sum_{b,s} x[b, c, s*stride + k*dilation - padding] y[b,o,s]",
    2, _conv_weight_grad_type)


@conv_weight_grad.vjp
def _(g, n, ct):
    x, y = n.args
    tx = g.type(x)
    at = _same_conv_attrs(n.attrs, tx.rank - 2)
    op = _output_padding(tx.shape[2:], g.type(y).shape[2:], n.type.shape[2:], at["stride"],
                         at["padding"], at["dilation"])
    # <ct, conv_weight_grad(x, y)> = <conv(x, ct), y>
    dx = g.op("conv_transpose", y, ct, output_padding=op, **at)
    dy = g.op("conv", x, ct, **at)
    return [dx, dy]


def _conv_weight_grad_numpy(cg, n, x, y):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    win = f"{cg.helper('conv_windows')}({x}, {tuple(n.type.shape[2:])}, {s}, {p}, {d}, 0)"
    return f"{cg.helper('conv_weight_grad_nd')}({win}, {y}, {groups})"


def _conv_weight_grad_torch(cg, n, x, y):
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    return (f"torch.nn.grad.conv{_LETTER[k]}_weight({x}, {tuple(n.type.shape)}, {y}, stride={s}, "
            f"padding={p}, dilation={d}, groups={groups})")


def _conv_weight_grad_onnx(o, n, x, y):
    # ONNX has no weight-gradient op, but it is itself a convolution: with the batch
    # as channels, x [Cg, G*B, *S] correlated with y [O, B, *S_out] (grouped by G)
    # at stride `dilation` and dilation `stride` gives [Cg, O, *K'] with K' >= K.
    k = len(n.type.shape) - 2
    s, p, d, groups = conv_params(n.attrs, k)
    cg, ks = n.type.shape[1], list(n.type.shape[2:])
    spatial = o.op("Shape", x, start=2)
    xr = o.op("Reshape", x, o.op("Concat", o.ints([0, groups, cg]), spatial, axis=0))
    xt = o.op("Transpose", xr, perm=[2, 1, 0] + list(range(3, 3 + k)))
    x2 = o.op("Reshape", xt, o.op("Concat", o.ints([cg, -1]), spatial, axis=0))
    y2 = o.op("Transpose", y, perm=[1, 0] + list(range(2, 2 + k)))
    z = o.op("Conv", x2, y2, strides=list(d), pads=list(p) * 2, dilations=list(s), group=groups)
    z = o.op("Slice", z, o.ints([0] * k), o.ints(ks), o.ints(list(range(2, 2 + k))))
    return o.op("Transpose", z, perm=[1, 0] + list(range(2, 2 + k)))


conv_weight_grad.numpy(_conv_weight_grad_numpy)
conv_weight_grad.torch(_conv_weight_grad_torch)
conv_weight_grad.onnx(_conv_weight_grad_onnx)


# ---- pooling -----------------------------------------------------------------------------------

def pool_params(attrs, n: int):
    """(kernel, stride, padding); stride defaults to the kernel (PyTorch)."""
    kernel = _tup(attrs["kernel"], n, 1, "kernel")
    stride = _tup(attrs.get("stride"), n, 1, "stride") if attrs.get("stride") is not None else kernel
    padding = _tup(attrs.get("padding"), n, 0, "padding")
    if min(kernel + stride) < 1 or min(padding) < 0:
        raise TypeMismatch(f"kernel and stride must be >= 1, padding >= 0: got kernel={kernel} "
                           f"stride={stride} padding={padding}")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        # a window made only of padding has no maximum (and PyTorch refuses it)
        raise TypeMismatch(f"padding {padding} must be at most half the kernel {kernel}")
    return kernel, stride, padding


def _pool_type(ts, attrs) -> TensorType:
    x = ts[0]
    n = _spatial_rank(x)
    if not x.is_float:
        raise TypeMismatch(f"expects a float tensor, got {x}")
    for t in ts[1:]:
        if t != x:
            raise TypeMismatch(f"both operands must have the same type, got {x} and {t}")
    kernel, stride, padding = pool_params(attrs, n)
    so = tuple(_out_len(x.shape[2 + i], kernel[i], stride[i], padding[i], 1, "pooling window")
               for i in range(n))
    return x.with_shape(tuple(x.shape[:2]) + so)


def _pool_src(n):
    return pool_params(n.attrs, len(n.type.shape) - 2)


def _windows(cg, n, x, fill):
    kernel, stride, padding = _pool_src(n)
    return f"{cg.helper('conv_windows')}({x}, {kernel}, {stride}, {padding}, {(1,) * len(kernel)}, {fill})"


def _spatial_axes(n):
    k = len(n.type.shape) - 2
    return tuple(range(-k, 0))


def _pool_onnx_attrs(n):
    kernel, stride, padding = _pool_src(n)
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=list(padding) * 2)


max_pool = defprim("max_pool", "y[b,c,s] = max_k x[b, c, s*stride + k - padding] (padding is -inf)",
                   1, _pool_type)


@max_pool.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("max_pool_scatter", x, ct, **n.attrs)]


max_pool.numpy(lambda cg, n, x: f"np.max({_windows(cg, n, x, '-np.inf')}, axis={_spatial_axes(n)})")
def _max_pool_torch(cg, n, x):
    # When the graph also routes a gradient through this pooling (its VJP's
    # max_pool_scatter, or max_pool_gather), the forward returns the argmax indices
    # too and the routing reads them: one pooling pass instead of two (eager
    # autograd saves the indices the same way). The values are the same.
    k = len(n.type.shape) - 2
    call = f"F.max_pool{_LETTER[k]}({x}, {', '.join(map(str, _pool_src(n)))}"
    key = _pool_key(n.args[0], n)
    if key not in _routed_pools(cg):
        return call + ")"
    vals, idx = cg.fresh("max_pool_values"), cg.fresh("max_pool_indices")
    cg.emit(f"{vals}, {idx} = {call}, return_indices=True)")
    _pool_memo(cg)[key] = (cg, cg.graph, idx)
    return vals


def _pool_key(x_id, n):
    k = len(n.type.shape) - 2
    return (x_id, tuple(map(tuple, pool_params(n.attrs, k))))


def _routed_pools(cg) -> set:
    """(x, pooling parameters) of every max_pool_scatter / max_pool_gather of cg.graph."""
    cache = cg.mod.__dict__.setdefault("routed_pools", {})
    hit = cache.get(id(cg.graph))
    if hit is None or hit[0] is not cg.graph:  # (the graph object is held: ids stay unique)
        g = cg.graph
        keys = set()
        for m in g.topo_order():
            node = g.node(m)
            if node.op in ("max_pool_scatter", "max_pool_gather"):
                keys.add(_pool_key(node.args[0], node))
        hit = cache[id(cg.graph)] = (cg.graph, keys)
    return hit[1]


def _pool_memo(cg) -> dict:
    return cg.mod.__dict__.setdefault("pool_indices", {})


max_pool.torch(_max_pool_torch)
max_pool.onnx(lambda o, n, x: o.op("MaxPool", x, **_pool_onnx_attrs(n)))


avg_pool = defprim("avg_pool", "y[b,c,s] = mean_k x[b, c, s*stride + k - padding] (padded zeros count)",
                   1, _pool_type)


@avg_pool.vjp
def _(g, n, ct):
    # Average pooling is a stride-`stride` conv of each channel with a constant
    # 1/|K| kernel: fold channels into the batch and apply that conv's adjoint.
    (x,) = n.args
    tx = g.type(x)
    k = tx.rank - 2
    kernel, stride, padding = pool_params(n.attrs, k)
    bc = dim_mul(tx.shape[0], tx.shape[1])
    w = g.const(1.0 / prod(kernel), tx.dtype, shape=(1, 1) + kernel)
    c = g.op("reshape", ct, shape=(bc, 1) + tuple(n.type.shape[2:]))
    op = _output_padding(tx.shape[2:], n.type.shape[2:], kernel, stride, padding, (1,) * k)
    dx = g.op("conv_transpose", c, w, stride=stride, padding=padding, dilation=(1,) * k, groups=1,
              output_padding=op)
    return [g.op("reshape", dx, shape=tuple(tx.shape))]


avg_pool.numpy(lambda cg, n, x: f"np.mean({_windows(cg, n, x, 0)}, axis={_spatial_axes(n)})")
avg_pool.torch(lambda cg, n, x: f"F.avg_pool{_LETTER[len(n.type.shape) - 2]}({x}, "
                                f"{', '.join(map(str, _pool_src(n)))}, count_include_pad=True)")
avg_pool.onnx(lambda o, n, x: o.op("AveragePool", x, count_include_pad=1, **_pool_onnx_attrs(n)))


# ---- max-pool gradient routing -----------------------------------------------------------------

def _pool_scatter_type(ts, attrs) -> TensorType:
    x, y = ts
    out = _pool_type([x], attrs)
    if y != out:
        raise TypeMismatch(f"the routed values must have the pooled type {out}, got {y}")
    return x


max_pool_scatter = defprim(
    "max_pool_scatter", "zeros like x; y[b,c,s] added where window s of x has its (first) maximum",
    2, _pool_scatter_type, static_args=(0,))


@max_pool_scatter.vjp
def _(g, n, ct):
    x, y = n.args
    at = {key: val for key, val in n.attrs.items() if key != "size"}
    return [None, g.op("max_pool_gather", x, ct, size=tuple(n.type.shape[2:]), **at)]


def _mps_numpy(cg, n, x, y):
    kernel, stride, padding = _pool_src(n)
    return (f"{cg.helper('max_pool_scatter_nd')}({_windows(cg, n, x, '-np.inf')}, {y}, {x}.shape, "
            f"{stride}, {padding})")


def _pool_indices_torch(n, x, cg=None):
    # PyTorch's indices are flat within each [b, c] plane; the forward pooling's own
    # when it returned them (`_max_pool_torch`), in this function of this graph
    if cg is not None:
        hit = _pool_memo(cg).get(_pool_key(n.args[0], n))
        if hit is not None and hit[0] is cg and hit[1] is cg.graph:
            return hit[2]
    k = len(n.type.shape) - 2
    args = ", ".join(map(str, pool_params(n.attrs, k)))
    return f"F.max_pool{_LETTER[k]}({x}, {args}, return_indices=True)[1]"


def _mps_torch(cg, n, x, y):
    if len(n.type.shape) == 4:
        # 2-D: autograd's own kernel for the routing (one call; no zeros, no scatter)
        kernel, stride, padding = pool_params(n.attrs, 2)
        return (f"torch.ops.aten.max_pool2d_with_indices_backward({y}, {x}, {list(kernel)}, "
                f"{list(stride)}, {list(padding)}, [1, 1], False, {_pool_indices_torch(n, x, cg)})")
    return (f"(lambda _x, _y, _i: torch.zeros_like(_x).flatten(2).scatter_add(2, _i.flatten(2), "
            f"_y.flatten(2)).view_as(_x))({x}, {y}, {_pool_indices_torch(n, x, cg)})")


def _pool_positions_onnx(o, n, x, spatial, k):
    """Flat padded-plane position of each window's first maximum, [B, C, P]: the
    windows are gathered with a constant im2col table (static spatial dims)."""
    kernel, stride, padding = pool_params(n.attrs, k)
    if not all(isinstance(s, int) for s in spatial):
        raise MissingRule("ONNX lowering with symbolic spatial dims", n.op)
    sp = tuple(s + 2 * p for s, p in zip(spatial, padding))
    so = tuple((s - kk) // st + 1 for s, kk, st in zip(sp, kernel, stride))
    grids = np.meshgrid(*[np.arange(m) * st for m, st in zip(so, stride)], indexing="ij")
    offs = np.meshgrid(*[np.arange(kk) for kk in kernel], indexing="ij")
    table = 0
    for i in range(k):
        table = table * sp[i] + (grids[i].reshape(-1, 1) + offs[i].reshape(1, -1))
    table = np.asarray(table, dtype=np.int64)  # [P, |K|]
    neg = o.const(np.array(-np.inf, dtype=o.np_dtype(n.type.dtype)))
    xp = o.op("Pad", x, o.ints([0, 0] + list(padding) + [0, 0] + list(padding)), neg)
    flat = o.op("Reshape", xp, o.ints([0, 0, -1]))
    win = o.op("Gather", flat, o.const(table), axis=2)               # [B, C, P, |K|]
    best = o.op("ArgMax", win, axis=3, keepdims=1, select_last_index=0)  # [B, C, P, 1]
    tab = o.op("Expand", o.const(table), o.op("Shape", win))
    pos = o.op("GatherElements", tab, best, axis=3)
    return o.op("Squeeze", pos, o.ints([3])), sp, so


def _mps_onnx(o, n, x, y):
    k = len(n.type.shape) - 2
    spatial = tuple(n.type.shape[2:])
    _, _, padding = pool_params(n.attrs, k)
    pos, sp, so = _pool_positions_onnx(o, n, x, spatial, k)
    zero = o.const(np.zeros((), dtype=o.np_dtype(n.type.dtype)))
    plane = o.op("Expand", zero, o.op("Concat", o.op("Shape", x, start=0, end=2),
                                       o.ints([int(np.prod(sp))]), axis=0))
    upd = o.op("Reshape", y, o.ints([0, 0, -1]))
    out = o.op("ScatterElements", plane, pos, upd, axis=2, reduction="add")
    bc = o.op("Shape", x, start=0, end=2)
    out = o.op("Reshape", out, o.op("Concat", bc, o.ints(list(sp)), axis=0))
    return o.op("Slice", out, o.ints(list(padding)), o.ints([p + s for p, s in zip(padding, spatial)]),
                o.ints(list(range(2, 2 + k))))


max_pool_scatter.numpy(_mps_numpy)
max_pool_scatter.torch(_mps_torch)
max_pool_scatter.onnx(_mps_onnx)


def _pool_gather_type(ts, attrs) -> TensorType:
    out = _pool_type(ts, attrs)
    size = attrs.get("size")
    if size is not None and tuple(size) != tuple(ts[0].shape[2:]):
        raise TypeMismatch(f"size {tuple(size)} is not x's spatial shape {shape_str(ts[0].shape[2:])}")
    return out


max_pool_gather = defprim(
    "max_pool_gather", "y[b,c,s] = v[b, c, position of the (first) maximum of x in window s]",
    2, _pool_gather_type, static_args=(0,))


@max_pool_gather.vjp
def _(g, n, ct):
    x, v = n.args
    at = {key: val for key, val in n.attrs.items() if key != "size"}
    return [None, g.op("max_pool_scatter", x, ct, **at)]


def _mpg_numpy(cg, n, x, v):
    return f"{cg.helper('max_pool_gather_nd')}({_windows(cg, n, x, '-np.inf')}, {_windows(cg, n, v, 0)})"


def _mpg_torch(cg, n, x, v):
    return (f"(lambda _v, _i: _v.flatten(2).gather(2, _i.flatten(2)).view_as(_i))"
            f"({v}, {_pool_indices_torch(n, x, cg)})")


def _mpg_onnx(o, n, x, v):
    k = len(n.type.shape) - 2
    # x's spatial dims are not on the node (it has the pooled shape): the VJP rules
    # record them in `size`; else ask the builder for x's type
    spatial = n.attrs.get("size")
    if spatial is None:
        spatial = o.type_of(n.args[0]).shape[2:]
    pos, sp, so = _pool_positions_onnx(o, n, x, tuple(spatial), k)
    zero = o.const(np.zeros((), dtype=o.np_dtype(n.type.dtype)))
    _, _, padding = pool_params(n.attrs, k)
    vp = o.op("Pad", v, o.ints([0, 0] + list(padding) + [0, 0] + list(padding)), zero)
    vals = o.op("GatherElements", o.op("Reshape", vp, o.ints([0, 0, -1])), pos, axis=2)
    bc = o.op("Shape", x, start=0, end=2)
    return o.op("Reshape", vals, o.op("Concat", bc, o.ints(list(so)), axis=0))


max_pool_gather.numpy(_mpg_numpy)
max_pool_gather.torch(_mpg_torch)
max_pool_gather.onnx(_mpg_onnx)
