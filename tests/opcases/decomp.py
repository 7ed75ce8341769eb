"""Test cases for compiler/primitives/decomp.py (schema: tests/opcases/__init__.py).

Inputs are well conditioned (condition numbers below ~100) so that float64 finite
differences (eps 1e-6) meet the runner's tolerances; ill-conditioned inputs are in
tests/test_linalg.py with their own tolerances. References are torch.linalg /
torch.sort, with the sign conventions of the primitives applied to torch's output.
Multi-result primitives (eigh, svd, qr) are grad-checked through autodiff in
tests/test_linalg.py (the runner here applies single-result VJP rules only).
"""
from __future__ import annotations

import numpy as np
import torch

from . import Case


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def spd(*batch, n=4):
    """A symmetric positive-definite stack, eigenvalues in about [1, 10]."""
    def make(rng):
        a = rng.standard_normal(batch + (n, n))
        return a @ np.swapaxes(a, -1, -2) / n + np.eye(n)
    return make


def well(*batch, n=4):
    """A general square stack, well conditioned: I*3 + noise."""
    return lambda rng: 3 * np.eye(n) + rng.standard_normal(batch + (n, n))


def lower_tri(*batch, n=4):
    """A full matrix whose lower triangle is well conditioned (upper part is noise)."""
    return lambda rng: np.tril(rng.standard_normal(batch + (n, n)), -1) * 0.5 \
        + np.diag(rng.uniform(1.5, 3.0, n)) + np.triu(rng.standard_normal(batch + (n, n)), 1)


def distinct(*shape):
    n = int(np.prod(shape))
    return lambda rng: ((rng.permutation(n) - n / 2) * 0.5 + rng.uniform(-0.1, 0.1, n)).reshape(shape)


def _colsign(v):
    idx = torch.argmax(v.abs(), dim=-2, keepdim=True)
    return torch.sign(torch.gather(v, -2, idx))


def _eigh(a):
    w, v = torch.linalg.eigh((a + a.mT) / 2)
    return w, v * _colsign(v)


def _svd(a):
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    c = _colsign(u)
    return u * c, s, vh * c.mT


def _qr(a):
    q, r = torch.linalg.qr(a)
    d = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    return q * d[..., None, :], r * d[..., :, None]


def _tri(lower, transpose):
    def ref(a, b):
        t = torch.tril(a) if lower else torch.triu(a)
        if transpose:
            t = t.mT
        return torch.linalg.solve_triangular(t, b, upper=(lower == transpose))
    return ref


def _upper_tri(*batch, n=4):
    f = lower_tri(*batch, n=n)
    return lambda rng: np.ascontiguousarray(np.swapaxes(f(rng), -1, -2))


CASES = [
    Case("eye", [], attrs={"length": 3, "dtype": "f64"}, ref=lambda: torch.eye(3, dtype=torch.float64)),
    Case("diagonal", [normal(4, 4)], ref=lambda a: torch.diagonal(a, dim1=-2, dim2=-1),
         second_order=True),
    Case("diagonal", [normal(2, 3, 3)], ref=lambda a: torch.diagonal(a, dim1=-2, dim2=-1),
         name="batched", second_order=True),
    Case("diag", [normal(4)], ref=torch.diag_embed, second_order=True),
    Case("diag", [normal(2, 3)], ref=torch.diag_embed, name="batched", second_order=True),
    Case("cholesky", [spd()], ref=lambda a: torch.linalg.cholesky((a + a.mT) / 2),
         second_order=True),
    Case("cholesky", [spd(2, n=3)], ref=lambda a: torch.linalg.cholesky((a + a.mT) / 2),
         name="batched", second_order=True),
    Case("triangular_solve", [lower_tri(), normal(4, 2)], attrs={"lower": True, "transpose": False},
         ref=_tri(True, False), name="lower", second_order=True),
    Case("triangular_solve", [_upper_tri(), normal(4, 3)], attrs={"lower": False, "transpose": False},
         ref=_tri(False, False), name="upper", second_order=True),
    Case("triangular_solve", [lower_tri(2, n=3), normal(2, 3, 2)],
         attrs={"lower": True, "transpose": True}, ref=_tri(True, True), name="lower_T_batched",
         second_order=True),
    Case("triangular_solve", [_upper_tri(n=3), normal(3, 1)], attrs={"lower": False, "transpose": True},
         ref=_tri(False, True), name="upper_T", second_order=True),
    Case("solve", [well(), normal(4, 2)], ref=torch.linalg.solve, second_order=True),
    Case("solve", [well(2, n=3), normal(2, 3, 3)], ref=torch.linalg.solve, name="batched",
         second_order=True),
    # a row swap is needed at the first pivot (|A[0,0]| small)
    Case("solve", [np.array([[1e-3, 2.0, 0.5], [3.0, 1.0, -1.0], [0.5, -2.0, 4.0]]), normal(3, 2)],
         ref=torch.linalg.solve, name="pivoting", second_order=True),
    Case("logabsdet", [well()], ref=lambda a: torch.linalg.slogdet(a)[1], second_order=True),
    Case("logabsdet", [well(3, n=3)], ref=lambda a: torch.linalg.slogdet(a)[1], name="batched",
         second_order=True),
    Case("logabsdet", [np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [2.0, 1.0, 0.5]])],
         ref=lambda a: torch.linalg.slogdet(a)[1], name="negative_det", second_order=True),
    Case("det_sign", [np.array([[[0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [2.0, 1.0, 0.5]],
                                [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])],
         ref=lambda a: torch.linalg.slogdet(a)[0]),
    Case("eigh", [normal(4, 4)], ref=_eigh, atol=1e-10),
    Case("eigh", [normal(2, 3, 3)], ref=_eigh, name="batched", atol=1e-10),
    Case("svd", [normal(4, 3)], ref=_svd, name="tall", atol=1e-10),
    Case("svd", [normal(3, 5)], ref=_svd, name="wide", atol=1e-10),
    Case("svd", [normal(2, 3, 3)], ref=_svd, name="batched", atol=1e-10),
    Case("qr", [normal(5, 3)], ref=_qr, name="tall", atol=1e-10),
    Case("qr", [normal(2, 3, 3)], ref=_qr, name="batched", atol=1e-10),
    Case("sort", [distinct(3, 5)], attrs={"axis": -1}, ref=lambda x: torch.sort(x, dim=-1).values,
         second_order=True),
    Case("sort", [distinct(4, 3)], attrs={"axis": 0, "descending": True},
         ref=lambda x: torch.sort(x, dim=0, descending=True).values, name="axis0_desc",
         second_order=True),
    Case("sort", [distinct(2, 6)], attrs={"axis": 1, "descending": True, "k": 2},
         ref=lambda x: torch.topk(x, 2, dim=1).values, name="topk", second_order=True),
    Case("argsort", [distinct(3, 5)], attrs={"axis": -1},
         ref=lambda x: torch.sort(x, dim=-1).indices),
    Case("argsort", [np.array([[2.0, 1.0, 2.0, 1.0, 3.0]])], attrs={"axis": -1, "descending": True},
         ref=lambda x: torch.sort(x, dim=-1, descending=True, stable=True).indices, name="ties_desc"),
    Case("argsort", [np.array([[3, 1, 3, 0]], dtype=np.int64)], attrs={"axis": -1, "k": 3},
         ref=lambda x: torch.sort(x, dim=-1, stable=True).indices[..., :3], name="ints_topk"),
]
