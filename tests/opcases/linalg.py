"""Test cases for compiler/primitives/linalg.py (schema: tests/opcases/__init__.py).

matmul follows NumPy ``@``: plain, batched, broadcast batch dims, a shared weight
matrix (the folded dW path), and every 1-D placement.
"""
from __future__ import annotations

import torch

from . import Case


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def _mm(a, b, name):
    return Case("matmul", [normal(*a), normal(*b)], ref=torch.matmul, name=name, second_order=True)


CASES = [
    _mm((3, 4), (4, 5), "2d"),
    _mm((2, 3, 4), (2, 4, 5), "batched"),
    _mm((2, 1, 3, 4), (3, 4, 2), "broadcast"),
    _mm((2, 3, 4), (4, 5), "shared_weight"),
    _mm((3, 4), (2, 4, 5), "shared_left"),
    _mm((4,), (4, 5), "vec_mat"),
    _mm((3, 4), (4,), "mat_vec"),
    _mm((4,), (4,), "dot"),
    _mm((4,), (2, 4, 3), "vec_batched"),
    _mm((2, 3, 4), (4,), "batched_vec"),
]
