"""Fused kernels for generated NumPy code: what a chain of ufunc calls would do in
more passes or with more temporaries (see `backends.numpy.prelude`)."""
from __future__ import annotations

import numpy as np


def relu_grad(ct, x):
    """ct where x > 0 else +0 (a NaN or inf ct at an inactive unit too): ct's bits ANDed
    with an all-ones or all-zeros mask. np.where is about 2x slower on a layer, and
    ct * (x > 0) would keep NaN * 0 = NaN."""
    bits = np.dtype(f"i{ct.dtype.itemsize}")
    mask = (x > 0).astype(bits)
    if mask.ndim == 0:  # a NumPy scalar takes no out=
        return (ct.view(bits) & -mask).view(ct.dtype)
    np.negative(mask, out=mask)  # 1 -> -1: every bit set
    return np.bitwise_and(ct.view(bits), mask, out=mask).view(ct.dtype)


def sce_parts(z, y):
    """Softmax cross-entropy's pieces over z's last axis, shared by the loss and its VJP:
    s = z - max z, e^s, its row sums, each label's flat index into s, and which labels
    are in [0, K) (None when all are; a label out of range reads its row's entry 0)."""
    k = z.shape[-1]
    s = z - np.maximum.reduce(z, axis=-1, keepdims=True)
    e = np.exp(s)
    tot = np.add.reduce(e, axis=-1, keepdims=True)
    labels = y.reshape(-1)
    # 0 <= label < K for all in one reduction: a negative label read unsigned is huge
    unsigned = labels.view(np.dtype(f"u{labels.dtype.itemsize}"))
    ok = None
    if np.maximum.reduce(unsigned, initial=0) >= k:
        ok = unsigned < k
        labels = np.where(ok, labels, 0)
    at = np.arange(0, labels.size * k, k) + labels
    return s, e, tot, ok, at


def sce_loss(parts):
    """-mean(log_softmax(z)[label]) from `sce_parts`; a label out of range adds a zero term.
    The picked shifted logit is subtracted from log Σ e^s (in [0, log K]), so a small loss
    keeps its digits at large logits. The mean is np.mean's: summed in float32 at least,
    divided by the label count."""
    s, e, tot, ok, at = parts
    terms = np.log(tot.reshape(-1)) - s.reshape(-1)[at]
    if ok is not None:
        terms = np.where(ok, terms, 0.0)
    total = np.add.reduce(terms, dtype=np.float32 if terms.dtype == np.float16 else None)
    return np.asarray(total / terms.size, dtype=s.dtype)


def sce_grad(parts, ct):
    """(softmax(z) - onehot(y)) · valid · ct / N from `sce_parts`: 1 subtracted at each
    label in place of a one-hot; a row whose label is out of range is multiplied by 0."""
    s, e, tot, ok, at = parts
    d = e / tot
    flat = d.reshape(-1)  # a view: d is a fresh contiguous array
    if ok is None:
        flat[at] -= 1
    else:
        flat[at[ok]] -= 1
        d *= ok.reshape(tot.shape)
    d *= ct / d.dtype.type(at.size)
    return d
