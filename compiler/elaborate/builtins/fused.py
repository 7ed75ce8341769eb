"""Builtins for the composite ops (`compiler/primitives/composite.py`).

Each is one op with a decomposition (the std library's formula, and the fallback)
and native lowerings where a backend has a fused kernel; the std library's
`cross_entropy`, `LayerNorm`, `gelu` and `attention` call them, so specs keep
reading like the notes and the compiler picks the kernel.
"""
from __future__ import annotations

from dsl.errors import SpecError

from compiler.elaborate.builtins.base import _bind, _tensor, builtin


@builtin()
def softmax_cross_entropy(ev, args, kwargs, span):
    """softmax_cross_entropy(logits, labels): mean over labels of -log_softmax(logits)[label]"""
    b = _bind("softmax_cross_entropy", args, kwargs, span, ["logits", "labels"], {})
    return ev.add("softmax_cross_entropy", [_tensor(ev, b["logits"], span, "logits"),
                                            _tensor(ev, b["labels"], span, "labels")], span)


@builtin()
def layer_norm(ev, args, kwargs, span):
    """layer_norm(x, gamma, beta, eps=1e-5): normalise the last axis, then scale and shift"""
    b = _bind("layer_norm", args, kwargs, span, ["x", "gamma", "beta", "eps"], {"eps": 1e-5})
    eps = b["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise SpecError("layer_norm: eps must be a number", span)
    return ev.add("layer_norm", [_tensor(ev, b[k], span, k) for k in ("x", "gamma", "beta")],
                  span, eps=float(eps))


@builtin()
def gelu_erf(ev, args, kwargs, span):
    """gelu_erf(x): x Φ(x), the exact (erf) GELU"""
    b = _bind("gelu_erf", args, kwargs, span, ["x"], {})
    return ev.add("gelu", [_tensor(ev, b["x"], span)], span)


@builtin()
def dot_product_attention(ev, args, kwargs, span):
    """dot_product_attention(q, k, v, keep=true): softmax(q kᵀ/√d, dropped keys -1e9) v"""
    b = _bind("dot_product_attention", args, kwargs, span, ["q", "k", "v", "keep"],
              {"keep": True})
    keep = b["keep"]
    keep = ev.to_tensor(keep, span) if isinstance(keep, bool) else _tensor(ev, keep, span, "keep")
    return ev.add("attention", [_tensor(ev, b[k], span, k) for k in ("q", "k", "v")] + [keep], span)



def _std_cell(cell):
    """The fused op of `cell` when it is an instance of a std cell (`LSTMCell`, `GRUCell`
    of specs/std/recurrent.dl), else None."""
    from compiler.core.values import Instance
    if not isinstance(cell, Instance):
        return None
    if cell.defn.name == "LSTMCell" and set(cell.params) == {"W", "U", "b"} \
            and "forget_bias" in cell.hparams:
        return "lstm"
    if cell.defn.name == "GRUCell" and set(cell.params) == {"W", "U", "bx", "bh"}:
        return "gru"
    return None


@builtin()
def rnn_scan(ev, args, kwargs, span):
    """rnn_scan(cell, x, init, reverse=false): scan(cell, x, init = init, axis = 1, reverse = reverse); a std LSTMCell or GRUCell runs as one fused op"""
    from compiler.core.types import TypeMismatch
    from compiler.core.values import Tensor
    from compiler.elaborate.builtins.forms import scan
    b = _bind("rnn_scan", args, kwargs, span, ["cell", "x", "init", "reverse"], {"reverse": False})
    cell, x, init, reverse = b["cell"], b["x"], b["init"], b["reverse"]
    # the scan as written: it creates the cell's parameters (on its first call) and is the
    # result whenever the fused op does not apply; when it does, the scan is dead code
    out = scan(ev, [cell, x], {"init": init, "axis": 1, "reverse": reverse}, span)
    op = _std_cell(cell)
    states = init if isinstance(init, tuple) else (init,)
    if op is None or not isinstance(x, Tensor) or not isinstance(reverse, bool) \
            or len(states) != (2 if op == "lstm" else 1) \
            or not all(isinstance(t, Tensor) for t in states):
        return out
    p = cell.params
    try:
        if op == "lstm":
            t = ev.add("lstm", [*states, x, p["W"], p["U"], p["b"]], span,
                       forget_bias=float(cell.hparams["forget_bias"]), reverse=reverse)
        else:
            t = ev.add("gru", [*states, x, p["W"], p["U"], p["bx"], p["bh"]], span, reverse=reverse)
    except TypeMismatch:  # not the shapes the fused op takes (no batch axis, say): the scan
        return out
    res = [ev.add("tuple_get", [t], span, index=i) for i in range(len(states) + 1)]
    return (tuple(res[:-1]) if op == "lstm" else res[0], res[-1])
