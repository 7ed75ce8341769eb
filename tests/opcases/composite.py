"""Test cases for compiler/primitives/composite.py (schema: tests/opcases/__init__.py).

References are independent torch functions in float64; the gradient checks run the
composites' own fused VJP rules against finite differences. (tests/test_composites.py
checks the native lowerings against the decompositions.)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import Case


def normal(*shape, scale=1.0, shift=0.0):
    return lambda rng: shift + scale * rng.standard_normal(shape)


def ints(lo, hi, *shape):
    return lambda rng: rng.integers(lo, hi, shape).astype(np.int64)


def _mask(*shape):
    def make(rng):
        m = rng.random(shape) > 0.4
        m[..., 0] = True  # keep one key per row: a fully dropped row is a separate case
        return m
    return make


def _attn_ref(q, k, v, keep):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(torch.where(keep, s, torch.tensor(-1e9, dtype=s.dtype)), -1) @ v


def _vjp_ref(fn, wrt, ct, *rest):
    """Independent reference of a fused VJP: torch autograd of `fn` (float64)."""
    leaves = [t.clone().requires_grad_() for t in wrt]
    with torch.enable_grad():
        return torch.autograd.grad(fn(*leaves, *rest), leaves, ct)


def _ln_grad_ref(x, g, ct, eps):
    return _vjp_ref(lambda x, g, b: F.layer_norm(x, (x.shape[-1],), g, b, eps),
                    [x, g, torch.zeros_like(g)], ct)


def _gelu_grad_ref(ct, x):
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return ct * (cdf + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi))


CASES = [
    Case("softmax_cross_entropy", [normal(4, 6, scale=2.0), ints(0, 6, 4)],
         ref=lambda z, y: F.cross_entropy(z, y)),
    Case("softmax_cross_entropy", [normal(2, 3, 5), ints(0, 5, 2, 3)], name="batched",
         ref=lambda z, y: F.cross_entropy(z.reshape(-1, 5), y.reshape(-1))),
    # the loss's VJP in z (its own op, so NumPy fuses it with the loss); second order
    # is the decomposition's VJP, grad-checked here
    Case("softmax_cross_entropy_grad", [normal(4, 6, scale=2.0), ints(0, 6, 4),
                                        lambda rng: np.array(0.7)],
         ref=lambda z, y, ct: (torch.softmax(z, -1) - F.one_hot(y, 6).to(z.dtype)) * ct / 4),
    Case("softmax_cross_entropy_grad", [normal(2, 3, 5), ints(0, 5, 2, 3),
                                        lambda rng: np.array(1.3)], name="batched",
         ref=lambda z, y, ct: (torch.softmax(z, -1) - F.one_hot(y, 5).to(z.dtype)) * ct / 6),
    Case("layer_norm", [normal(3, 8, scale=2.0, shift=1.0), normal(8), normal(8)],
         {"eps": 1e-5}, ref=lambda x, g, b: F.layer_norm(x, (8,), g, b, 1e-5)),
    Case("layer_norm", [normal(2, 3, 4), normal(4), normal(4)], {"eps": 0.1}, name="eps",
         ref=lambda x, g, b: F.layer_norm(x, (4,), g, b, 0.1)),
    Case("gelu", [normal(4, 5, scale=3.0)], ref=lambda x: F.gelu(x), second_order=True),
    Case("gelu_grad", [normal(4, 5), normal(4, 5, scale=3.0)], ref=_gelu_grad_ref),
    Case("attention", [normal(2, 4, 8), normal(2, 5, 8), normal(2, 5, 3), _mask(2, 1, 5)],
         ref=_attn_ref),
    Case("attention", [normal(2, 2, 3, 4), normal(2, 2, 3, 4), normal(2, 2, 3, 4),
                       lambda rng: np.ones((), bool)], name="keep_all", ref=_attn_ref),
    # the fused VJPs (multi-result: values here; their own derivatives, second order of
    # the op, against finite differences in tests/test_composites.py)
    Case("layer_norm_grad", [normal(3, 8, scale=2.0, shift=1.0), normal(8), normal(3, 8)],
         {"eps": 1e-5}, ref=lambda x, g, ct: _ln_grad_ref(x, g, ct, 1e-5)),
    Case("attention_grad", [normal(2, 4, 8), normal(2, 5, 8), normal(2, 5, 3), _mask(2, 1, 5),
                            normal(2, 4, 3)],
         ref=lambda q, k, v, keep, ct: _vjp_ref(lambda q, k, v: _attn_ref(q, k, v, keep),
                                                [q, k, v], ct)),
]


def _pos(*shape):
    return lambda rng: rng.uniform(0.1, 2.0, shape)


CASES += [
    Case("lerp", [normal(3, 4), normal(3, 4)], {"w": 0.1}, ref=lambda a, b: torch.lerp(a, b, 0.1)),
    Case("lerp", [normal(3, 4), normal(4)], {"w": 0.3}, name="broadcast",
         ref=lambda a, b: 0.7 * a + 0.3 * b),
    Case("adam_param", [normal(3, 4), normal(3, 4), _pos(3, 4), lambda rng: np.array(0.01),
                        lambda rng: np.array(0.3)], {"eps": 1e-8},
         ref=lambda p, m, v, s, c: p - s * m / (torch.sqrt(v) / c + 1e-8)),
]
