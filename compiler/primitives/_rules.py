"""Shape/dtype rules shared by several primitives."""
from __future__ import annotations

from compiler.core.types import TensorType, TypeMismatch, broadcast_shapes, promote


def attr_type(ts, attrs) -> TensorType:
    """Sources and constants: the type is spelled out in the attrs."""
    return TensorType(attrs["dtype"], tuple(attrs["shape"]))


def same(ts, attrs) -> TensorType:
    return ts[0]


def float_unary(ts, attrs) -> TensorType:
    (t,) = ts
    if not t.is_float:
        raise TypeMismatch(f"expects a float tensor, got {t}")
    return t


def binary_arith(ts, attrs) -> TensorType:
    a, b = ts
    if "bool" in (a.dtype, b.dtype) and a.dtype != b.dtype:
        raise TypeMismatch(f"cannot mix bool with {a.dtype if b.dtype == 'bool' else b.dtype}")
    if a.dtype == "bool":
        # bool + bool would be a logical or, bool - bool is an error in NumPy and torch:
        # arithmetic on masks goes through float(m) (or and/or/not)
        raise TypeMismatch("arithmetic on bool tensors: write float(m) first (or use and/or/not)")
    if a.is_float and b.is_float and a.dtype != b.dtype:
        raise TypeMismatch(f"dtypes differ: {a.dtype} vs {b.dtype}")
    return TensorType(promote(a.dtype, b.dtype), broadcast_shapes(a.shape, b.shape))


def float_binary(ts, attrs) -> TensorType:
    t = binary_arith(ts, attrs)
    if not t.is_float:
        raise TypeMismatch(f"expects float tensors, got {ts[0].dtype} and {ts[1].dtype}")
    return t


def compare(ts, attrs) -> TensorType:
    a, b = ts
    return TensorType("bool", broadcast_shapes(a.shape, b.shape))


def require_float(t: TensorType, what: str = "input") -> None:
    if not t.is_float:
        raise TypeMismatch(f"{what} must be a float tensor, got {t}")


def numeric_unary(ts, attrs) -> TensorType:
    """Unary ops defined on ints as well as floats (neg, abs, sign)."""
    (t,) = ts
    if t.dtype == "bool":
        raise TypeMismatch(f"expects a numeric (float or int) tensor, got {t}")
    return t


def logical_binary(ts, attrs) -> TensorType:
    """and/or: two bool tensors, broadcasting."""
    a, b = ts
    if a.dtype != "bool" or b.dtype != "bool":
        raise TypeMismatch(f"expects bool tensors, got {a.dtype} and {b.dtype}")
    return TensorType("bool", broadcast_shapes(a.shape, b.shape))


def logical_unary(ts, attrs) -> TensorType:
    (t,) = ts
    if t.dtype != "bool":
        raise TypeMismatch(f"expects a bool tensor, got {t}")
    return t


# ---- linear arithmetic on dims (shape, conv) --------------------------------

def _dim_terms(d):
    """A dim as ``(offset, {symbol-product: coefficient})``.

    `types.dim_add` writes ``"T-1"`` and `types.dim_mul` writes ``"2*B*T"``; this
    reads both, so sums like ``(T-1) + 1`` or ``2*T - T`` come out canonical.
    """
    from compiler.core.types import _factors
    if isinstance(d, int):
        return d, {}
    off = 0
    for sign in ("+", "-"):
        head, sep, tail = d.rpartition(sign)
        if sep and tail.isdigit() and head and not head.endswith("*"):
            d, off = head, int(tail) * (1 if sign == "+" else -1)
            break
    coef, syms = _factors(d)
    key = tuple(sorted(s for s, n in syms.items() for _ in range(n)))
    return off, {key: coef}


def dim_lin(*terms):
    """sum(k * d for k, d in terms) as a Dim, or None if not expressible.

    A dim holds one symbolic product plus a constant at most, so ``T + S`` is None
    but ``(T+2) - 2`` is ``"T"`` and ``2*B - B`` is ``"B"``.
    """
    from compiler.core.types import _build, dim_add
    off, acc = 0, {}
    for k, d in terms:
        o, syms = _dim_terms(d)
        off += k * o
        for key, c in syms.items():
            acc[key] = acc.get(key, 0) + k * c
    acc = {key: c for key, c in acc.items() if c}
    if not acc:
        return off
    if len(acc) > 1:
        return None
    ((key, c),) = acc.items()
    from collections import Counter
    return dim_add(_build(c, Counter(key)), off)
