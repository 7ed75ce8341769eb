"""Runtime helpers for the linear-algebra and sorting primitives (NumPy).

Conventions shared with the PyTorch and ONNX lowerings, so that the three backends
return the same numbers: `cholesky` and `eigh` read the symmetric part
``(A + Aᵀ)/2``; eigenvector and left-singular-vector columns are signed so that
their largest-magnitude entry is positive (the matching right-singular rows
follow); QR's R has a non-negative diagonal; sorting is stable (ties keep the
lower index first, in either direction).
"""
from __future__ import annotations

import numpy as np


def lin_sym(a):
    """(A + Aᵀ)/2 over the last two axes."""
    return (a + np.swapaxes(a, -1, -2)) * 0.5


def lin_colsign(v):
    """Per column, the sign of its largest-|.| entry (ties: the first), shaped [..., 1, n]."""
    idx = np.argmax(np.abs(v), axis=-2)[..., None, :]
    s = np.sign(np.take_along_axis(v, idx, axis=-2))
    return np.where(s == 0, 1, s).astype(v.dtype)


def lin_cholesky(a):
    """Lower Cholesky factor of sym(A); NaN for a matrix that is not positive definite."""
    a = lin_sym(a)
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        flat = a.reshape((-1,) + a.shape[-2:])
        out = np.full_like(flat, np.nan)
        for i in range(flat.shape[0]):
            try:
                out[i] = np.linalg.cholesky(flat[i])
            except np.linalg.LinAlgError:
                pass
        return out.reshape(a.shape)


def lin_triangular_solve(a, b, lower, transpose):
    """X with T X = B, T the lower/upper triangle of A (transposed when asked)."""
    t = np.tril(a) if lower else np.triu(a)
    if transpose:
        t = np.swapaxes(t, -1, -2)
    return np.linalg.solve(t, b)


def lin_eigh(a):
    """Eigenvalues (ascending) and signed eigenvectors of sym(A)."""
    w, v = np.linalg.eigh(lin_sym(a))
    return w, v * lin_colsign(v)


def lin_svd(a):
    """Reduced SVD with signed U columns (Vh rows signed to match)."""
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    c = lin_colsign(u)
    return u * c, s, vh * np.swapaxes(c, -1, -2)


def lin_qr(a):
    """Reduced QR with diag(R) >= 0."""
    q, r = np.linalg.qr(a)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    d = np.where(d == 0, 1, d).astype(r.dtype)
    return q * d[..., None, :], r * d[..., :, None]


def lin_argsort(x, axis, descending, k):
    """Stable argsort along `axis` (ties: lower index first), first k entries."""
    idx = np.argsort(-x if descending else x, axis=axis, kind="stable")
    if k is not None:
        idx = np.take(idx, np.arange(k), axis=axis)
    return idx.astype(np.int64)


def lin_sort(x, axis, descending, k):
    """Sorted values along `axis` (first k)."""
    return np.take_along_axis(x, lin_argsort(x, axis, descending, k), axis=axis)
