"""Runtime helpers for the linear-algebra and sorting primitives (PyTorch).

Same conventions as backends/numpy/prelude_linalg.py: `cholesky`/`eigh` read the
symmetric part, eigen/singular vectors are signed by their largest-|.| entry,
diag(R) >= 0 in QR, sorting is stable.
"""
from __future__ import annotations

import torch


def lin_sym(a):
    """(A + Aᵀ)/2 over the last two axes."""
    return (a + a.transpose(-1, -2)) * 0.5


def lin_colsign(v):
    """Per column, the sign of its largest-|.| entry, shaped [..., 1, n]."""
    idx = torch.argmax(v.abs(), dim=-2, keepdim=True)
    s = torch.sign(torch.gather(v, -2, idx))
    return torch.where(s == 0, torch.ones_like(s), s)


def lin_cholesky(a):
    """Lower Cholesky factor of sym(A); NaN where it is not positive definite."""
    low, info = torch.linalg.cholesky_ex(lin_sym(a))
    bad = (info > 0)[..., None, None]
    return torch.where(bad, torch.full_like(low, float("nan")), low)


def lin_triangular_solve(a, b, lower, transpose):
    """X with T X = B, T the lower/upper triangle of A (transposed when asked)."""
    t = torch.tril(a) if lower else torch.triu(a)
    upper = not lower
    if transpose:
        t, upper = t.transpose(-1, -2), lower
    return torch.linalg.solve_triangular(t, b, upper=upper, left=True)


def lin_eigh(a):
    """Eigenvalues (ascending) and signed eigenvectors of sym(A)."""
    w, v = torch.linalg.eigh(lin_sym(a))
    return w, v * lin_colsign(v)


def lin_svd(a):
    """Reduced SVD with signed U columns (Vh rows signed to match)."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    c = lin_colsign(u)
    return u * c, s, vh * c.transpose(-1, -2)


def lin_qr(a):
    """Reduced QR with diag(R) >= 0."""
    q, r = torch.linalg.qr(a)
    d = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    d = torch.where(d == 0, torch.ones_like(d), d)
    return q * d[..., None, :], r * d[..., :, None]


def lin_argsort(x, axis, descending, k):
    """Stable argsort along `axis` (ties: lower index first), first k entries."""
    idx = torch.sort(x, dim=axis, descending=descending, stable=True).indices
    return idx if k is None else idx.narrow(axis, 0, k)


def lin_sort(x, axis, descending, k):
    """Sorted values along `axis` (first k)."""
    return torch.gather(x, axis, lin_argsort(x, axis, descending, k))
