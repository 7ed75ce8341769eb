"""Tensor types: a dtype and a shape whose dims are ints or symbols.

A symbolic dim is a string: a name (``"B"``) or a canonical product of names
with an integer coefficient (``"2*B*T"``), so ``reshape([B, T, D] -> [B*T, D])``
type-checks without a computer-algebra system. Shape rules raise `TypeMismatch`
with a plain message; the elaborator attaches the user's span.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Union

Dim = Union[int, str]

FLOAT_DTYPES = ("f32", "f64", "f16")
INT_DTYPES = ("i64", "i32")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)
# Run dtypes: what every float node computes in. bf16 is a run dtype only (a spec's
# float types are run in the run dtype anyway); NumPy has no bfloat16 and
# onnxruntime's CPU provider lacks bf16 kernels for most ops, so only torch runs it.
RUN_DTYPES = FLOAT_DTYPES + ("bf16",)


class RunDtypeError(ValueError):
    """A run dtype a backend cannot run (bad usage: the CLI exits 2)."""


def check_run_dtype(run_dtype: str, supported, backend: str, why: str = "") -> None:
    if run_dtype not in supported:
        raise RunDtypeError(f"the {backend} backend cannot run dtype {run_dtype!r} "
                            f"(it runs {', '.join(supported)}){why}")


class TypeMismatch(Exception):
    """Raised by shape rules; turned into a located ShapeError by the caller."""


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self):
        assert self.dtype in DTYPES, self.dtype
        for d in self.shape:  # a loop, not all(genexpr): this runs for every node built
            t = type(d)
            if t is not int and t is not str:
                assert isinstance(d, (int, str)) and not isinstance(d, bool), self.shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# ---- symbolic dim arithmetic -------------------------------------------------
# A symbolic dim is one monomial with a coefficient plus an offset: "2*B*T", "T-1",
# "2*T-2". That covers reshapes ([B, T, D] -> [B*T, D]) and slices (T -> T-1), and
# every reader (NumPy/torch code generators, the ONNX builder) parses exactly it.

def _parse(d: Dim) -> tuple[int, Counter, int]:
    """(coefficient, symbols, offset) of a dim."""
    if isinstance(d, int):
        return 0, Counter(), d
    base, off = d, 0
    for sign in ("+", "-"):
        head, sep, tail = d.rpartition(sign)
        if sep and tail.isdigit() and head and not head.endswith("*"):
            base, off = head, int(tail) * (1 if sign == "+" else -1)
            break
    coef, syms = 1, Counter()
    for part in base.split("*"):
        if part.lstrip("-").isdigit():
            coef *= int(part)
        else:
            syms[part] += 1
    if not syms:
        return 0, Counter(), coef + off
    return coef, syms, off


def parse_dim(d: str) -> tuple[int, list[str], int]:
    """A symbolic dim's (coefficient, symbols with repeats, offset): "2*B*T-1" -> (2, [B, T], -1).
    The one parser every reader uses (code generators, the ONNX builder)."""
    coef, syms, off = _parse(d)
    return coef, sorted(syms.elements()), off


def _build(coef: int, syms: Counter, off: int = 0) -> Dim:
    names = sorted(s for s, n in syms.items() for _ in range(n))
    if not names or coef == 0:
        return off
    mono = "*".join(([str(coef)] if coef != 1 else []) + names)
    return mono if off == 0 else f"{mono}{'+' if off > 0 else '-'}{abs(off)}"


def _factors(d: Dim) -> tuple[int, Counter]:
    """(coefficient, symbols) of a monomial dim such as "2*B*T" (offsets stripped first)."""
    if isinstance(d, int):
        return d, Counter()
    coef, syms = 1, Counter()
    for part in d.split("*"):
        if part.lstrip("-").isdigit():
            coef *= int(part)
        else:
            syms[part] += 1
    return coef, syms


def dim_mul(a: Dim, b: Dim) -> Dim:
    ca, sa, oa = _parse(a)
    cb, sb, ob = _parse(b)
    if not sa:
        return _build(cb * oa, sb, ob * oa)
    if not sb:
        return _build(ca * ob, sa, oa * ob)
    if oa or ob:
        raise TypeMismatch(f"cannot multiply dims {a} and {b} symbolically")
    return _build(ca * cb, sa + sb)


def dim_div(a: Dim, b: Dim) -> Dim | None:
    """a / b when it divides exactly, else None."""
    ca, sa, oa = _parse(a)
    cb, sb, ob = _parse(b)
    if not sb:
        if ob == 0 or (ca % ob) or (oa % ob):
            return None
        return _build(ca // ob, sa, oa // ob)
    if ob or oa or cb == 0 or ca % cb or any(sa[k] < n for k, n in sb.items()):
        return None
    rest = sa - sb
    # Every symbol cancelled ("3*B" / "B"): the quotient is the static coefficient,
    # not the (empty) offset that _build returns for a symbol-free monomial.
    return ca // cb if not rest else _build(ca // cb, rest)


def dim_prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_add(d: Dim, k: int) -> Dim:
    """d + k for a static offset k: ``dim_add("T", -1) == "T-1"``."""
    c, syms, off = _parse(d)
    return _build(c, syms, off + k)


def dim_symbols(d: Dim) -> list[str]:
    return sorted(_parse(d)[1])


def broadcast_shapes(a: tuple, b: tuple) -> tuple:
    """NumPy broadcasting; symbolic dims broadcast only against 1 or themselves."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise TypeMismatch(
                f"cannot broadcast {shape_str(a)} with {shape_str(b)}: "
                f"dim {-i} is {x} vs {y}")
    return tuple(reversed(out))


def promote(a: str, b: str) -> str:
    """Result dtype of a binary arithmetic op (floats win; bool < int < float)."""
    if a == b:
        return a
    order = ["bool", "i32", "i64", "f16", "f32", "f64"]
    return max(a, b, key=order.index)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeMismatch(f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank if rank else 0


def norm_axes(axis, rank: int) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted non-negative tuple."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted({norm_axis(a, rank) for a in axis}))
