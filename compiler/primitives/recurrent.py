"""Recurrent composites: the std LSTM and GRU as one op each (issue 11, composite ops
with native lowerings), laid out as `composite.py`: declaration, decomposition, fused
VJP, native lowerings.

``lstm(h0, c0, x, W, U, b)`` is `specs/std/recurrent.dl`'s ``LSTM``: the ``LSTMCell``
scanned over axis 1 of x [B, T, in] (W [in, 4H], U [H, 4H], b [4H], gates i, f, g, o;
attrs ``forget_bias``, ``reverse``), results (h_T, C_T, ys [B, T, H]) like the scan's.
``gru(h0, x, W, U, bx, bh)`` is ``GRU`` likewise (gates r, u, n; attr ``reverse``),
results (h_T, ys). Each decomposition is that scan, built here node for node as the
std cell reads; the NumPy backend inlines it. Torch runs `torch._VF.lstm` /
`torch._VF.gru` (one fused kernel, cuDNN on a GPU), ONNX its ``LSTM`` / ``GRU`` op in
float32 runs (backends/onnx/rnn.py, registered there; onnxruntime has no float64
kernels: float64 inlines the decomposition), and the VJP is one ``*_grad`` node
whose torch lowering takes torch's fused backward; its decomposition, the
decomposition's VJP, needs autodiff (a later layer), which registers it:
`compiler/transform/autodiff.py`.

``pack(*xs)`` is the tuple of its arguments: the one result of a multi-result
decomposition (the ``*_grad`` ops' six cotangents).
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
# shared: types, the scan, the fused VJP
# ============================================================================

# op -> (number of carries, gates, weight names after x, attrs beside `reverse`)
RNNS = {"lstm": (2, 4, ("W", "U", "b"), ("forget_bias",)),
        "gru": (1, 3, ("W", "U", "bx", "bh"), ())}


def _rnn_type(op, ts, attrs):
    nc, gates, weights, extra = RNNS[op]
    states, x, ws = ts[:nc], ts[nc], ts[nc + 1:]
    for t in ts:
        require_float(t)
        if t.dtype != x.dtype:
            raise TypeMismatch(f"{op}: every operand must be {x.dtype}, got {t}")
    if x.rank != 3 or states[0].rank != 2:
        raise TypeMismatch(f"{op}: x must be [B, T, in] and h0 [B, H], got {x} and {states[0]}")
    bsz, length, d_in = x.shape
    hid = states[0].shape[1]
    if any(s != states[0] for s in states) or states[0].shape[0] != bsz:
        raise TypeMismatch(f"{op}: the initial states {list(states)} must be [{bsz}, H]")
    width = gates * hid if isinstance(hid, int) else None
    shapes = {"W": (d_in, width), "U": (hid, width)}
    for what, t in zip(weights, ws):
        want = shapes.get(what, (width,))
        if width is None or tuple(t.shape) != want:
            raise TypeMismatch(f"{op}: {what} must be {list(want)}, got {t}")
    if not isinstance(attrs.get("reverse"), bool) or \
            any(not isinstance(attrs.get(k), float) for k in extra):
        raise TypeMismatch(f"{op}: attrs reverse (bool) {' '.join(k + ' (float)' for k in extra)}")
    return tuple(states) + (TensorType(x.dtype, (bsz, length, hid)),)


def _scan_of(op, g, args, attrs, step):
    """The scan of `step(body, states, x_t, weights) -> new states` over axis 1 of x."""
    nc = RNNS[op][0]
    tx = g.type(args[nc])
    body = type(g)(f"{g.name}.{op}")  # a Graph (compiler.core.ir imports this table)

    def inp(name, t):
        return body.add("input", (), {"name": name, "dtype": t.dtype, "shape": tuple(t.shape)})

    states = [inp(f"carry{i}", g.type(a)) for i, a in enumerate(args[:nc])]
    x_t = inp("x0", tx.with_shape((tx.shape[0], tx.shape[2])))
    ws = [inp(k, g.type(a)) for k, a in zip(RNNS[op][2], args[nc + 1:])]
    new = step(body, states, x_t, ws)
    body.inputs = states + [x_t] + ws
    body.meta["results"] = list(new) + [new[0]]
    length = tx.shape[1]
    return g.op("scan", *args, body=body, n_carry=nc, n_x=1, n_const=len(ws), axis=1,
                reverse=attrs["reverse"], length=length if isinstance(length, int) else str(length))


def _gates(body, pre, k, hid):
    return [body.op("slice", pre, axis=1, start=j * hid, stop=(j + 1) * hid, step=1)
            for j in range(k)]


def _zeros_of(g, n):
    t = g.type(n)
    if all(isinstance(d, int) for d in t.shape):
        return g.const(0.0, t.dtype, t.shape)
    return g.op("broadcast_like", g.scalar_like(0.0, n), n)


def _fused_vjp(g, n, cts, needed=None):
    # one fused node for the whole backward through time; an unused result's cotangent is
    # 0; `needed` (which operands autodiff wants: not the data x, nor zero initial states)
    # spares the decomposition those cotangents' per-step products
    needed = tuple(bool(k) for k in needed) if needed is not None else (True,) * len(n.args)
    cts = [c if c is not None else _zeros_of(g, g.op("tuple_get", n.id, index=i))
           for i, c in enumerate(cts)]
    back = g.op(f"{n.op}_grad", *n.args, *cts, needed=needed, **n.attrs)
    return [g.op("tuple_get", back, index=i) if k else None for i, k in enumerate(needed)]


_fused_vjp.wants_needed = True


def _grad_type(op):
    def infer(ts, attrs):
        n_args = len(ts) - (RNNS[op][0] + 1)
        needed = attrs.get("needed")
        if not (isinstance(needed, tuple) and len(needed) == n_args
                and all(isinstance(k, bool) for k in needed)):
            raise TypeMismatch(f"{op}_grad: attr needed is {n_args} bools (which cotangents)")
        fwd = _rnn_type(op, ts[:n_args], attrs)
        for i, (t, want) in enumerate(zip(ts[n_args:], fwd)):
            if t != want:
                raise TypeMismatch(f"{op}_grad: the cotangent of result {i} must be {want}, got {t}")
        return tuple(ts[:n_args])
    return infer


def _partners(cg, n, want_op, n_args):
    """The `want_op` nodes of the graph being lowered on the same operands and attrs
    (an op and its VJP: they share x, so both are among x's users)."""
    g = cg.graph
    fwd = {k: v for k, v in n.attrs.items() if k != "needed"}
    x = n.args[RNNS[want_op.removesuffix("_grad")][0]]
    return [u for u in g.users(x) if g.node(u).op == want_op
            and tuple(g.node(u).args[:n_args]) == tuple(n.args[:n_args])
            and {k: v for k, v in g.node(u).attrs.items() if k != "needed"} == fwd]


def _torch_fwd(op, extra=()):
    # with its VJP in the same program (a train step), the forward keeps torch's autograd
    # tape for it, so the backward is torch's fused backward alone, as in eager PyTorch
    def rule(cg, n, *srcs):
        a = n.attrs
        tail = [repr(a[k]) for k in extra] + [repr(a["reverse"])]
        grads = _partners(cg, n, op + "_grad", len(n.args))
        if len(grads) == 1:  # the tape serves one backward
            tail.append(repr(cg.graph.node(grads[0]).attrs["needed"]))
            return f"{cg.helper(op + '_seq_taped')}({', '.join(list(srcs) + tail)})"
        return f"{cg.helper(op + '_seq')}({', '.join(list(srcs) + tail)})"
    return rule


def _torch_grad(op, extra=()):
    def rule(cg, n, *srcs):
        a = n.attrs
        n_args = len(n.args) - (RNNS[op][0] + 1)
        taped = [m for m in _partners(cg, n, op, n_args) if m in cg.env]
        if taped and len(_partners(cg, cg.graph.node(taped[0]), op + "_grad", n_args)) == 1:
            cts = ", ".join(srcs[n_args:])
            return (f"{cg.helper('rnn_vjp_taped')}({cg.env[taped[0]]}[{RNNS[op][0] + 1}], "
                    f"({cts}), {a['needed']!r})")
        # no forward lowered before it (a program of the VJP alone): replay the forward
        tail = [repr(a[k]) for k in extra] + [repr(a["reverse"]), repr(a["needed"])]
        return f"{cg.helper(op + '_seq_vjp')}({', '.join(list(srcs) + tail)})"
    return rule


# ============================================================================
# lstm: the std LSTM layer over a whole sequence
# ============================================================================

lstm = defprim("lstm", "the std LSTM cell scanned over axis 1: (h_T, C_T, z_1..z_T)", 6,
               lambda ts, attrs: _rnn_type("lstm", ts, attrs))


@lstm.decompose
def _(g, args, attrs):
    forget_bias = attrs["forget_bias"]

    def step(body, states, x, ws):  # the std LSTMCell
        (h, c), (w, u, b) = states, ws
        pre = body.op("add", body.op("add", body.op("matmul", x, w), body.op("matmul", h, u)), b)
        i, f, gg, o = _gates(body, pre, 4, body.type(h).shape[-1])
        if forget_bias != 0.0:
            f = body.op("add", f, body.scalar_like(forget_bias, f))
        c2 = body.op("add", body.op("mul", body.op("sigmoid", f), c),
                     body.op("mul", body.op("sigmoid", i), body.op("tanh", gg)))
        return [body.op("mul", body.op("sigmoid", o), body.op("tanh", c2)), c2]
    return _scan_of("lstm", g, args, attrs, step)


lstm.vjp(_fused_vjp)
lstm.torch(_torch_fwd("lstm", ("forget_bias",)))
# NumPy inlines the decomposition; ONNX's rules (its LSTM/GRU ops): backends/onnx/rnn.py

lstm_grad = defprim(
    "lstm_grad", "cotangents of (h0, C0, x, W, U, b) for those of lstm's (h_T, C_T, ys)", 9,
    _grad_type("lstm"))
lstm_grad.torch(_torch_grad("lstm", ("forget_bias",)))


# ============================================================================
# gru: the std GRU layer over a whole sequence
# ============================================================================

gru = defprim("gru", "the std GRU cell scanned over axis 1: (h_T, h_1..h_T)", 6,
              lambda ts, attrs: _rnn_type("gru", ts, attrs))


@gru.decompose
def _(g, args, attrs):
    def step(body, states, x, ws):  # the std GRUCell
        (h,), (w, u, bx, bh) = states, ws
        hid = body.type(h).shape[-1]
        xr, xu, xn = _gates(body, body.op("add", body.op("matmul", x, w), bx), 3, hid)
        hr, hu, hn = _gates(body, body.op("add", body.op("matmul", h, u), bh), 3, hid)
        r = body.op("sigmoid", body.op("add", xr, hr))
        z = body.op("sigmoid", body.op("add", xu, hu))
        n = body.op("tanh", body.op("add", xn, body.op("mul", r, hn)))
        keep = body.op("sub", body.scalar_like(1.0, z), z)
        return [body.op("add", body.op("mul", keep, n), body.op("mul", z, h))]
    return _scan_of("gru", g, args, attrs, step)


gru.vjp(_fused_vjp)
gru.torch(_torch_fwd("gru"))

gru_grad = defprim(
    "gru_grad", "cotangents of (h0, x, W, U, bx, bh) for those of gru's (h_T, ys)", 8,
    _grad_type("gru"))
gru_grad.torch(_torch_grad("gru"))
