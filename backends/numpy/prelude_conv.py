"""NumPy runtime helpers for the shape, convolution and pooling primitives.

Each function is self-contained (it uses only ``np``) so the code generator can copy
it into a generated module on its own; lowerings compose them in one expression,
e.g. ``conv_forward(conv_windows(x, ...), w, groups)``. Layout is PyTorch's:
``x [B, C, *S]``, ``w [O, C/groups, *K]``, 1 or 2 spatial dims. Everything is
vectorised: sliding-window views plus einsum; the only Python loops run over
kernel offsets, never over pixels.
"""
import numpy as np


def conv_windows(x, kernel, stride, padding, dilation, fill):
    """[B, C, *S] -> [B, C, *S_out, *K]: every (dilated) window, as a strided view.

    ``fill`` is the padding value (0 for convolution and average pooling, -inf for
    max pooling).
    """
    n = len(kernel)
    if any(padding):
        x = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding), constant_values=fill)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    return win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
               + tuple(slice(None, None, d) for d in dilation)]


def conv_forward(win, w, groups):
    """Cross-correlation from windows [B, C, *S_out, *K] and weights [O, C/groups, *K]."""
    n = w.ndim - 2
    S, K = "xy"[:n], "ij"[:n]
    B, C = win.shape[:2]
    so, ks = win.shape[2:2 + n], w.shape[2:]
    O = w.shape[0]
    if groups == 1:
        # tensordot hands the whole contraction to one BLAS matmul (im2col)
        y = np.tensordot(win, w, axes=([1] + list(range(2 + n, 2 + 2 * n)), list(range(1, 2 + n))))
        return np.ascontiguousarray(np.moveaxis(y, -1, 1))
    g = groups
    y = np.einsum(f"bgc{S}{K},goc{K}->bgo{S}", win.reshape((B, g, C // g) + so + ks),
                  w.reshape((g, O // g) + w.shape[1:]), optimize=True)
    return y.reshape((B, O) + so)


def conv_transpose_nd(y, w, stride, padding, dilation, groups, output_padding):
    """The adjoint of `conv_forward` w.r.t. its input (PyTorch ``conv_transpose``).

    y [B, O, *S_out], w [O, C/groups, *K] -> [B, C, *S] with
    S = (S_out-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1.
    Each kernel offset adds one strided slab of the padded result.
    """
    n = w.ndim - 2
    S = "xy"[:n]
    B, O = y.shape[:2]
    so = y.shape[2:]
    ks = w.shape[2:]
    g = groups
    cg = w.shape[1]
    full = tuple((so[i] - 1) * stride[i] + dilation[i] * (ks[i] - 1) + 1 + output_padding[i]
                 for i in range(n))
    dt = np.result_type(y, w)
    slabs = [tuple(slice(k[i] * dilation[i], k[i] * dilation[i] + (so[i] - 1) * stride[i] + 1,
                         stride[i]) for i in range(n)) for k in np.ndindex(*ks)]
    if g == 1:
        # one BLAS product for all offsets, laid out [C, *K, B, *S_out] so that each
        # offset's slab is a plain strided add into a [C, B, *full] buffer
        cols = np.tensordot(w.reshape(O, -1), y, axes=([0], [1])).reshape((cg,) + ks + (B,) + so)
        acc = np.zeros((cg, B) + full, dtype=dt)
        for k, slab in zip(np.ndindex(*ks), slabs):
            acc[(slice(None), slice(None)) + slab] += cols[(slice(None),) + k]
        out = np.moveaxis(acc, 0, 1)[:, None]
    else:
        out = np.zeros((B, g, cg) + full, dtype=dt)
        yr = y.reshape((B, g, O // g) + so)
        wr = w.reshape((g, O // g) + w.shape[1:])
        for k, slab in zip(np.ndindex(*ks), slabs):
            out[(slice(None),) * 3 + slab] += np.einsum(
                f"bgo{S},goc->bgc{S}", yr, wr[(Ellipsis,) + k], optimize=True)
    crop = tuple(slice(p, f - p) for p, f in zip(padding, full))
    out = out[(slice(None),) * 3 + crop]
    return np.ascontiguousarray(out.reshape((B, g * cg) + out.shape[3:]))


def conv_weight_grad_nd(win, y, groups):
    """The adjoint of `conv_forward` w.r.t. its weights.

    win: windows of the input [B, C, *S_out, *K]; y: output cotangent [B, O, *S_out]
    -> [O, C/groups, *K].
    """
    n = y.ndim - 2
    S, K = "xy"[:n], "ij"[:n]
    B, C = win.shape[:2]
    so, ks = win.shape[2:2 + n], win.shape[2 + n:]
    O, g = y.shape[1], groups
    if g == 1:
        # contract batch and positions in one BLAS product: [C*|K|, B*S_out] @ [B*S_out, O]
        axes = [0] + list(range(2, 2 + n))
        dw = np.tensordot(win, y, axes=(axes, axes))  # [C, *K, O]
        return np.ascontiguousarray(np.moveaxis(dw, -1, 0))
    dw = np.einsum(f"bgc{S}{K},bgo{S}->goc{K}", win.reshape((B, g, C // g) + so + ks),
                   y.reshape((B, g, O // g) + so), optimize=True)
    return dw.reshape((O, C // g) + ks)


def max_pool_scatter_nd(xwin, ct, x_shape, stride, padding):
    """Zeros shaped like x with ``ct`` added at each window's (first) maximum of x.

    xwin: windows of x padded with -inf [B, C, *S_out, *K]; ct [B, C, *S_out].
    Overlapping windows that share a maximum accumulate (bincount sums them).
    """
    n = len(stride)
    ks = xwin.shape[2 + n:]
    so = xwin.shape[2:2 + n]
    B, C = x_shape[:2]
    # first maximum of each window as a flat kernel index (NumPy's tie rule)
    a = xwin.reshape(xwin.shape[:2 + n] + (-1,)).argmax(-1)
    koff = np.unravel_index(a, ks)
    sp = tuple(x_shape[2 + i] + 2 * padding[i] for i in range(n))
    pos = 0
    for i in range(n):
        grid = np.arange(so[i]).reshape(tuple(-1 if j == i else 1 for j in range(n))) * stride[i]
        pos = pos * sp[i] + (grid + koff[i])
    plane = int(np.prod(sp))
    flat = (np.arange(B * C).reshape((B, C) + (1,) * n) * plane + pos).ravel()
    out = np.bincount(flat, weights=ct.ravel(), minlength=B * C * plane)
    out = out.astype(ct.dtype).reshape((B, C) + sp)
    return out[(slice(None), slice(None)) + tuple(slice(p, p + x_shape[2 + i])
                                                 for i, p in enumerate(padding))]


def max_pool_gather_nd(xwin, vwin):
    """Each window's value of v at the window's (first) maximum of x.

    xwin, vwin: windows of x (padded with -inf) and of v (padded with 0), same shape.
    """
    n = (xwin.ndim - 2) // 2
    a = xwin.reshape(xwin.shape[:2 + n] + (-1,)).argmax(-1)
    v = vwin.reshape(vwin.shape[:2 + n] + (-1,))
    return np.take_along_axis(v, a[..., None], -1)[..., 0]


def scatter_add_axis(like, idx, upd, axis):
    """Zeros shaped like ``like`` with ``upd`` added at ``idx`` along ``axis``.

    The adjoint of ``np.take(x, idx, axis)``: repeated indices accumulate.
    """
    out = np.zeros(like.shape, dtype=upd.dtype)
    np.add.at(out, (slice(None),) * axis + (idx,), upd)
    return out
