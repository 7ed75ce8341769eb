"""Test cases for compiler/primitives/conv.py (schema: tests/opcases/__init__.py).

Shapes are small because gradients are checked by finite differences one element at
a time. Pooling inputs are permutations of a 0.1-spaced grid plus tiny noise, so no
window has a tie within the difference step and every backend picks the same
maximum.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn import grad as tgrad

from . import Case


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def distinct(*shape):
    """Pairwise at least ~0.1 apart: no ties in any pooling window."""
    def gen(rng):
        n = int(np.prod(shape))
        v = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.02, 0.02, n)
        return v.reshape(shape)
    return gen


def _conv_ref(k, stride, padding, dilation, groups):
    f = {1: F.conv1d, 2: F.conv2d}[k]
    return lambda x, w: f(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_case(x, w, name, stride=None, padding=None, dilation=None, groups=1):
    k = len(x) - 2
    stride, padding, dilation = (stride or (1,) * k, padding or (0,) * k, dilation or (1,) * k)
    return Case("conv", [normal(*x), normal(*w)],
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                ref=_conv_ref(k, stride, padding, dilation, groups), name=name, second_order=True)


def convt_case(y, w, name, stride, padding, dilation, groups, output_padding):
    k = len(y) - 2
    f = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[k]
    return Case("conv_transpose", [normal(*y), normal(*w)],
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                     output_padding=output_padding),
                ref=lambda a, b: f(a, b, stride=stride, padding=padding, output_padding=output_padding,
                                   groups=groups, dilation=dilation),
                name=name, second_order=True)


def wgrad_case(x, y, kernel, name, stride, padding, dilation, groups):
    k = len(x) - 2
    f = {1: tgrad.conv1d_weight, 2: tgrad.conv2d_weight}[k]
    wshape = (y[1], x[1] // groups) + tuple(kernel)
    return Case("conv_weight_grad", [normal(*x), normal(*y)],
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups, kernel=kernel),
                ref=lambda a, b: f(a, wshape, b, stride=stride, padding=padding, dilation=dilation,
                                   groups=groups),
                name=name, second_order=True)


def _maxpool(k):
    return {1: F.max_pool1d, 2: F.max_pool2d}[k]


def pool_case(op, x, kernel, stride, padding, name):
    k = len(x) - 2
    if op == "max_pool":
        ref = lambda a: _maxpool(k)(a, kernel, stride, padding)  # noqa: E731
    else:
        f = {1: F.avg_pool1d, 2: F.avg_pool2d}[k]
        ref = lambda a: f(a, kernel, stride, padding, count_include_pad=True)  # noqa: E731
    return Case(op, [distinct(*x)], dict(kernel=kernel, stride=stride, padding=padding),
                ref=ref, name=name, second_order=True)


def _pooled(x, kernel, stride, padding):
    return tuple(x[:2]) + tuple((s + 2 * p - kk) // st + 1
                                for s, kk, st, p in zip(x[2:], kernel, stride, padding))


def scatter_case(x, kernel, stride, padding, name):
    k = len(x) - 2

    def ref(a, y):
        with torch.enable_grad():
            a = a.clone().requires_grad_(True)
            (d,) = torch.autograd.grad(_maxpool(k)(a, kernel, stride, padding), a, y)
        return d

    return Case("max_pool_scatter", [distinct(*x), normal(*_pooled(x, kernel, stride, padding))],
                dict(kernel=kernel, stride=stride, padding=padding), ref=ref, name=name,
                second_order=True)


def gather_case(x, kernel, stride, padding, name):
    k = len(x) - 2

    def ref(a, v):
        _, i = _maxpool(k)(a, kernel, stride, padding, return_indices=True)
        return v.flatten(2).gather(2, i.flatten(2)).view_as(i)

    return Case("max_pool_gather", [distinct(*x), normal(*x)],
                dict(kernel=kernel, stride=stride, padding=padding, size=tuple(x[2:])), ref=ref,
                name=name, second_order=True)


CASES = [
    # ---- conv
    conv_case((2, 3, 5, 5), (4, 3, 3, 3), "2d"),
    conv_case((1, 2, 6, 5), (3, 2, 3, 2), "2d_stride2_pad", stride=(2, 2), padding=(1, 1)),
    conv_case((2, 4, 7, 6), (6, 2, 3, 2), "2d_dilation_groups", stride=(1, 2), padding=(1, 0),
              dilation=(2, 1), groups=2),
    conv_case((1, 3, 5, 4), (3, 1, 2, 2), "2d_depthwise", padding=(1, 1), groups=3),
    conv_case((2, 3, 9), (4, 3, 3), "1d_stride_pad_dilation", stride=(2,), padding=(1,),
              dilation=(2,)),
    conv_case((2, 4, 8), (2, 2, 3), "1d_groups", groups=2),
    # ---- conv_transpose (conv's adjoint in x)
    convt_case((2, 4, 3, 3), (4, 3, 3, 3), "2d_stride2", (2, 2), (1, 1), (1, 1), 1, (1, 0)),
    convt_case((1, 4, 3, 2), (4, 1, 2, 3), "2d_groups_dilation", (1, 2), (0, 1), (2, 1), 2, (0, 1)),
    convt_case((2, 3, 4), (3, 2, 3), "1d", (3,), (1,), (1,), 1, (2,)),
    # ---- conv_weight_grad (conv's adjoint in w)
    wgrad_case((2, 3, 5, 5), (2, 4, 3, 3), (3, 3), "2d", (1, 1), (0, 0), (1, 1), 1),
    wgrad_case((1, 4, 6, 5), (1, 2, 3, 3), (3, 2), "2d_stride_groups", (2, 2), (1, 1), (1, 2), 2),
    wgrad_case((2, 2, 9), (2, 3, 4), (3,), "1d", (2,), (1,), (2,), 1),
    # ---- pooling
    pool_case("max_pool", (2, 2, 4, 4), (2, 2), (2, 2), (0, 0), "2d_k2"),
    pool_case("max_pool", (1, 2, 5, 6), (3, 3), (2, 2), (1, 1), "2d_overlap_pad"),
    pool_case("max_pool", (2, 3, 7), (3,), (1,), (1,), "1d"),
    pool_case("avg_pool", (2, 2, 4, 4), (2, 2), (2, 2), (0, 0), "2d_k2"),
    pool_case("avg_pool", (1, 2, 5, 6), (3, 3), (2, 2), (1, 1), "2d_overlap_pad"),
    pool_case("avg_pool", (2, 3, 7), (3,), (2,), (1,), "1d"),
    # ---- max-pool gradient routing
    scatter_case((1, 2, 5, 6), (3, 3), (2, 2), (1, 1), "2d_overlap_pad"),
    scatter_case((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), "2d_k2"),
    scatter_case((2, 3, 7), (3,), (1,), (1,), "1d"),
    gather_case((1, 2, 5, 6), (3, 3), (2, 2), (1, 1), "2d_overlap_pad"),
    gather_case((2, 2, 4, 4), (2, 2), (2, 2), (0, 0), "2d_k2"),
    gather_case((2, 3, 7), (3,), (1,), (1,), "1d"),
]
