"""ONNX lowerings of the recurrent composites (compiler/primitives/recurrent.py):
`lstm` -> ONNX ``LSTM``, `gru` -> ONNX ``GRU`` (linear_before_reset=1), one fused
kernel each in onnxruntime instead of a ``Loop`` whose every iteration costs tens of
microseconds.

dlc's layout -> ONNX's (opset 18, layout=0, one direction):

* x [B, T, in] -> X [T, B, in] (onnxruntime's CPU kernels reject layout=1);
* W [in, kH], U [H, kH] -> W [1, kH, in], R [1, kH, H], rows in ONNX's gate order:
  LSTM i, o, f, c from dlc's i, f, g, o; GRU z, r, h from dlc's r, u, n (u is z: dlc's
  h' = (1-u) n + u h is ONNX's H = (1-z) h~ + z H);
* LSTM: B = [b with forget_bias on the f rows, 0]; GRU: B = [bx, bh] (ONNX's Rbh sits
  inside r * (.), as dlc's bh_n does: linear_before_reset=1);
* reverse -> direction="reverse" (ONNX's Y stays in time order, as dlc's ys);
* results Y [T, 1, B, H], Y_h / Y_c [1, B, H] -> (h_T, [C_T,] ys [B, T, H]).

onnxruntime's CPU RNN kernels are float32-only: a float64 run inlines the
decomposition (exact) instead of computing the layer in float32. `lstm_grad` /
`gru_grad`: `rnn_grad.py` (they read the forward's ONNX Y [T, 1, B, H], left in
``o.root.memo``). The rules are attached by `register_rnn` (as `register_scan` does).
"""
from __future__ import annotations

import numpy as np

# ONNX gate order as indices of dlc's gate blocks
_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def _rows(op, hid):
    """Row indices taking dlc's gate blocks (of `hid` rows each) to ONNX's order."""
    return np.concatenate([np.arange(j * hid, (j + 1) * hid) for j in _ORDER[op]])


def native_ok(o, n):
    """The fused ONNX op applies: a float32 run with a static hidden size."""
    hid = o.type_of(n.args[0]).shape[1]
    return o.run_dtype == "f32" and isinstance(hid, int)


def inline(o, n):
    from .lower import inline_decomposition  # lower.py imports this module's users
    return inline_decomposition(o, n)


def weights(o, op, hid, w, u):
    """(W, R) in ONNX's layout: [1, kH, in] and [1, kH, H], gates reordered."""
    rows = o.ints(_rows(op, hid))
    zero = o.ints([0])
    return [o.op("Unsqueeze", o.op("Gather", o.op("Transpose", m, perm=[1, 0]), rows, axis=0), zero)
            for m in (w, u)]


def bias_rows(o, op, hid, b):
    return o.op("Gather", b, o.ints(_rows(op, hid)), axis=0)


def time_major(o, x):
    return o.op("Transpose", x, perm=[1, 0, 2])


def batch_major(o, y):
    """ONNX's Y [T, 1, B, H] as dlc's ys [B, T, H]: one Transpose (ORT folds the size-1 axis)."""
    return o.op("Reshape", o.op("Transpose", y, perm=[2, 0, 1, 3]), o.ints([0, 0, -1]))


def lstm_onnx(o, n, h0, c0, x, w, u, b):
    if not native_ok(o, n):
        return inline(o, n)
    a = n.attrs
    hid = o.type_of(n.args[0]).shape[1]
    wx, r = weights(o, "lstm", hid, w, u)
    wb = bias_rows(o, "lstm", hid, b)
    if a["forget_bias"] != 0.0:  # ONNX order i, o, f, c: the f rows are the third block
        fb = np.zeros(4 * hid)
        fb[2 * hid:3 * hid] = a["forget_bias"]
        wb = o.op("Add", wb, o.const(fb))
    bias = o.op("Unsqueeze", o.op("Concat", wb, o.const(np.zeros(4 * hid)), axis=0), o.ints([0]))
    zero = o.ints([0])
    y, yh, yc = o.op("LSTM", time_major(o, x), wx, r, bias, "", o.op("Unsqueeze", h0, zero),
                     o.op("Unsqueeze", c0, zero), outputs=3, hidden_size=hid,
                     direction="reverse" if a["reverse"] else "forward")
    ys = batch_major(o, y)
    o.root.memo[("onnx_y", ys)] = y  # for lstm_grad: no node here, inference needs none
    return [o.op("Squeeze", yh, zero), o.op("Squeeze", yc, zero), ys]


def gru_onnx(o, n, h0, x, w, u, bx, bh):
    if not native_ok(o, n):
        return inline(o, n)
    hid = o.type_of(n.args[0]).shape[1]
    wx, r = weights(o, "gru", hid, w, u)
    bias = o.op("Unsqueeze", o.op("Concat", bias_rows(o, "gru", hid, bx),
                                  bias_rows(o, "gru", hid, bh), axis=0), o.ints([0]))
    zero = o.ints([0])
    y, yh = o.op("GRU", time_major(o, x), wx, r, bias, "", o.op("Unsqueeze", h0, zero),
                 outputs=2, hidden_size=hid, linear_before_reset=1,
                 direction="reverse" if n.attrs["reverse"] else "forward")
    ys = batch_major(o, y)
    o.root.memo[("onnx_y", ys)] = y  # for gru_grad
    return [o.op("Squeeze", yh, zero), ys]


def lstm_grad_onnx(o, n, *srcs):
    # BPTT with only the recurrence per step (rnn_grad.py); the forward's hidden states
    # come from the `lstm` node on the same operands when it was lowered already
    from compiler.primitives.recurrent import _partners
    from .rnn_grad import lstm_grad
    t_x, hid = o.type_of(n.args[2]), o.type_of(n.args[0]).shape[1]
    if not all(isinstance(d, int) for d in (hid, t_x.shape[2])):
        return inline(o, n)
    fwd = [m for m in _partners(o, n, "lstm", 6) if m in o.env]
    return lstm_grad(o, n, *srcs, partner_ys=o.env[fwd[0]][2] if fwd else None)


def gru_grad_onnx(o, n, *srcs):
    # only beside its forward (a train step): alone, the decomposition's VJP (a Loop)
    from compiler.primitives.recurrent import _partners
    from .rnn_grad import gru_grad
    t_x, hid = o.type_of(n.args[1]), o.type_of(n.args[0]).shape[1]
    fwd = [m for m in _partners(o, n, "gru", 6) if m in o.env]
    if not fwd or not all(isinstance(d, int) for d in (hid, t_x.shape[2])):
        return inline(o, n)
    return gru_grad(o, n, *srcs, partner_ys=o.env[fwd[0]][1])


def register_rnn() -> None:
    """Attach the rules above to the recurrent primitives."""
    from compiler.primitives import get_primitive
    get_primitive("lstm").onnx(lstm_onnx)
    get_primitive("gru").onnx(gru_onnx)
    get_primitive("lstm_grad").onnx(lstm_grad_onnx)
    get_primitive("gru_grad").onnx(gru_grad_onnx)
