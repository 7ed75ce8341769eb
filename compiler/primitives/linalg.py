"""Linear algebra: matmul with NumPy ``@`` semantics.

Operands of rank >= 2 are stacks of matrices whose batch dims broadcast; a 1-D
left operand is a row vector and a 1-D right operand a column vector, and the
added axis is dropped from the result (as NumPy does).
"""
from __future__ import annotations

from compiler.primitives.table import defprim
from compiler.core.types import TensorType, TypeMismatch, broadcast_shapes, dim_prod, shape_str


def _matmul_type(ts, attrs) -> TensorType:
    a, b = ts
    names = f"left is {a}, right is {b}"
    if a.rank == 0 or b.rank == 0:
        raise TypeMismatch(f"operands must have at least one axis ({names})")
    if not (a.is_float and b.is_float):
        raise TypeMismatch(f"expects float tensors ({names})")
    if a.dtype != b.dtype:
        raise TypeMismatch(f"dtypes differ: {a.dtype} vs {b.dtype} ({names})")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.rank >= 2 else b.shape[0]
    if k_a != k_b:
        raise TypeMismatch(f"inner dims differ: {k_a} vs {k_b} ({names})")
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except TypeMismatch:
        raise TypeMismatch(f"batch dims do not broadcast: {shape_str(a.shape[:-2])} vs "
                           f"{shape_str(b.shape[:-2])} ({names})") from None
    m = a.shape[-2:-1] if a.rank >= 2 else ()
    n = b.shape[-1:] if b.rank >= 2 else ()
    return TensorType(a.dtype, tuple(batch) + tuple(m) + tuple(n))


def _swap_last(g, x):
    r = len(g.type(x).shape)
    return g.op("transpose", x, perm=tuple(range(r - 2)) + (r - 1, r - 2))


matmul = defprim("matmul", "y[..., i, j] = sum_k a[..., i, k] b[..., k, j] (NumPy @)", 2,
                 _matmul_type)


@matmul.vjp
def _(g, n, ct):
    a, b = n.args
    ta, tb = g.type(a), g.type(b)
    # Work on the matrix forms A [.., M, K], B [.., K, N], C [.., M, N]: 1-D operands
    # get their implicit axis back (and ct the axes NumPy dropped), then the
    # gradients lose it again.
    a1, b1 = ta.rank == 1, tb.rank == 1
    A = g.op("expand_dims", a, axis=0) if a1 else a
    B = g.op("expand_dims", b, axis=1) if b1 else b
    C = ct
    batch_rank = len(n.type.shape) - (0 if a1 else 1) - (0 if b1 else 1)
    if a1:
        C = g.op("expand_dims", C, axis=batch_rank)
    if b1:
        C = g.op("expand_dims", C, axis=-1)
    # At = A^T, Bt = B^T; a 1-D operand's transpose is the other expand_dims
    At = g.op("expand_dims", a, axis=1) if a1 else _swap_last(g, a)
    Bt = g.op("expand_dims", b, axis=0) if b1 else _swap_last(g, b)

    da = g.sum_to_shape(g.op("matmul", C, Bt), g.type(A).shape)
    tA = g.type(A)
    rows = None
    if tb.rank == 2 and not b1 and tA.rank > 2:
        try:
            rows = dim_prod(tA.shape[:-1])
        except TypeMismatch:
            # B * (T-1) (a shifted sequence) has no symbolic product: keep the stack.
            rows = None
    if rows is not None:
        # Shared weight matrix (x [B, T, D] @ w [D, H]): fold the batch into rows so
        # dB is one [K, BT] @ [BT, N] product instead of a [B, K, N] stack summed.
        A2 = g.op("reshape", A, shape=(rows, tA.shape[-1]))
        C2 = g.op("reshape", C, shape=(rows, g.type(C).shape[-1]))
        db = g.op("matmul", _swap_last(g, A2), C2)
    else:
        db = g.sum_to_shape(g.op("matmul", At, C), g.type(B).shape)
    if a1:
        da = g.op("squeeze", da, axis=0)
    if b1:
        db = g.op("squeeze", db, axis=1)
    return [da, db]


matmul.numpy("{0} @ {1}")


def _torch_matmul(cg, n, a, b):
    # [..., m, k] @ [k, n]: torch.matmul takes bmm over an expanded weight when the
    # left operand is not contiguous (an LSTM's batch-first outputs: 4x slower than one
    # mm on the CPU); folding the leading axes first, as F.linear does, is always one mm
    ta, tb = cg.graph.type(n.args[0]), cg.graph.type(n.args[1])
    if ta.rank >= 3 and tb.rank == 2:
        lead = [cg.dim(d) for d in ta.shape[:-1]]
        rows = " * ".join(lead)  # not -1: a zero-sized k would leave -1 undetermined
        return (f"torch.mm({a}.reshape({rows}, {cg.dim(ta.shape[-1])}), {b})"
                f".view({', '.join(lead)}, {cg.dim(tb.shape[-1])})")
    return f"torch.matmul({a}, {b})"


matmul.torch(_torch_matmul)


def _onnx_matmul(o, n, a, b):
    # onnxruntime 1.32's extended optimisations fuse Transpose -> MatMul wrongly when
    # an operand is 1-D (docs/ort_bugs.md): a 1-D operand is made a matrix explicitly
    # (the same row/column vector NumPy uses) and the added axis squeezed afterwards.
    ra, rb = o.type_of(n.args[0]).rank, o.type_of(n.args[1]).rank
    if ra == 1:
        a = o.op("Unsqueeze", a, o.ints([0]))
    if rb == 1:
        b = o.op("Unsqueeze", b, o.ints([1]))
    y = o.op("MatMul", a, b)
    out_rank = max(ra, rb, 2) if ra > 1 or rb > 1 else 2
    drop = ([out_rank - 2] if ra == 1 else []) + ([out_rank - 1] if rb == 1 else [])
    return o.op("Squeeze", y, o.ints(drop)) if drop else y


matmul.onnx(_onnx_matmul)
