"""Runtime helpers for the recurrent composites (`compiler/primitives/recurrent.py`):
the std LSTM and GRU on torch's fused kernels (`torch._VF.lstm` / `gru`, cuDNN on a
GPU) and their VJPs from torch's fused backward.

dlc keeps W [in, gates * H] and U [H, gates * H] in torch's gate order (LSTM i, f, g, o;
GRU r, z, n); torch wants W_ih [gates * H, in] and W_hh [gates * H, H]: the transposes.
Reverse: run on the time-flipped input and flip the outputs back (y_t stays the step
that read x_t). Under `torch.compile` (`dlc train --compile`) they run eagerly (a
`torch.compiler.disable`d call while dynamo traces, a graph break): dynamo traces
neither the CPU kernel (mkldnn_rnn_layer) nor autograd inside a step, and the kernels
are fused already."""
from __future__ import annotations

import torch


def lstm_seq(h0, c0, x, W, U, b, forget_bias, reverse):
    """(h_T, c_T, ys) of the std LSTM over x [B, T, in]: one bias (with the constant
    forget bias added to its f block) as torch's input bias, a zero recurrent bias."""
    if torch.compiler.is_compiling():
        return torch.compiler.disable(lstm_seq)(h0, c0, x, W, U, b, forget_bias, reverse)
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
    """Cotangents of (h0, c0, x, W, U, b) for (gh, gc, gys), zeros where not `needed`."""
    return rnn_vjp(lstm_seq, (h0, c0, x, W, U, b), (gh, gc, gys), (forget_bias, reverse), needed)


def gru_seq(h0, x, W, U, bx, bh, reverse):
    """(h_T, ys) of the std GRU over x [B, T, in]: bx, bh are torch's two biases."""
    if torch.compiler.is_compiling():
        return torch.compiler.disable(gru_seq)(h0, x, W, U, bx, bh, reverse)
    if reverse:
        x = torch.flip(x, (1,))
    ys, h = torch._VF.gru(x, h0.unsqueeze(0), (W.t(), U.t(), bx, bh),
                          True, 1, 0.0, False, False, True)
    if reverse:
        ys = torch.flip(ys, (1,))
    return h[0], ys


def gru_seq_vjp(h0, x, W, U, bx, bh, gh, gys, reverse, needed):
    """Cotangents of (h0, x, W, U, bx, bh) for (gh, gys), zeros where not `needed`."""
    return rnn_vjp(gru_seq, (h0, x, W, U, bx, bh), (gh, gys), (reverse,), needed)


def rnn_vjp(fn, args, cts, attrs, needed):
    """The fused forward `fn` replayed with autograd on, then torch's fused backward
    (one recomputed forward, cheap next to the per-step loop it replaces)."""
    return rnn_vjp_taped(rnn_taped(fn, args, attrs, needed)[-1], cts, needed)


def lstm_seq_taped(h0, c0, x, W, U, b, forget_bias, reverse, needed):
    """`lstm_seq`'s results and, last, the tape its one `lstm_seq_vjp` replays instead."""
    return rnn_taped(lstm_seq, (h0, c0, x, W, U, b), (forget_bias, reverse), needed)


def gru_seq_taped(h0, x, W, U, bx, bh, reverse, needed):
    """`gru_seq`'s results and, last, the tape its one `gru_seq_vjp` replays instead."""
    return rnn_taped(gru_seq, (h0, x, W, U, bx, bh), (reverse,), needed)


def rnn_taped(fn, args, attrs, needed):
    """The fused forward run with autograd on (the `needed` operands as leaves) when the
    program also holds its VJP: the results (detached, as the rest of the program sees
    them) and the tape (leaves, results) from which `rnn_vjp_taped` gets the cotangents
    by torch's fused backward alone, as eager autograd does (no second forward)."""
    if torch.compiler.is_compiling():
        return torch.compiler.disable(rnn_taped)(fn, args, attrs, needed)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(k) for t, k in zip(args, needed)]
        outs = fn(*leaves, *attrs)
    return tuple(o.detach() for o in outs) + ((leaves, outs),)


def rnn_vjp_taped(tape, cts, needed):
    """Cotangents of the taped forward's operands (zeros where not `needed`)."""
    if torch.compiler.is_compiling():
        return torch.compiler.disable(rnn_vjp_taped)(tape, cts, needed)
    leaves, outs = tape
    want = [t for t, k in zip(leaves, needed) if k]
    grads = iter(torch.autograd.grad(outs, want, cts, allow_unused=True))
    out = []
    for t, k in zip(leaves, needed):
        d = next(grads) if k else None
        out.append(torch.zeros_like(t) if d is None else d)
    return tuple(out)
