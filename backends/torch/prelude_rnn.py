"""Runtime helpers for the recurrent composites (`compiler/primitives/recurrent.py`):
the std LSTM on torch's fused kernel (`torch._VF.lstm`, cuDNN on a GPU) and its VJP
from torch's fused backward."""
from __future__ import annotations

import torch


def lstm_seq(h0, c0, x, W, U, b, forget_bias, reverse):
    """(h_T, c_T, ys) of the std LSTM over x [B, T, in] on torch's fused kernel.

    dlc keeps W [in, 4H], U [H, 4H] (gates i, f, g, o, torch's order) and one bias plus
    a constant forget bias; torch wants W_ih [4H, in], W_hh [4H, H] and two biases:
    the transposes, b with the forget bias added, and a zero recurrent bias. Reverse:
    run on the time-flipped input and flip the outputs back (y_t stays the step that
    read x_t)."""
    H = h0.shape[-1]
    if forget_bias != 0.0:
        b = torch.cat([b[:H], b[H:2 * H] + forget_bias, b[2 * H:]])
    if reverse:
        x = torch.flip(x, (1,))
    ys, h, c = torch._VF.lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)),
                              (W.t(), U.t(), b, torch.zeros_like(b)),
                              True, 1, 0.0, False, False, True)
    if reverse:
        ys = torch.flip(ys, (1,))
    return h[0], c[0], ys


def lstm_seq_vjp(h0, c0, x, W, U, b, gh, gc, gys, forget_bias, reverse, needed):
    """Cotangents of (h0, c0, x, W, U, b) for cotangents (gh, gc, gys) of `lstm_seq`'s
    results (zeros where not `needed`): the fused forward replayed with autograd on,
    then torch's fused backward (one recomputed forward, cheap next to the per-step
    loop it replaces)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(k) for t, k in zip((h0, c0, x, W, U, b), needed)]
        outs = lstm_seq(*leaves, forget_bias, reverse)
        want = [t for t, k in zip(leaves, needed) if k]
        grads = iter(torch.autograd.grad(outs, want, (gh, gc, gys), allow_unused=True))
    out = []
    for t, k in zip(leaves, needed):
        d = next(grads) if k else None
        out.append(torch.zeros_like(t) if d is None else d)
    return tuple(out)
