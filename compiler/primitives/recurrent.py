"""Recurrent composites: the std LSTM as one op (issue 11, composite ops with native
lowerings), laid out as `composite.py`: declaration, decomposition, fused VJP, native
lowerings.

``lstm(h0, c0, x, W, U, b)`` is `specs/std/recurrent.dl`'s ``LSTM``: the ``LSTMCell``
scanned over axis 1 of x [B, T, in] (W [in, 4H], U [H, 4H], b [4H], gates i, f, g, o;
attrs ``forget_bias``, ``reverse``), results (h_T, c_T, ys [B, T, H]) like the scan's.
Its decomposition is that scan, built here node for node as the std cell reads; the
NumPy and ONNX backends inline it. Torch runs `torch._VF.lstm` (one fused kernel, cuDNN
on a GPU) and the VJP is ``lstm_grad``, whose torch lowering takes torch's fused
backward; its decomposition, the decomposition's VJP, needs autodiff (a later layer),
which registers it: `compiler/transform/autodiff.py`.

``pack(*xs)`` is the tuple of its arguments: the one result of a multi-result
decomposition (``lstm_grad``'s six cotangents).
"""
from __future__ import annotations

from compiler.core.types import TensorType, TypeMismatch
from compiler.primitives._rules import require_float
from compiler.primitives.table import defprim

# ============================================================================
# pack: several values as one multi-result node
# ============================================================================

pack = defprim("pack", "(x_0, ..., x_n): its arguments as one tuple", None,
               lambda ts, attrs: tuple(ts))


@pack.vjp
def _(g, n, cts):
    return list(cts)


pack.numpy(lambda cg, n, *xs: "(" + "".join(f"{x}, " for x in xs) + ")")
pack.torch(lambda cg, n, *xs: "(" + "".join(f"{x}, " for x in xs) + ")")
pack.onnx(lambda o, n, *xs: list(xs))


# ============================================================================
# lstm: the std LSTM layer over a whole sequence
# ============================================================================


def _lstm_type(ts, attrs):
    h0, c0, x, w, u, b = ts
    for t in ts:
        require_float(t)
        if t.dtype != x.dtype:
            raise TypeMismatch(f"lstm: every operand must be {x.dtype}, got {t}")
    if x.rank != 3 or h0.rank != 2:
        raise TypeMismatch(f"lstm: x must be [B, T, in] and h0 [B, H], got {x} and {h0}")
    bsz, length, d_in = x.shape
    hid = h0.shape[1]
    if c0 != h0 or h0.shape[0] != bsz:
        raise TypeMismatch(f"lstm: h0 {h0} and c0 {c0} must both be [{bsz}, H]")
    gates = 4 * hid if isinstance(hid, int) else None
    for what, t, want in (("W", w, (d_in, gates)), ("U", u, (hid, gates)), ("b", b, (gates,))):
        if gates is None or tuple(t.shape) != want:
            raise TypeMismatch(f"lstm: {what} must be {list(want)}, got {t}")
    if not isinstance(attrs.get("forget_bias"), float) or not isinstance(attrs.get("reverse"), bool):
        raise TypeMismatch("lstm: attrs forget_bias (float) and reverse (bool)")
    return (h0, c0, TensorType(x.dtype, (bsz, length, hid)))


lstm = defprim("lstm", "the std LSTM cell scanned over axis 1: (h_T, C_T, z_1..z_T)", 6, _lstm_type)


def _lstm_body(g, x_t, h, w, u, b, forget_bias: float):
    """The std `LSTMCell` step as a scan body: (h, c, x_t, W, U, b) -> (h', c', h')."""
    body = type(g)(f"{g.name}.lstm")  # a Graph (compiler.core.ir imports this table)

    def inp(name, t):
        return body.add("input", (), {"name": name, "dtype": t.dtype, "shape": tuple(t.shape)})

    hh, cc, xx = inp("carry0", h), inp("carry1", h), inp("x0", x_t)
    ww, uu, bb = inp("W", w), inp("U", u), inp("b", b)
    pre = body.op("add", body.op("add", body.op("matmul", xx, ww), body.op("matmul", hh, uu)), bb)
    hid = h.shape[-1]
    i, f, g, o = (body.op("slice", pre, axis=1, start=k * hid, stop=(k + 1) * hid, step=1)
                  for k in range(4))
    if forget_bias != 0.0:
        f = body.op("add", f, body.scalar_like(forget_bias, f))
    c2 = body.op("add", body.op("mul", body.op("sigmoid", f), cc),
                 body.op("mul", body.op("sigmoid", i), body.op("tanh", g)))
    h2 = body.op("mul", body.op("sigmoid", o), body.op("tanh", c2))
    body.inputs = [hh, cc, xx, ww, uu, bb]
    body.meta["results"] = [h2, c2, h2]
    return body


@lstm.decompose
def _(g, args, attrs):
    h0, c0, x, w, u, b = args
    tx = g.type(x)
    x_t = tx.with_shape((tx.shape[0], tx.shape[2]))
    body = _lstm_body(g, x_t, g.type(h0), g.type(w), g.type(u), g.type(b), attrs["forget_bias"])
    length = tx.shape[1]
    return g.op("scan", h0, c0, x, w, u, b, body=body, n_carry=2, n_x=1, n_const=3, axis=1,
                reverse=attrs["reverse"], length=length if isinstance(length, int) else str(length))


def _zeros_of(g, n):
    t = g.type(n)
    if all(isinstance(d, int) for d in t.shape):
        return g.const(0.0, t.dtype, t.shape)
    return g.op("broadcast_like", g.scalar_like(0.0, n), n)


def _lstm_vjp(g, n, cts, needed=(True,) * 6):
    # one fused node for the whole backward through time; an unused result's cotangent is
    # 0; `needed` (which operands autodiff wants: not the data x, nor zero initial states)
    # spares the decomposition those cotangents' per-step products
    cts = [c if c is not None else _zeros_of(g, g.op("tuple_get", n.id, index=i))
           for i, c in enumerate(cts)]
    back = g.op("lstm_grad", *n.args, *cts, needed=tuple(bool(k) for k in needed), **n.attrs)
    return [g.op("tuple_get", back, index=i) if k else None for i, k in enumerate(needed)]


_lstm_vjp.wants_needed = True
lstm.vjp(_lstm_vjp)


def _lstm_torch(cg, n, *srcs):
    a = n.attrs
    return f"{cg.helper('lstm_seq')}({', '.join(srcs)}, {a['forget_bias']!r}, {a['reverse']!r})"


lstm.torch(_lstm_torch)
# NumPy inlines the decomposition; ONNX too (its LSTM op would serve inference only)


def _lstm_grad_type(ts, attrs):
    needed = attrs.get("needed")
    if not (isinstance(needed, tuple) and len(needed) == 6 and all(isinstance(k, bool) for k in needed)):
        raise TypeMismatch("lstm_grad: attr needed is 6 bools (which cotangents to compute)")
    fwd = _lstm_type(ts[:6], attrs)
    for what, t, want in zip(("h_T", "C_T", "ys"), ts[6:], fwd):
        if t != want:
            raise TypeMismatch(f"lstm_grad: the cotangent of {what} must be {want}, got {t}")
    return tuple(ts[:6])


lstm_grad = defprim(
    "lstm_grad", "cotangents of (h0, C0, x, W, U, b) for those of lstm's (h_T, C_T, ys)", 9,
    _lstm_grad_type)


def _lstm_grad_torch(cg, n, *srcs):
    a = n.attrs
    return (f"{cg.helper('lstm_seq_vjp')}({', '.join(srcs)}, {a['forget_bias']!r}, "
            f"{a['reverse']!r}, {a['needed']!r})")


lstm_grad.torch(_lstm_grad_torch)
