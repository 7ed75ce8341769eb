"""Elementwise primitives: arithmetic, math functions, activations, comparisons, where.

Binary ops broadcast like NumPy; their VJPs sum cotangents back to each operand's
shape with `Graph.unbroadcast`.

VJP rules only build graph nodes, so a gradient is itself differentiable. Masks
(comparisons) only ever feed the *condition* of a `where`, which receives no
cotangent, so second-order autodiff never has to differentiate a comparison.
Where a rule multiplies by a piecewise-constant factor it wraps it in
`stop_gradient` for the same reason.
"""
from __future__ import annotations

import math

import numpy as np

from compiler.primitives.table import defprim
from compiler.core.types import DTYPES, TensorType, TypeMismatch, broadcast_shapes, promote
from compiler.primitives._rules import (binary_arith, compare, float_binary, float_unary, logical_binary, logical_unary, numeric_unary)

_PIECEWISE = "piecewise constant (its derivative is zero almost everywhere)"
_BOOL = "boolean-valued"


def _k(g, v, like):
    """A scalar constant of `like`'s dtype; broadcasts in any elementwise op."""
    return g.scalar_like(v, like)


def _back(g, arg, make):
    """The cotangent of a broadcasting operand: `make()` (output-shaped) summed back to
    the operand's shape, or None for an int/bool operand, which takes no gradient."""
    return g.unbroadcast(make(), arg) if g.type(arg).is_float else None


_NP_OPERATOR = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}


def _np_binary(ufunc: str):
    """A NumPy ufunc call that keeps a float result in the run dtype: NumPy widens
    int64 with float32 to float64, where `binary_arith` (and torch) give float32.
    Operands already of the float result's dtype take the operator (no keyword to parse)."""
    def lower(cg, n, x, y):
        same = all(cg.graph.type(a).dtype == n.type.dtype for a in n.args)
        if n.type.is_float and same and ufunc in _NP_OPERATOR:
            return f"{x} {_NP_OPERATOR[ufunc]} {y}"
        dt = f", dtype={cg.dtype(n.type.dtype)}" if n.type.is_float else ""
        return f"np.{ufunc}({x}, {y}{dt})"
    return lower


def _onnx_same(o, args, names, dtype):
    """ONNX wants equal input types where `binary_arith` lets an int meet a float
    (or i32 meet i64): cast the odd ones out to `dtype`. Free when types agree."""
    out = []
    for a, name in zip(args, names):
        have = o.type_of(a).dtype
        out.append(name if o.np_dtype(have) == o.np_dtype(dtype) else o.cast(name, dtype))
    return out


def _onnx_binary(op_type: str):
    """Arithmetic: operands in the result dtype."""
    return lambda o, n, x, y: o.op(op_type, *_onnx_same(o, n.args, (x, y), n.type.dtype))


def _onnx_compare(op_type: str, negate: bool = False):
    """Comparisons: operands in their promoted dtype (the result is bool)."""
    def lower(o, n, x, y):
        common = promote(o.type_of(n.args[0]).dtype, o.type_of(n.args[1]).dtype)
        r = o.op(op_type, *_onnx_same(o, n.args, (x, y), common))
        return o.op("Not", r) if negate else r
    return lower


# ============================================================================
# float (and numeric) unary
# ============================================================================

neg = defprim("neg", "-x", 1, numeric_unary)


@neg.vjp
def _(g, n, ct):
    return [g.op("neg", ct)]


neg.numpy("np.negative({0})")
neg.torch("torch.neg({0})")
neg.onnx(lambda o, n, x: o.op("Neg", x))


exp = defprim("exp", "e^x", 1, float_unary)


@exp.vjp
def _(g, n, ct):
    return [g.op("mul", ct, n.id)]  # d e^x = e^x: reuse the forward value


exp.numpy("np.exp({0})")
exp.torch("torch.exp({0})")
exp.onnx(lambda o, n, x: o.op("Exp", x))


log = defprim("log", "ln x", 1, float_unary)


@log.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("div", ct, x)]


log.numpy("np.log({0})")
log.torch("torch.log({0})")
log.onnx(lambda o, n, x: o.op("Log", x))


log1p = defprim("log1p", "ln(1 + x), accurate for small x", 1, float_unary)


@log1p.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("div", ct, g.op("add", x, _k(g, 1.0, x)))]


def _onnx_log1p(o, x, dtype):
    # Opset 18 has no Log1p and Log(1 + x) loses every digit of a tiny x. Goldberg's
    # trick recovers them: with u = fl(1 + x), log1p(x) = log(u) * x / (u - 1) is
    # accurate to a few ulps; where u == 1 the answer is x itself.
    one = o.const(np.array(1, dtype=o.np_dtype(dtype)))
    zero = o.const(np.array(0, dtype=o.np_dtype(dtype)))
    u = o.op("Add", one, x)
    d = o.op("Sub", u, one)
    return o.op("Where", o.op("Equal", d, zero), x, o.op("Mul", o.op("Log", u), o.op("Div", x, d)))


log1p.numpy("np.log1p({0})")
log1p.torch("torch.log1p({0})")
log1p.onnx(lambda o, n, x: _onnx_log1p(o, x, n.type.dtype))


sqrt = defprim("sqrt", "√x", 1, float_unary)


@sqrt.vjp
def _(g, n, ct):
    # d√x = 1 / (2√x): reuse the forward value
    return [g.op("div", ct, g.op("mul", n.id, _k(g, 2.0, ct)))]


sqrt.numpy("np.sqrt({0})")
sqrt.torch("torch.sqrt({0})")
sqrt.onnx(lambda o, n, x: o.op("Sqrt", x))


rsqrt = defprim("rsqrt", "1 / √x", 1, float_unary)


@rsqrt.vjp
def _(g, n, ct):
    # d x^(-1/2) = -1/2 · x^(-1/2) / x
    (x,) = n.args
    return [g.op("mul", ct, g.op("div", g.op("mul", n.id, _k(g, -0.5, ct)), x))]


rsqrt.numpy("np.reciprocal(np.sqrt({0}))")
rsqrt.torch("torch.rsqrt({0})")
rsqrt.onnx(lambda o, n, x: o.op("Reciprocal", o.op("Sqrt", x)))


abs_ = defprim("abs", "|x|", 1, numeric_unary)


@abs_.vjp
def _(g, n, ct):
    # sign(x) like torch (0 at x = 0); stop_gradient because sign is piecewise
    # constant, so the second derivative is 0 and autodiff must not enter `sign`.
    (x,) = n.args
    return [g.op("mul", ct, g.op("stop_gradient", g.op("sign", x)))]


abs_.numpy("np.abs({0})")
abs_.torch("torch.abs({0})")
abs_.onnx(lambda o, n, x: o.op("Abs", x))


sign = defprim("sign", "-1, 0 or 1 as x < 0, = 0, > 0", 1, numeric_unary, nondiff=_PIECEWISE)
sign.numpy("np.sign({0})")
sign.torch("torch.sign({0})")
sign.onnx(lambda o, n, x: o.op("Sign", x))


sin = defprim("sin", "sin x", 1, float_unary)


@sin.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("mul", ct, g.op("cos", x))]


sin.numpy("np.sin({0})")
sin.torch("torch.sin({0})")
sin.onnx(lambda o, n, x: o.op("Sin", x))


cos = defprim("cos", "cos x", 1, float_unary)


@cos.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("neg", g.op("mul", ct, g.op("sin", x)))]


cos.numpy("np.cos({0})")
cos.torch("torch.cos({0})")
cos.onnx(lambda o, n, x: o.op("Cos", x))


acos = defprim("acos", "arccos x ∈ [0, π] for x ∈ [-1, 1]", 1, float_unary)


@acos.vjp
def _(g, n, ct):
    # d arccos x = -1 / √(1 - x²): infinite at |x| = 1, where arccos has a vertical tangent
    (x,) = n.args
    root = g.op("rsqrt", g.op("sub", _k(g, 1.0, ct), g.op("mul", x, x)))
    return [g.op("neg", g.op("mul", ct, root))]


acos.numpy("np.arccos({0})")
acos.torch("torch.acos({0})")


_ONNX_FLOAT = 1       # onnx.TensorProto.FLOAT (the primitives import no backend)


def _onnx_acos(o, n, x):
    # onnxruntime implements Acos for float32 only. Other float types go through it;
    # for float64 one correction restores full precision: with θ0 = acos_f32(x) and
    # δ = sin(θ - θ0) = √((1-x)(1+x)) cos θ0 - x sin θ0 (|δ| < 1e-3),
    # θ = θ0 + asin δ ≈ θ0 + δ + δ³/6, with no division, so none at |x| = 1.
    if o.run_dtype == "f32":
        return o.op("Acos", x)
    t0 = o.op("Cast", o.op("Acos", o.op("Cast", x, to=_ONNX_FLOAT)), to=o.elem_type(o.run_dtype))
    if o.run_dtype != "f64":
        return t0
    one = o.const(np.array(1.0))
    root = o.op("Sqrt", o.op("Mul", o.op("Sub", one, x), o.op("Add", one, x)))
    d = o.op("Sub", o.op("Mul", root, o.op("Cos", t0)), o.op("Mul", x, o.op("Sin", t0)))
    cube = o.op("Mul", o.op("Mul", d, o.op("Mul", d, d)), o.const(np.array(1.0 / 6.0)))
    return o.op("Add", t0, o.op("Add", d, cube))


acos.onnx(_onnx_acos)


tanh = defprim("tanh", "tanh x", 1, float_unary)


@tanh.vjp
def _(g, n, ct):
    # 1 - tanh² from the forward value
    return [g.op("mul", ct, g.op("sub", _k(g, 1.0, ct), g.op("mul", n.id, n.id)))]


tanh.numpy("np.tanh({0})")
tanh.torch("torch.tanh({0})")
tanh.onnx(lambda o, n, x: o.op("Tanh", x))


sigmoid = defprim("sigmoid", "1 / (1 + e^-x)", 1, float_unary)


@sigmoid.vjp
def _(g, n, ct):
    # σ(1 - σ) from the forward value
    return [g.op("mul", ct, g.op("mul", n.id, g.op("sub", _k(g, 1.0, ct), n.id)))]


# exp(-softplus(-x)): never overflows (1 / (1 + exp(-x)) does for x ≪ 0, with a
# warning) and keeps full relative accuracy in both tails.
sigmoid.numpy("np.exp(-np.logaddexp(0, -{0}))")
sigmoid.torch("torch.sigmoid({0})")
sigmoid.onnx(lambda o, n, x: o.op("Sigmoid", x))


relu = defprim("relu", "max(x, 0)", 1, float_unary)


@relu.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("relu_grad", ct, x)]


relu.numpy("np.maximum({0}, 0)")
relu.torch("torch.relu({0})")
relu.onnx(lambda o, n, x: o.op("Relu", x))


def _relu_grad_type(ts, attrs):
    g_t, x_t = ts
    if g_t != x_t:
        raise TypeMismatch(f"relu_grad expects a cotangent of the input's type {x_t}, got {g_t}")
    return g_t


# relu_grad: relu's VJP as one fused op (torch's threshold_backward), 0 at the kink
# x = 0 like torch. Linear in g; its derivative in x is zero almost everywhere.
relu_grad = defprim("relu_grad", "g where x > 0 else 0", 2, _relu_grad_type, static_args=(1,))


@relu_grad.vjp
def _(g, n, ct):
    return [g.op("relu_grad", ct, n.args[1]), None]


# a bit mask, not np.where (2x slower): a NaN ct at an inactive unit is still 0
relu_grad.numpy(lambda cg, n, ct, x: f"{cg.helper('relu_grad')}({ct}, {x})")
relu_grad.torch("torch.ops.aten.threshold_backward({0}, {1}, 0.0)")
relu_grad.onnx(lambda o, n, ct, x: o.op("Where", o.op("Greater", x, o.const(np.zeros((), o.np_dtype(n.type.dtype)))),
                                         ct, o.const(np.zeros((), o.np_dtype(n.type.dtype)))))


softplus = defprim("softplus", "ln(1 + e^x)", 1, float_unary)


@softplus.vjp
def _(g, n, ct):
    (x,) = n.args
    return [g.op("mul", ct, g.op("sigmoid", x))]


softplus.numpy("np.logaddexp(0, {0})")  # stable for large |x|
# F.softplus returns x itself above x = 20, an error of log1p(e^-20) ≈ 2e-9 absolute
# (1e-10 relative), below f32 resolution.
softplus.torch("F.softplus({0})")
# onnxruntime's Softplus is ln(e^x + 1) as written: inf from x ≈ 89 (f32) and 0
# instead of e^x for x ≪ 0. max(x, 0) + log1p(e^-|x|) is exact in both tails.
softplus.onnx(lambda o, n, x: o.op("Add", o.op("Relu", x),
                                   _onnx_log1p(o, o.op("Exp", o.op("Neg", o.op("Abs", x))),
                                               n.type.dtype)))


erf = defprim("erf", "2/√π ∫₀ˣ e^(-t²) dt", 1, float_unary)


@erf.vjp
def _(g, n, ct):
    (x,) = n.args
    dens = g.op("exp", g.op("neg", g.op("mul", x, x)))
    return [g.op("mul", ct, g.op("mul", dens, _k(g, 2.0 / math.sqrt(math.pi), ct)))]


# NumPy has no erf; the NumPy prelude provides an exact vectorised one.
erf.numpy(lambda cg, n, x: f"{cg.helper('erf')}({x})")
erf.torch("torch.special.erf({0})")
erf.onnx(lambda o, n, x: o.op("Erf", x))


reciprocal = defprim("reciprocal", "1 / x", 1, float_unary)


@reciprocal.vjp
def _(g, n, ct):
    # d(1/x) = -1/x² = -(1/x)²
    return [g.op("neg", g.op("mul", ct, g.op("mul", n.id, n.id)))]


reciprocal.numpy("np.reciprocal({0})")
reciprocal.torch("torch.reciprocal({0})")
reciprocal.onnx(lambda o, n, x: o.op("Reciprocal", x))


floor = defprim("floor", "⌊x⌋", 1, float_unary, nondiff=_PIECEWISE)
floor.numpy("np.floor({0})")
floor.torch("torch.floor({0})")
floor.onnx(lambda o, n, x: o.op("Floor", x))


ceil = defprim("ceil", "⌈x⌉", 1, float_unary, nondiff=_PIECEWISE)
ceil.numpy("np.ceil({0})")
ceil.torch("torch.ceil({0})")
ceil.onnx(lambda o, n, x: o.op("Ceil", x))


# Halves go to the even neighbour in all three backends (np.round, torch.round, ONNX Round).
round_ = defprim("round", "x rounded to the nearest integer, halves to even", 1, float_unary,
                 nondiff=_PIECEWISE)
round_.numpy("np.round({0})")
round_.torch("torch.round({0})")
round_.onnx(lambda o, n, x: o.op("Round", x))


# ============================================================================
# broadcasting binary arithmetic (`add` is the template)
# ============================================================================

add = defprim("add", "x + y", 2, binary_arith)


@add.vjp
def _(g, n, ct):
    x, y = n.args
    return [_back(g, x, lambda: ct), _back(g, y, lambda: ct)]


add.numpy(_np_binary("add"))
add.torch("torch.add({0}, {1})")
add.onnx(_onnx_binary("Add"))


sub = defprim("sub", "x - y", 2, binary_arith)


@sub.vjp
def _(g, n, ct):
    x, y = n.args
    return [_back(g, x, lambda: ct), _back(g, y, lambda: g.op("neg", ct))]


sub.numpy(_np_binary("subtract"))
sub.torch("torch.sub({0}, {1})")
sub.onnx(_onnx_binary("Sub"))


mul = defprim("mul", "x · y", 2, binary_arith)


@mul.vjp
def _(g, n, ct):
    x, y = n.args
    return [_back(g, x, lambda: g.op("mul", ct, y)), _back(g, y, lambda: g.op("mul", ct, x))]


mul.numpy(_np_binary("multiply"))
mul.torch("torch.mul({0}, {1})")
mul.onnx(_onnx_binary("Mul"))


# True division only: an integer `/` would silently change dtype, so ints are refused.
div = defprim("div", "x / y", 2, float_binary)


@div.vjp
def _(g, n, ct):
    # ∂/∂y (x/y) = -x/y² = -(x/y)/y: reuse the forward value
    x, y = n.args
    return [_back(g, x, lambda: g.op("div", ct, y)),
            _back(g, y, lambda: g.op("neg", g.op("mul", g.op("div", ct, y), n.id)))]


div.numpy(_np_binary("divide"))
div.torch("torch.div({0}, {1})")


_CONST_SHAPING = ("expand_dims", "squeeze", "reshape", "broadcast_to")


def _const_derived(g, a) -> bool:
    while g.node(a).op in _CONST_SHAPING:
        a = g.node(a).args[0]
    return g.node(a).op == "const"


def _onnx_div(o, n, x, y):
    # onnxruntime 1.32's DivMulFusion rewrites Div(1, d) * v as v / d and drops the
    # shape the constant 1 broadcast to (docs/ort_bugs.md): when a constant numerator
    # widens the result, the denominator is expanded to the result shape first.
    x, y = _onnx_same(o, n.args, (x, y), n.type.dtype)
    if _const_derived(o.graph, n.args[0]) and tuple(o.type_of(n.args[1]).shape) != tuple(n.type.shape):
        y = o.op("Expand", y, o.dims(n.type.shape))
    return o.op("Div", x, y)


div.onnx(_onnx_div)


pow_ = defprim("pow", "x^y", 2, float_binary)


@pow_.vjp
def _(g, n, ct):
    # ∂x = y·x^(y-1) (0 where y = 0); ∂y = x^y·ln x. Like torch, ∂y is 0 at x = 0 (where x^y is
    # constant in y for y > 0) and NaN for x < 0, where x^y is not a real
    # function of y. ln is taken of x with its zeros replaced by 1 so that no
    # -inf enters the graph (a masked -inf would still poison second order).
    x, y = n.args
    yn = g.node(y)
    if yn.op == "const" and yn.attrs["value"] != 0:
        # A constant exponent c (x ** 2 in a spec): ∂x = c·x^(c-1), no ∂y and no
        # y = 0 guard to build; the passes turn x^1 into x.
        c = yn.attrs["value"]
        d = g.op("mul", y, g.op("pow", x, _k(g, c - 1, y)))
        return [_back(g, x, lambda: g.op("mul", ct, d)), None]

    def gx():
        # y = 0 masked to 0 like torch: otherwise 0 · 0^(-1) = NaN at x = 0
        d = g.op("mul", y, g.op("pow", x, g.op("sub", y, _k(g, 1, y))))
        d = g.op("where", g.op("eq", y, _k(g, 0, y)), _k(g, 0.0, d), d)
        return g.op("mul", ct, d)

    def gy():
        xf = x if g.type(x).is_float else g.op("cast", x, dtype=n.type.dtype)  # ln needs a float
        x_safe = g.op("where", g.op("eq", xf, _k(g, 0.0, xf)), _k(g, 1.0, xf), xf)
        return g.op("mul", ct, g.op("mul", n.id, g.op("log", x_safe)))

    return [_back(g, x, gx), _back(g, y, gy)]


pow_.numpy(_np_binary("power"))
pow_.torch("torch.pow({0}, {1})")
pow_.onnx(_onnx_binary("Pow"))


def _extremum_vjp(g, n, ct, winner: str):
    # The gradient goes to the winning operand; at a tie it is split evenly, like
    # torch.maximum/minimum. The split is also what a central difference measures
    # at a tie, and it keeps the sum of both cotangents equal to ct.
    x, y = n.args
    zero = _k(g, 0.0, ct)
    half = g.op("mul", ct, _k(g, 0.5, ct))
    tie = g.op("eq", x, y)
    loser = "lt" if winner == "gt" else "gt"
    split = g.op("where", tie, half, zero)
    return [_back(g, x, lambda: g.op("where", g.op(winner, x, y), ct, split)),
            _back(g, y, lambda: g.op("where", g.op(loser, x, y), ct, split))]


maximum = defprim("maximum", "max(x, y) elementwise", 2, binary_arith)


@maximum.vjp
def _(g, n, ct):
    return _extremum_vjp(g, n, ct, "gt")


maximum.numpy(_np_binary("maximum"))
maximum.torch("torch.maximum({0}, {1})")
maximum.onnx(_onnx_binary("Max"))


minimum = defprim("minimum", "min(x, y) elementwise", 2, binary_arith)


@minimum.vjp
def _(g, n, ct):
    return _extremum_vjp(g, n, ct, "lt")


minimum.numpy(_np_binary("minimum"))
minimum.torch("torch.minimum({0}, {1})")
minimum.onnx(_onnx_binary("Min"))


# ============================================================================
# comparisons and logic: bool results, no gradient
# ============================================================================

eq = defprim("eq", "x == y", 2, compare, nondiff=_BOOL)
eq.numpy("np.equal({0}, {1})")
eq.torch("torch.eq({0}, {1})")
eq.onnx(_onnx_compare("Equal"))

ne = defprim("ne", "x != y", 2, compare, nondiff=_BOOL)
ne.numpy("np.not_equal({0}, {1})")
ne.torch("torch.ne({0}, {1})")
ne.onnx(_onnx_compare("Equal", negate=True))

lt = defprim("lt", "x < y", 2, compare, nondiff=_BOOL)
lt.numpy("np.less({0}, {1})")
lt.torch("torch.lt({0}, {1})")
lt.onnx(_onnx_compare("Less"))

le = defprim("le", "x <= y", 2, compare, nondiff=_BOOL)
le.numpy("np.less_equal({0}, {1})")
le.torch("torch.le({0}, {1})")
le.onnx(_onnx_compare("LessOrEqual"))

gt = defprim("gt", "x > y", 2, compare, nondiff=_BOOL)
gt.numpy("np.greater({0}, {1})")
gt.torch("torch.gt({0}, {1})")
gt.onnx(_onnx_compare("Greater"))

ge = defprim("ge", "x >= y", 2, compare, nondiff=_BOOL)
ge.numpy("np.greater_equal({0}, {1})")
ge.torch("torch.ge({0}, {1})")
ge.onnx(_onnx_compare("GreaterOrEqual"))

logical_and = defprim("logical_and", "x ∧ y", 2, logical_binary, nondiff=_BOOL)
logical_and.numpy("np.logical_and({0}, {1})")
logical_and.torch("torch.logical_and({0}, {1})")
logical_and.onnx(lambda o, n, x, y: o.op("And", x, y))

logical_or = defprim("logical_or", "x ∨ y", 2, logical_binary, nondiff=_BOOL)
logical_or.numpy("np.logical_or({0}, {1})")
logical_or.torch("torch.logical_or({0}, {1})")
logical_or.onnx(lambda o, n, x, y: o.op("Or", x, y))

logical_not = defprim("logical_not", "¬x", 1, logical_unary, nondiff=_BOOL)
logical_not.numpy("np.logical_not({0})")
logical_not.torch("torch.logical_not({0})")
logical_not.onnx(lambda o, n, x: o.op("Not", x))


# ============================================================================
# where and cast
# ============================================================================

def _where_type(ts, attrs) -> TensorType:
    c, a, b = ts
    if c.dtype != "bool":
        raise TypeMismatch(f"the condition must be a bool tensor, got {c}")
    ab = binary_arith([a, b], attrs)
    return ab.with_shape(broadcast_shapes(c.shape, ab.shape))


where = defprim("where", "a where cond else b (broadcasting all three)", 3, _where_type,
                static_args=(0,))


@where.vjp
def _(g, n, ct):
    c, a, b = n.args
    zero = _k(g, 0.0, ct)
    return [None,
            _back(g, a, lambda: g.op("where", c, ct, zero)),
            _back(g, b, lambda: g.op("where", c, zero, ct))]


# np.where widens an int/float mix to float64; keep the run dtype (no copy otherwise)
where.numpy(lambda cg, n, c, a, b: f"np.where({c}, {a}, {b})" + (
    f".astype({cg.dtype(n.type.dtype)}, copy=False)" if n.type.is_float else ""))
where.torch("torch.where({0}, {1}, {2})")
where.onnx(lambda o, n, c, a, b: o.op("Where", c, *_onnx_same(o, n.args[1:], (a, b), n.type.dtype)))


def _cast_type(ts, attrs) -> TensorType:
    (t,) = ts
    dt = attrs.get("dtype")
    if dt not in DTYPES:
        raise TypeMismatch(f"unknown dtype {dt!r}, expected one of {', '.join(DTYPES)}")
    return t.with_dtype(dt)


cast = defprim("cast", "x converted to dtype (float → int truncates toward zero)", 1, _cast_type)


@cast.vjp
def _(g, n, ct):
    # Only float → float casts carry a gradient (cast back). From an int or bool
    # the input is not differentiable; into an int or bool the result is not.
    (x,) = n.args
    src = g.type(x).dtype
    if g.type(x).is_float and n.type.is_float:
        return [g.op("cast", ct, dtype=src)]
    return [None]


cast.numpy(lambda cg, n, x: f"np.asarray({x}, dtype={cg.dtype(n.attrs['dtype'])})")
cast.torch(lambda cg, n, x: f"{x}.to({cg.dtype(n.attrs['dtype'])})")
cast.onnx(lambda o, n, x: o.cast(x, n.attrs["dtype"]))
