"""Composite ops: one op for a pattern a backend has a fused kernel for.

Each block declares the op (shape rule, one-line maths), then its decomposition
(`@p.decompose`: the op built from primitives; this *is* its meaning, the std
library's formula), then a VJP when a fused rule beats differentiating the
decomposition, then native lowerings for the backends that have a fused kernel.
A backend without one inlines the decomposition (`Primitive.expand`), so every
composite runs everywhere; `tests/test_composites.py` checks, for every composite
and backend, that the native rule and the decomposition agree (values and VJPs).
"""
from __future__ import annotations

import math

import numpy as np

from compiler.primitives.table import defprim
from compiler.core.types import TensorType, TypeMismatch, broadcast_shapes, dim_prod
from compiler.primitives._rules import require_float

# ============================================================================
# softmax cross-entropy
# ============================================================================


def _sce_type(ts, attrs) -> TensorType:
    z, y = ts
    require_float(z, "logits")
    if z.rank < 1:
        raise TypeMismatch(f"logits must have a class axis, got {z}")
    if y.is_float or y.dtype == "bool":
        raise TypeMismatch(f"labels must be integers, got {y}")
    if tuple(y.shape) != tuple(z.shape[:-1]):
        raise TypeMismatch(f"labels {list(y.shape)} must be the logits' shape {list(z.shape)} "
                           "without its last (class) axis")
    return TensorType(z.dtype, ())


softmax_cross_entropy = defprim(
    "softmax_cross_entropy", "-mean(log_softmax(z)[..., y]) over every label", 2, _sce_type,
    static_args=(1,))


@softmax_cross_entropy.decompose
def _(g, args, attrs):
    # A gathered log_softmax, not logsumexp(z) - z_y: the difference of two large
    # numbers loses every digit of a small loss in f32 (logits near 1e4); here the
    # largest shifted logit is exactly 0 and the sum of exponentials is in [1, K].
    z, y = args
    k = g.type(z).shape[-1]
    lp = g.op("log_softmax", z, axis=-1)
    hot = g.op("one_hot", y, depth=k, dtype=g.type(z).dtype)
    picked = g.op("sum", g.op("mul", lp, hot), axis=-1, keepdims=False)
    return g.op("neg", g.op("mean", picked, axis=None, keepdims=False))


def _label_count(g, y, like):
    t = g.type(y)
    if all(isinstance(d, int) for d in t.shape):
        return g.const(float(dim_prod(t.shape)), g.type(like).dtype)
    return g.op("size", y, axes=tuple(range(t.rank)), dtype=g.type(like).dtype)


@softmax_cross_entropy.vjp
def _(g, n, ct):
    # one op, so a backend can fuse it with the forward (the NumPy kernel shares its softmax)
    z, y = n.args
    return [g.op("softmax_cross_entropy_grad", z, y, ct), None]


def _sce_grad_type(ts, attrs) -> TensorType:
    z, y, ct = ts
    _sce_type([z, y], attrs)
    if ct.rank != 0 or ct.dtype != z.dtype:
        raise TypeMismatch(f"the loss cotangent must be a {z.dtype} scalar, got {ct}")
    return z


softmax_cross_entropy_grad = defprim(
    "softmax_cross_entropy_grad", "(softmax(z) - onehot(y)) ct / N, the loss's VJP in z", 3,
    _sce_grad_type, static_args=(1,))


@softmax_cross_entropy_grad.decompose
def _(g, args, attrs):
    # d/dz = (softmax(z) - onehot(y)) * ct / N: one fused rule, no log_softmax VJP
    z, y, ct = args
    k = g.type(z).shape[-1]
    p = g.op("softmax", z, axis=-1)
    hot = g.op("one_hot", y, depth=k, dtype=g.type(z).dtype)
    scale = g.op("div", ct, _label_count(g, y, z))
    # a label outside [0, K) has a zero one-hot row and a zero term: no gradient either
    valid = g.op("sum", hot, axis=-1, keepdims=True)
    return g.op("mul", g.op("mul", g.op("sub", p, hot), valid), scale)


# A label outside [0, K) contributes a zero term to the mean, as in the decomposition
# (its one-hot row is zero) and the fused VJP: the native kernels would index out of
# range (torch raises, onnxruntime is undefined), so they read a clamped label and
# mask its term.
def _sce_torch(cg, n, z, y):
    k = cg.dim(cg.graph.type(n.args[0]).shape[-1])
    long = "" if cg.graph.type(n.args[1]).dtype == "i64" else ".long()"
    yy, ok = cg.fresh("ce_labels"), cg.fresh("ce_valid")
    cg.emit(f"{yy} = {y}.reshape(-1){long}")
    cg.emit(f"{ok} = ({yy} >= 0) & ({yy} < {k})")
    return (f"(F.cross_entropy({z}.reshape(-1, {k}), {yy}.clamp(0, {k} - 1), reduction='none')"
            f" * {ok}).mean()")


def _sce_onnx(o, n, z, y):
    k = o.type_of(n.args[0]).shape[-1]
    flat = o.op("Reshape", z, o.dims((-1, k)))
    labels = o.op("Reshape", o.cast(y, "i64"), o.ints([-1]))
    lo, hi = o.const(np.asarray(0, np.int64)), o.op("Sub", o.op("Shape", flat, start=1, end=2),
                                                     o.ints([1]))
    ok = o.op("And", o.op("GreaterOrEqual", labels, lo),
              o.op("LessOrEqual", labels, o.op("Reshape", hi, o.ints([]))))
    safe = o.op("Where", ok, labels, lo)
    terms = o.op("SoftmaxCrossEntropyLoss", flat, safe, reduction="none")
    zero = o.op("Mul", o.op("ReduceMax", terms, keepdims=0), o.const(np.asarray(0.0)))
    return o.op("ReduceMean", o.op("Where", ok, terms, zero), keepdims=0)


def _sce_parts(cg, z, y) -> str:
    # shifted logits, their exponentials and row sums, the labels' flat indices: computed
    # once per function for the loss and its VJP alike (the first to be lowered emits it)
    return cg.shared(("sce_parts", z, y), f"{cg.helper('sce_parts')}({z}, {y})", "ce_parts")


def _sce_numpy(cg, n, z, y):
    # the label's entry picked by flat index, not a one-hot product
    return f"{cg.helper('sce_loss')}({_sce_parts(cg, z, y)})"


def _sce_grad_numpy(cg, n, z, y, ct):
    # softmax(z), 1 subtracted at each label in place, scaled by ct / N
    return f"{cg.helper('sce_grad')}({_sce_parts(cg, z, y)}, {ct})"


softmax_cross_entropy.numpy(_sce_numpy)
softmax_cross_entropy_grad.numpy(_sce_grad_numpy)
softmax_cross_entropy.torch(_sce_torch)
softmax_cross_entropy.onnx(_sce_onnx)


# ============================================================================
# a forward and its fused VJP in one generated torch function
# ============================================================================
# The forward of a composite whose VJP node is lowered in the same function keeps what
# torch's fused backward reads (saved statistics, an autograd tape) in a local, noted
# in the scope's memo under (kind, graph, forward node); the VJP's lowering looks it
# up. Partners share their first `shared` operands and the attrs.


def _lowered_vjps(cg, n, vjp_op, shared):
    """The `vjp_op` nodes this module computes that are the VJP of forward node `n`."""
    graph, computed = cg.mod.lowering
    if cg.graph is not graph:  # a nested function (a scan body): no partner search
        return []
    return [u for u in graph.users(n.args[0]) if u in computed and graph.node(u).op == vjp_op
            and graph.node(u).args[:shared] == n.args[:shared]
            and graph.node(u).attrs == n.attrs]


def _saved_by_forward(cg, n, fwd_op, shared, kind):
    """What the forward partner of VJP node `n` left in the memo (None: not lowered here)."""
    for u in cg.graph.users(n.args[0]):
        m = cg.graph.node(u)
        key = (kind, id(cg.graph), u)
        if m.op == fwd_op and m.args[:shared] == n.args[:shared] and m.attrs == n.attrs \
                and key in cg.memo:
            return cg.memo[key]
    return None


# ============================================================================
# layer norm
# ============================================================================


def _ln_type(ts, attrs) -> TensorType:
    x, gamma, beta = ts
    require_float(x)
    if x.rank < 1:
        raise TypeMismatch(f"layer_norm needs a feature axis, got {x}")
    d = x.shape[-1]
    for what, t in (("gamma", gamma), ("beta", beta)):
        if t.dtype != x.dtype or tuple(t.shape) != (d,):
            raise TypeMismatch(f"{what} must be {x.dtype}[{d}] (the last axis of x), got {t}")
    if not isinstance(attrs.get("eps"), float):
        raise TypeMismatch(f"eps must be a float, got {attrs.get('eps')!r}")
    return x


layer_norm = defprim(
    "layer_norm", "(x - mean x) / √(var x + eps) ⊙ gamma + beta over the last axis", 3, _ln_type)


def _xhat(g, x, eps):
    """((x - μ) / σ, 1 / σ) over the last axis, keepdims."""
    mu = g.op("mean", x, axis=-1, keepdims=True)
    xc = g.op("sub", x, mu)
    var = g.op("mean", g.op("mul", xc, xc), axis=-1, keepdims=True)
    rstd = g.op("rsqrt", g.op("add", var, g.scalar_like(eps, x)))
    return g.op("mul", xc, rstd), rstd


@layer_norm.decompose
def _(g, args, attrs):
    x, gamma, beta = args
    xhat, _ = _xhat(g, x, attrs["eps"])
    return g.op("add", g.op("mul", xhat, gamma), beta)


@layer_norm.vjp
def _(g, n, ct):
    # one fused node for (dx, dgamma, dbeta): see layer_norm_grad
    x, gamma, beta = n.args
    back = g.op("layer_norm_grad", x, gamma, ct, eps=n.attrs["eps"])
    return [g.op("tuple_get", back, index=i) for i in range(3)]


def _ln_grad_type(ts, attrs):
    x, gamma, ct = ts
    _ln_type([x, gamma, gamma], attrs)
    if ct != x:
        raise TypeMismatch(f"layer_norm_grad: the cotangent must be {x}, got {ct}")
    return (x, gamma, gamma)


layer_norm_grad = defprim(
    "layer_norm_grad", "(dx, dgamma, dbeta) of layer_norm(x, gamma, ·) for the cotangent ct",
    3, _ln_grad_type)


@layer_norm_grad.decompose
def _(g, args, attrs):
    # dx = rstd (gx - mean(gx) - x̂ mean(gx ⊙ x̂)), gx = ct ⊙ gamma: the textbook fused
    # rule (two reductions) instead of the VJP of every node of the decomposition
    x, gamma, ct = args
    xhat, rstd = _xhat(g, x, attrs["eps"])
    gx = g.op("mul", ct, gamma)
    m1 = g.op("mean", gx, axis=-1, keepdims=True)
    m2 = g.op("mean", g.op("mul", gx, xhat), axis=-1, keepdims=True)
    dx = g.op("mul", rstd, g.op("sub", g.op("sub", gx, m1), g.op("mul", xhat, m2)))
    return g.op("pack", dx, g.unbroadcast(g.op("mul", ct, xhat), gamma), g.unbroadcast(ct, gamma))


def _ln_torch(cg, n, x, gamma, beta):
    d = cg.dim(n.type.shape[-1])
    eps = n.attrs["eps"]
    if not _lowered_vjps(cg, n, "layer_norm_grad", 2):
        return f"F.layer_norm({x}, ({d},), {gamma}, {beta}, {eps!r})"
    # a train step: keep the forward's mean and 1/σ for aten's fused backward, as
    # autograd does (F.layer_norm is this same kernel)
    stats = cg.fresh("ln_stats")
    cg.emit(f"{stats} = torch.ops.aten.native_layer_norm({x}, ({d},), {gamma}, {beta}, {eps!r})")
    cg.memo[("ln_stats", id(cg.graph), n.id)] = stats  # (out, mean, rstd)
    return f"{stats}[0]"


def _ln_grad_torch(cg, n, x, gamma, ct):
    d = cg.dim(cg.graph.type(n.args[0]).shape[-1])
    stats = _saved_by_forward(cg, n, "layer_norm", 2, "ln_stats")
    if stats is None:  # the VJP without its forward in this program: statistics anew
        stats = cg.fresh("ln_stats")
        cg.emit(f"{stats} = torch.ops.aten.native_layer_norm({x}, ({d},), None, None, "
                f"{n.attrs['eps']!r})")
    # bias: only its presence matters (dbeta = sum ct); gamma stands in for it
    return (f"torch.ops.aten.native_layer_norm_backward({ct}, {x}, ({d},), {stats}[1], "
            f"{stats}[2], {gamma}, {gamma}, [True, True, True])")


layer_norm_grad.torch(_ln_grad_torch)


layer_norm.torch(_ln_torch)
layer_norm.onnx(lambda o, n, x, gamma, beta: o.op("LayerNormalization", x, gamma, beta, axis=-1,
                                                  epsilon=float(n.attrs["eps"])))


# ============================================================================
# GELU (exact, erf form)
# ============================================================================


def _float_same(ts, attrs):
    for t in ts:
        require_float(t)
    return ts[-1]


gelu = defprim("gelu", "x Φ(x) = x (1 + erf(x / √2)) / 2", 1, _float_same)


@gelu.decompose
def _(g, args, attrs):
    (x,) = args
    half = g.op("mul", g.scalar_like(0.5, x), x)
    e = g.op("erf", g.op("mul", x, g.scalar_like(1 / math.sqrt(2), x)))
    return g.op("mul", half, g.op("add", g.scalar_like(1.0, x), e))


@gelu.vjp
def _(g, n, ct):
    return [g.op("gelu_grad", ct, n.args[0])]


gelu.torch("F.gelu({0})")
# opset 18 has no Gelu (it came in opset 20): ONNX inlines the decomposition


gelu_grad = defprim("gelu_grad", "ct (Φ(x) + x φ(x)), GELU's VJP", 2, _float_same)


@gelu_grad.decompose
def _(g, args, attrs):
    ct, x = args
    cdf = g.op("mul", g.scalar_like(0.5, x),
               g.op("add", g.scalar_like(1.0, x),
                    g.op("erf", g.op("mul", x, g.scalar_like(1 / math.sqrt(2), x)))))
    pdf = g.op("mul", g.scalar_like(1 / math.sqrt(2 * math.pi), x),
               g.op("exp", g.op("mul", g.scalar_like(-0.5, x), g.op("mul", x, x))))
    return g.op("mul", ct, g.op("add", cdf, g.op("mul", x, pdf)))


gelu_grad.torch("torch.ops.aten.gelu_backward({0}, {1})")


# ============================================================================
# scaled dot-product attention with a keep mask
# ============================================================================


def _attn_type(ts, attrs) -> TensorType:
    q, k, v, keep = ts
    for t in (q, k, v):
        require_float(t)
        if t.rank < 2:
            raise TypeMismatch(f"attention needs [..., T, d] operands, got {t}")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeMismatch(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise TypeMismatch(f"q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)}: need "
                           "q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv]")
    if keep.dtype != "bool":
        raise TypeMismatch(f"the keep mask must be bool, got {keep}")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2])
    batch = broadcast_shapes(batch, v.shape[:-2])
    scores = tuple(batch) + (q.shape[-2], k.shape[-2])
    if tuple(broadcast_shapes(scores, keep.shape)) != scores:
        raise TypeMismatch(f"the keep mask {list(keep.shape)} does not broadcast to the "
                           f"scores {list(scores)}")
    return TensorType(q.dtype, tuple(batch) + (q.shape[-2], v.shape[-1]))


attention = defprim(
    "attention", "softmax(where(keep, q kᵀ / √d, -1e9)) v along the keys", 4, _attn_type,
    static_args=(3,))


@attention.decompose
def _(g, args, attrs):
    q, k, v, keep = args
    rk = g.type(k).rank
    kt = g.op("transpose", k, perm=tuple(range(rk - 2)) + (rk - 1, rk - 2))
    d = g.type(q).shape[-1]
    if isinstance(d, int):
        scale = g.scalar_like(1 / math.sqrt(d), q)
    else:
        scale = g.op("rsqrt", g.op("size", q, axes=(g.type(q).rank - 1,), dtype=g.type(q).dtype))
    scores = g.op("mul", g.op("matmul", q, kt), scale)
    masked = g.op("where", keep, scores, g.scalar_like(-1e9, q))
    return g.op("matmul", g.op("softmax", masked, axis=-1), v)


def _is_true(cg, n):
    node = cg.graph.node(n)
    return node.op == "const" and node.attrs["value"] is True


def _attn_mask(cg, n, keep):
    # an additive mask: 0 where kept, -1e9 where dropped, as in the decomposition
    # (a bool mask would give -inf and NaN rows where every key is dropped)
    if _is_true(cg, n.args[3]):
        return "None"
    mask = f"torch.where({keep}, 0.0, -1e9).to({cg.env[n.args[0]]}.dtype)"
    if cg.graph.type(n.args[3]).rank < 2:  # torch wants a mask of rank >= 2
        mask = f"torch.atleast_2d({mask})"
    return mask


def _attn_torch(cg, n, q, k, v, keep):
    mask = _attn_mask(cg, n, keep)
    if len(_lowered_vjps(cg, n, "attention_grad", 4)) == 1:  # a tape serves one backward
        # a train step: the forward keeps torch's autograd tape (SDPA saves what its
        # fused backward reads: the flash kernel's logsumexp on the CPU), as eager does
        tape = cg.fresh("attn_taped")
        cg.emit(f"{tape} = {cg.helper('attention_taped')}({q}, {k}, {v}, {mask})")
        cg.memo[("attn_tape", id(cg.graph), n.id)] = tape
        return f"{tape}[0]"
    if mask == "None":
        return f"F.scaled_dot_product_attention({q}, {k}, {v})"
    return f"F.scaled_dot_product_attention({q}, {k}, {v}, attn_mask={mask})"


attention.torch(_attn_torch)


@attention.vjp
def _(g, n, ct):
    # one fused node for (dq, dk, dv): see attention_grad
    q, k, v, keep = n.args
    back = g.op("attention_grad", q, k, v, keep, ct)
    return [g.op("tuple_get", back, index=i) for i in range(3)] + [None]


def _attn_grad_type(ts, attrs):
    out = _attn_type(ts[:4], attrs)
    if ts[4] != out:
        raise TypeMismatch(f"attention_grad: the cotangent must be {out}, got {ts[4]}")
    return tuple(ts[:3])


# its decomposition, the VJP of attention's decomposition, needs autodiff (a later
# layer), which registers it: compiler/transform/autodiff.py
attention_grad = defprim(
    "attention_grad", "(dq, dk, dv) of attention(q, k, v, keep) for the cotangent ct", 5,
    _attn_grad_type, static_args=(3,))


def _attn_grad_torch(cg, n, q, k, v, keep, ct):
    tape = _saved_by_forward(cg, n, "attention", 4, "attn_tape")
    if tape is not None:  # torch's fused backward on the forward's tape
        return f"{cg.helper('rnn_vjp_taped')}({tape}[1], ({ct},), (True, True, True))"
    # no forward lowered in this program: replay it with autograd on
    return f"{cg.helper('attention_vjp')}({q}, {k}, {v}, {_attn_mask(cg, n, keep)}, {ct})"


attention_grad.torch(_attn_grad_torch)
# ONNX (opset 18) has no attention op; onnxruntime's contrib Attention fuses the
# projections too (another layout): ONNX inlines the decomposition.


# ============================================================================
# optimizer updates (compiler/training/optim.py): one fused kernel chain per parameter
# ============================================================================


def _lerp_type(ts, attrs) -> TensorType:
    a, b = ts
    require_float(a)
    if a.dtype != b.dtype or tuple(broadcast_shapes(a.shape, b.shape)) != tuple(a.shape):
        raise TypeMismatch(f"lerp: {b} must broadcast to {a}")
    if not isinstance(attrs.get("w"), float):
        raise TypeMismatch(f"lerp: w must be a float, got {attrs.get('w')!r}")
    return a


lerp = defprim("lerp", "(1 - w) a + w b (moving averages)", 2, _lerp_type)


@lerp.decompose
def _(g, args, attrs):
    a, b = args
    w = attrs["w"]
    return g.op("add", g.op("mul", a, g.scalar_like(1.0 - w, a)), g.op("mul", b, g.scalar_like(w, b)))


lerp.torch(lambda cg, n, a, b: f"torch.lerp({a}, {b}, {n.attrs['w']!r})")


def _adam_type(ts, attrs) -> TensorType:
    p, m, v, step_size, bc2 = ts
    for t in (m, v):
        if t != p:
            raise TypeMismatch(f"adam_param: slots must be {p}, got {t}")
    for t in (step_size, bc2):
        if t.rank != 0 or t.dtype != p.dtype:
            raise TypeMismatch(f"adam_param: step size and correction are {p.dtype} scalars, got {t}")
    return p


adam_param = defprim(
    "adam_param", "p - step_size · m / (√v / bc2 + eps), Adam's parameter step", 5, _adam_type)


@adam_param.decompose
def _(g, args, attrs):
    p, m, v, step_size, bc2 = args
    denom = g.op("add", g.op("div", g.op("sqrt", v), bc2), g.scalar_like(attrs["eps"], v))
    return g.op("sub", p, g.op("mul", step_size, g.op("div", m, denom)))


# in-place on the fresh temporary √v: one allocation and four passes, not six of each
adam_param.torch(lambda cg, n, p, m, v, s, bc2:
                 f"torch.addcdiv({p}, {m}, torch.sqrt({v}).div_({bc2}).add_({n.attrs['eps']!r})"
                 f".div_({s}), value=-1.0)")
