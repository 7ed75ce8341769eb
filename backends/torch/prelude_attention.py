"""Runtime helpers for the attention composite (`compiler/primitives/composite.py`):
in a train step the forward runs with autograd on and its VJP is torch's fused SDPA
backward on that tape (the flash kernel's on the CPU), as in eager PyTorch."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .prelude_rnn import rnn_taped, rnn_vjp, rnn_vjp_taped  # noqa: F401 (helpers)


def attention_seq(q, k, v, mask):
    """F.scaled_dot_product_attention as a one-result tuple (the taping helpers' form)."""
    return (F.scaled_dot_product_attention(q, k, v, attn_mask=mask),)


def attention_taped(q, k, v, mask):
    """(softmax(q kᵀ/√d + mask) v, the tape its one `attention_grad` reads)."""
    return rnn_taped(attention_seq, (q, k, v), (mask,), (True, True, True))


def attention_vjp(q, k, v, mask, ct):
    """(dq, dk, dv) with the forward replayed under autograd."""
    return rnn_vjp(attention_seq, (q, k, v), (ct,), (mask,), (True, True, True))
