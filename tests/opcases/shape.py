"""Test cases for compiler/primitives/shape.py (schema: tests/opcases/__init__.py).

Every shape primitive is linear in its float argument, so every VJP is checked to
second order. Index arguments are int64 arrays (not differentiated).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Case


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def ints(lo, hi, *shape):
    return lambda rng: rng.integers(lo, hi, shape).astype(np.int64)


def fixed(values, dtype=np.int64):
    return lambda rng: np.array(values, dtype=dtype)


def _c(op, args, attrs, ref, name, **kw):
    return Case(op, args, attrs, ref=ref, name=name, second_order=True, **kw)


CASES = [
    # ---- reshape
    _c("reshape", [normal(2, 3, 4)], dict(shape=(6, -1)), lambda x: x.reshape(6, -1), "minus1"),
    _c("reshape", [normal(2, 3, 4)], dict(shape=(4, 6)), lambda x: x.reshape(4, 6), "static"),
    _c("reshape", [normal(24)], dict(shape=(2, -1, 4)), lambda x: x.reshape(2, -1, 4), "split"),
    _c("reshape", [normal()], dict(shape=(1, 1)), lambda x: x.reshape(1, 1), "scalar"),
    # ---- transpose
    _c("transpose", [normal(3, 4)], dict(perm=(1, 0)), lambda x: x.T, "2d"),
    _c("transpose", [normal(2, 3, 4)], dict(perm=(2, 0, 1)), lambda x: x.permute(2, 0, 1), "3d"),
    _c("transpose", [normal(2, 3, 4)], dict(perm=(-1, 0, -2)), lambda x: x.permute(2, 0, 1), "negative"),
    _c("transpose", [normal(2, 3, 4)], dict(perm=None), lambda x: x.permute(2, 1, 0), "reverse"),
    # ---- expand_dims / squeeze
    _c("expand_dims", [normal(3, 4)], dict(axis=0), lambda x: x.unsqueeze(0), "front"),
    _c("expand_dims", [normal(3, 4)], dict(axis=-1), lambda x: x.unsqueeze(-1), "back"),
    _c("expand_dims", [normal(3, 4)], dict(axis=1), lambda x: x.unsqueeze(1), "middle"),
    _c("squeeze", [normal(3, 1, 4)], dict(axis=1), lambda x: x.squeeze(1), "middle"),
    _c("squeeze", [normal(3, 4, 1)], dict(axis=-1), lambda x: x.squeeze(-1), "negative"),
    _c("squeeze", [normal(1, 4, 1)], dict(axis=(0, 2)), lambda x: x.reshape(4), "two"),
    # ---- broadcast_to / broadcast_like
    _c("broadcast_to", [normal(3, 1)], dict(shape=(2, 3, 4)), lambda x: x.expand(2, 3, 4), "lead"),
    _c("broadcast_to", [normal(4)], dict(shape=(3, 4)), lambda x: x.expand(3, 4), "rows"),
    _c("broadcast_to", [normal()], dict(shape=(2, 2)), lambda x: x.expand(2, 2), "scalar"),
    _c("broadcast_like", [normal(3, 1), normal(3, 4)], {}, lambda x, y: x.expand_as(y), "cols"),
    _c("broadcast_like", [normal(4), normal(2, 3, 4)], {}, lambda x, y: x.expand_as(y), "lead"),
    _c("broadcast_like", [normal(1, 1), normal(2, 5)], {}, lambda x, y: x.expand_as(y), "both"),
    # ---- concat
    _c("concat", [normal(2, 3), normal(4, 3)], dict(axis=0), lambda a, b: torch.cat([a, b], 0), "rows"),
    _c("concat", [normal(2, 1), normal(2, 3), normal(2, 2)], dict(axis=-1),
       lambda a, b, c: torch.cat([a, b, c], -1), "three"),
    _c("concat", [normal(2, 3, 2)], dict(axis=1), lambda a: a, "one"),
    # ---- slice (NumPy semantics)
    _c("slice", [normal(3, 7)], dict(axis=1, start=1, stop=-1, step=1), lambda x: x[:, 1:-1], "inner"),
    _c("slice", [normal(7, 2)], dict(axis=0, start=1, stop=None, step=2), lambda x: x[1::2], "step2"),
    _c("slice", [normal(2, 6)], dict(axis=-1, start=None, stop=None, step=-1),
       lambda x: x.flip(-1), "reverse"),
    _c("slice", [normal(8)], dict(axis=0, start=-2, stop=0, step=-3),
       lambda x: x[[6, 3]], "negstep"),
    _c("slice", [normal(2, 5)], dict(axis=1, start=-3, stop=100, step=1), lambda x: x[:, 2:], "clamp"),
    _c("slice", [normal(9, 2)], dict(axis=0, start=0, stop=8, step=3), lambda x: x[0:8:3], "step3"),
    # ---- take / scatter_add
    _c("take", [normal(5, 3), fixed([4, 0, 4, -1])], dict(axis=0), lambda x, i: x[i], "rows"),
    _c("take", [normal(2, 5, 3), ints(0, 5, 2, 3)], dict(axis=1), lambda x, i: x[:, i], "idx2d"),
    _c("take", [normal(2, 4), ints(-4, 4, 3)], dict(axis=-1), lambda x, i: x[:, i], "negaxis"),
    _c("take", [normal(6), fixed(3)], dict(axis=0), lambda x, i: x[i], "scalar_idx"),
    _c("scatter_add", [normal(4, 3), fixed([1, 3, 1, -1, 0]), normal(5, 3)], dict(axis=0),
       lambda like, i, u: torch.zeros_like(like).index_add(0, i % 4, u), "rows"),
    _c("scatter_add", [normal(2, 5), ints(0, 5, 2, 3), normal(2, 2, 3)], dict(axis=1),
       lambda like, i, u: torch.zeros_like(like).index_add(1, i.reshape(-1), u.reshape(2, -1)), "idx2d"),
    _c("scatter_add", [normal(3, 4, 2), ints(0, 4, 6), normal(3, 6, 2)], dict(axis=-2),
       lambda like, i, u: torch.zeros_like(like).index_add(1, i, u), "negaxis"),
    # ---- one_hot (nondiff)
    Case("one_hot", [fixed([[0, 3, 1], [2, -1, 7]])], dict(depth=4, dtype="f32"),
         ref=lambda i: (i.unsqueeze(-1) == torch.arange(4)).double(), name="out_of_range"),
    Case("one_hot", [ints(0, 5, 6)], dict(depth=5, dtype="i64"),
         ref=lambda i: F.one_hot(i, 5), name="int"),
    # ---- pad
    _c("pad", [normal(2, 3)], dict(pads=((1, 2), (0, 1)), value=0.0),
       lambda x: F.pad(x, (0, 1, 1, 2)), "zeros"),
    _c("pad", [normal(2, 3, 2)], dict(pads=((0, 0), (2, 0), (1, 1)), value=-1.5),
       lambda x: F.pad(x, (1, 1, 2, 0), value=-1.5), "value"),
    _c("pad", [normal(4)], dict(pads=((0, 3),), value=0.0), lambda x: F.pad(x, (0, 3)), "1d"),
    # ---- flip
    _c("flip", [normal(3, 4)], dict(axis=0), lambda x: x.flip(0), "rows"),
    _c("flip", [normal(2, 3, 4)], dict(axis=(0, 2)), lambda x: x.flip(0, 2), "two"),
    _c("flip", [normal(2, 3)], dict(axis=-1), lambda x: x.flip(-1), "negative"),
]
