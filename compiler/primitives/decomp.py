"""Linear algebra beyond matmul, and sorting: one block per primitive.

Every matrix operand is a stack ``[..., m, n]``: leading batch dims are carried
through (two operands must have equal batch dims). Shape rules name both operands'
types when they do not fit. Lowerings: ``np.linalg`` / ``torch.linalg`` through the
helpers of ``backends/<b>/prelude_linalg.py`` (which fix the sign and order
conventions), and `Loop`-based algorithms in the standard ONNX opset
(`compiler/primitives/_onnx_linalg.py`).

Conventions (the same on every backend): `cholesky` and `eigh` read the symmetric
part ``(A + Aᵀ)/2`` (so their gradient is symmetric and finite differences of any
entry agree with it); `triangular_solve` reads only the triangle it is told to;
eigenvalues ascend, singular values descend; each eigenvector / left singular
vector is signed so that its largest-magnitude entry is positive; QR is reduced
(m >= n) with ``diag(R) >= 0``; sorting is stable.

Multi-result primitives (`eigh`, `svd`, `qr`) have VJP rules taking one cotangent
per result (None where a result is unused): ``rule(g, node, [ct0, ct1, ...])``.
"""
from __future__ import annotations

from compiler.primitives.table import defprim
from compiler.core.types import TensorType, TypeMismatch, norm_axis
from compiler.primitives import _onnx_linalg as ox

_INDEX = "integer-valued (an index)"


# ============================================================================
# shape rules
# ============================================================================

def _float_matrix(t: TensorType, what: str) -> None:
    if not t.is_float:
        raise TypeMismatch(f"{what} must be a float tensor, got {t}")
    if t.rank < 2:
        raise TypeMismatch(f"{what} must be a matrix [..., m, n] (rank >= 2), got {t}")


def _square(t: TensorType, what: str = "the matrix") -> None:
    _float_matrix(t, what)
    if str(t.shape[-1]) != str(t.shape[-2]):
        raise TypeMismatch(f"{what} must be square [..., n, n], got {t} "
                           f"({t.shape[-2]} rows, {t.shape[-1]} columns)")


def _square_type(ts, attrs) -> TensorType:
    (a,) = ts
    _square(a)
    return a


def _system_type(ts, attrs) -> TensorType:
    """A [.., n, n] and B [.., n, k]: X has B's type."""
    a, b = ts
    both = f"A is {a}, B is {b}"
    _square(a, f"A ({both})")
    _float_matrix(b, f"B ({both})")
    if a.dtype != b.dtype:
        raise TypeMismatch(f"dtypes differ ({both})")
    if str(b.shape[-2]) != str(a.shape[-1]):
        raise TypeMismatch(f"B must have as many rows as A ({a.shape[-1]}), it has "
                           f"{b.shape[-2]} ({both})")
    if tuple(map(str, a.shape[:-2])) != tuple(map(str, b.shape[:-2])):
        raise TypeMismatch(f"batch dims differ ({both})")
    if "lower" in attrs and not isinstance(attrs["lower"], bool):
        raise TypeMismatch(f"lower must be true or false, got {attrs['lower']!r}")
    return b


def _batch_scalar_type(ts, attrs) -> TensorType:
    (a,) = ts
    _square(a)
    return a.with_shape(a.shape[:-2])


def _diagonal_type(ts, attrs) -> TensorType:
    (a,) = ts
    _square(a)
    return a.with_shape(a.shape[:-1])


def _diag_type(ts, attrs) -> TensorType:
    (v,) = ts
    if v.rank < 1 or v.dtype == "bool":
        raise TypeMismatch(f"expects a numeric vector [..., n], got {v}")
    return v.with_shape(v.shape + (v.shape[-1],))


def _eye_type(ts, attrs) -> TensorType:
    n = attrs["length"]
    return TensorType(attrs.get("dtype", "f32"), (n, n))


def _eigh_type(ts, attrs):
    (a,) = ts
    _square(a)
    return (a.with_shape(a.shape[:-1]), a)


def _min_dim(t: TensorType):
    m, n = t.shape[-2], t.shape[-1]
    if str(m) == str(n):
        return m
    if isinstance(m, int) and isinstance(n, int):
        return min(m, n)
    raise TypeMismatch(f"cannot tell which of {m} and {n} is smaller in {t}: give the matrix "
                       "static dims, or a square shape")


def _svd_type(ts, attrs):
    (a,) = ts
    _float_matrix(a, "the matrix")
    k = _min_dim(a)
    b = a.shape[:-2]
    return (a.with_shape(b + (a.shape[-2], k)), a.with_shape(b + (k,)),
            a.with_shape(b + (k, a.shape[-1])))


def _qr_type(ts, attrs):
    (a,) = ts
    _float_matrix(a, "the matrix")
    m, n = a.shape[-2], a.shape[-1]
    if str(m) != str(n) and not (isinstance(m, int) and isinstance(n, int) and m >= n):
        raise TypeMismatch(f"qr needs at least as many rows as columns (m >= n), got {a}; "
                           "use qr(transpose) for a wide matrix")
    return (a, a.with_shape(a.shape[:-2] + (n, n)))


def _sort_axis(t: TensorType, attrs) -> int:
    if t.rank == 0 or t.dtype == "bool":
        raise TypeMismatch(f"expects a numeric tensor of rank >= 1, got {t}")
    axis = attrs.get("axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeMismatch(f"axis must be a single int, got {axis!r}")
    return norm_axis(axis, t.rank)


def _sort_shape(t: TensorType, attrs):
    a = _sort_axis(t, attrs)
    k = attrs.get("k")
    if k is None:
        return t.shape
    d = t.shape[a]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TypeMismatch(f"k must be a positive integer, got {k!r}")
    if isinstance(d, int) and k > d:
        raise TypeMismatch(f"k = {k} is more than the {d} entries along axis {a} of {t}")
    if not isinstance(d, int):
        raise TypeMismatch(f"topk needs a static length along axis {a}, got {t}")
    return t.shape[:a] + (k,) + t.shape[a + 1:]


def _sort_type(ts, attrs):
    (t,) = ts
    return t.with_shape(_sort_shape(t, attrs))


def _argsort_type(ts, attrs):
    (t,) = ts
    return TensorType("i64", _sort_shape(t, attrs))


# ============================================================================
# graph helpers for the VJPs
# ============================================================================

def _mT(g, x):
    r = g.type(x).rank
    return g.op("transpose", x, perm=tuple(range(r - 2)) + (r - 1, r - 2))


def _sym(g, x):
    return g.op("mul", g.op("add", x, _mT(g, x)), g.scalar_like(0.5, x))


def _eye(g, like):
    t = g.type(like)
    return g.op("eye", length=t.shape[-1], dtype=t.dtype)


def _eye_batch(g, like):
    """The identity broadcast to `like`'s [.., n, n] shape."""
    return g.op("broadcast_like", _eye(g, like), like)


def _tri_mask(g, like, lower: bool, strict: bool = False):
    """[n, n] 0/1 mask of the lower (or upper) triangle of `like`'s last two axes."""
    t = g.type(like)
    r = g.op("arange", length=t.shape[-1], dtype="i64")
    i, j = g.op("expand_dims", r, axis=1), g.op("expand_dims", r, axis=0)
    cmp = ("gt" if strict else "ge") if lower else ("lt" if strict else "le")
    return g.op("cast", g.op(cmp, i, j), dtype=t.dtype)


def _mm(g, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = g.op("matmul", out, x)
    return out


def _add(g, a, b):
    return b if a is None else a if b is None else g.op("add", a, b)


def _get(g, n, i):
    return g.op("tuple_get", n.id, index=i)


def _rank(n) -> int:
    t = n.type[0] if isinstance(n.type, tuple) else n.type
    return t.rank


# ============================================================================
# eye, diagonal, diag
# ============================================================================

eye = defprim("eye", "I[i, j] = (i == j), an n x n identity (n may be symbolic)", 0, _eye_type,
              nondiff="a constant")


def _np_eye(cg, n):
    return f"np.eye({cg.dim(n.attrs['length'])}, dtype={cg.dtype(n.attrs.get('dtype', 'f32'))})"


def _torch_eye(cg, n):
    return (f"torch.eye({cg.dim(n.attrs['length'])}, dtype={cg.dtype(n.attrs.get('dtype', 'f32'))}, "
            f"device=_dev)")


def _onnx_eye(o, n):
    e = ox.eye(o, o.dim_scalar(n.attrs["length"]))
    return o.cast(e, n.attrs.get("dtype", "f32"))


eye.numpy(_np_eye)
eye.torch(_torch_eye)
eye.onnx(_onnx_eye)


diagonal = defprim("diagonal", "y[..., i] = A[..., i, i]", 1, _diagonal_type)


@diagonal.vjp
def _(g, n, ct):
    return [g.op("diag", ct)]


diagonal.numpy("np.diagonal({0}, axis1=-2, axis2=-1).copy()")
diagonal.torch("torch.diagonal({0}, dim1=-2, dim2=-1)")
diagonal.onnx(lambda o, n, a: o.op("ReduceSum", o.op("Mul", a, ox.eye(o, ox.dim(o, a, -1))),
                                   o.ints([-1]), keepdims=0))


diag = defprim("diag", "D[..., i, j] = v[..., i] if i == j else 0", 1, _diag_type)


@diag.vjp
def _(g, n, ct):
    return [g.op("diagonal", ct)]


diag.numpy(lambda cg, n, v: f"({v}[..., None] * np.eye({v}.shape[-1], dtype={v}.dtype))")
diag.torch("torch.diag_embed({0})")
diag.onnx(lambda o, n, v: o.op("Mul", o.op("Unsqueeze", v, o.ints([-1])),
                               ox.eye(o, ox.dim(o, v, -1)) if n.type.is_float
                               else o.cast(ox.eye(o, ox.dim(o, v, -1)), n.type.dtype)))


# ============================================================================
# cholesky, triangular_solve, solve
# ============================================================================

cholesky = defprim("cholesky", "L lower-triangular with L Lᵀ = (A + Aᵀ)/2 (NaN if not positive "
                   "definite)", 1, _square_type)


@cholesky.vjp
def _(g, n, ct):
    # Murray (2016): S = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹ with Φ = the lower triangle, its diagonal
    # halved; Ā = (S + Sᵀ)/2 (A enters through its symmetric part).
    low = n.id
    lower = _tri_mask(g, low, True)
    half = g.op("mul", _eye(g, low), g.scalar_like(0.5, low))
    phi = g.op("mul", _mm(g, _mT(g, low), ct), g.op("sub", lower, half))
    y = g.op("triangular_solve", low, phi, lower=True, transpose=True)          # L⁻ᵀ Φ
    s = _mT(g, g.op("triangular_solve", low, _mT(g, y), lower=True, transpose=True))
    return [_sym(g, s)]


cholesky.numpy(lambda cg, n, a: f"{cg.helper('lin_cholesky')}({a})")
cholesky.torch(lambda cg, n, a: f"{cg.helper('lin_cholesky')}({a})")
cholesky.onnx(lambda o, n, a: ox.cholesky(o, a, n.type.rank))


triangular_solve = defprim(
    "triangular_solve", "X = T⁻¹ B, T = tril(A) if lower else triu(A), Tᵀ if transpose", 2,
    _system_type)


@triangular_solve.vjp
def _(g, n, ct):
    a, _b = n.args
    lower, tr = n.attrs.get("lower", True), n.attrs.get("transpose", False)
    gb = g.op("triangular_solve", a, ct, lower=lower, transpose=not tr)
    x = n.id
    outer = _mm(g, x, _mT(g, gb)) if tr else _mm(g, gb, _mT(g, x))
    ga = g.op("neg", g.op("mul", outer, _tri_mask(g, a, lower)))
    return [ga, gb]


def _tri_src(cg, n, a, b):
    return (f"{cg.helper('lin_triangular_solve')}({a}, {b}, {bool(n.attrs.get('lower', True))}, "
            f"{bool(n.attrs.get('transpose', False))})")


triangular_solve.numpy(_tri_src)
triangular_solve.torch(_tri_src)
triangular_solve.onnx(lambda o, n, a, b: ox.triangular_solve(
    o, a, b, n.type.rank, bool(n.attrs.get("lower", True)), bool(n.attrs.get("transpose", False))))


solve = defprim("solve", "X = A⁻¹ B (A square, B [..., n, k])", 2, _system_type)


@solve.vjp
def _(g, n, ct):
    a, _b = n.args
    gb = g.op("solve", _mT(g, a), ct)
    return [g.op("neg", _mm(g, gb, _mT(g, n.id))), gb]


solve.numpy("np.linalg.solve({0}, {1})")
solve.torch("torch.linalg.solve({0}, {1})")
solve.onnx(lambda o, n, a, b: ox.solve(o, a, b, n.type.rank))


# ============================================================================
# log|det A| and sign(det A)
# ============================================================================

logabsdet = defprim("logabsdet", "ln |det A|", 1, _batch_scalar_type)


@logabsdet.vjp
def _(g, n, ct):
    # d ln|det A| = tr(A⁻¹ dA): Ā = ct · A⁻ᵀ
    (a,) = n.args
    inv_t = g.op("solve", _mT(g, a), _eye_batch(g, a))
    c = g.op("expand_dims", g.op("expand_dims", ct, axis=-1), axis=-1)
    return [g.op("mul", c, inv_t)]


logabsdet.numpy("np.linalg.slogdet({0})[1]")
logabsdet.torch("torch.linalg.slogdet({0})[1]")
logabsdet.onnx(lambda o, n, a: ox.slogdet(o, a)[1])


det_sign = defprim("det_sign", "sign(det A) in {-1, 0, 1}, as a float", 1, _batch_scalar_type)


@det_sign.vjp
def _(g, n, ct):
    # piecewise constant: a zero derivative (like `sign`), so that logdet = log|det| +
    # log(sign) differentiates
    return [None]

det_sign.numpy("np.linalg.slogdet({0})[0]")
det_sign.torch("torch.linalg.slogdet({0})[0]")
det_sign.onnx(lambda o, n, a: ox.slogdet(o, a)[0])


# ============================================================================
# eigh, svd, qr (multi-result)
# ============================================================================

eigh = defprim("eigh", "(w, V): (A + Aᵀ)/2 = V diag(w) Vᵀ, w ascending", 1, _eigh_type)


@eigh.vjp
def _(g, n, cts):
    # Ā = sym(V (diag(w̄) + F ∘ (Vᵀ V̄)) Vᵀ), F_ij = 1/(w_j - w_i) off the diagonal.
    # A repeated eigenvalue makes F infinite: the eigenvector part is undefined there.
    ct_w, ct_v = cts
    w, v = _get(g, n, 0), _get(g, n, 1)
    inner = None
    if ct_v is not None:
        eye_ = _eye(g, v)
        gap = g.op("sub", g.op("expand_dims", w, axis=-2), g.op("expand_dims", w, axis=-1))
        f = g.op("div", g.op("sub", g.scalar_like(1.0, v), eye_), g.op("add", gap, eye_))
        inner = g.op("mul", f, _mm(g, _mT(g, v), ct_v))
    if ct_w is not None:
        inner = _add(g, inner, g.op("diag", ct_w))
    return [_sym(g, _mm(g, v, inner, _mT(g, v)))]


eigh.numpy(lambda cg, n, a: f"{cg.helper('lin_eigh')}({a})")
eigh.torch(lambda cg, n, a: f"{cg.helper('lin_eigh')}({a})")
eigh.onnx(lambda o, n, a: ox.eigh(o, a, n.type[1].rank))


svd = defprim("svd", "(U, S, Vh): A = U diag(S) Vh, reduced, S descending", 1, _svd_type)


@svd.vjp
def _(g, n, cts):
    # The real case of torch's svd_backward (distinct non-zero singular values):
    # a singular value repeated (or zero, with m != n) divides by zero.
    ct_u, ct_s, ct_vh = cts
    (a,) = n.args
    ta = g.type(a)
    u, s, vh = _get(g, n, 0), _get(g, n, 1), _get(g, n, 2)
    m, k, cols = ta.shape[-2], g.type(s).shape[-1], ta.shape[-1]
    s_row, s_col = g.op("expand_dims", s, axis=-2), g.op("expand_dims", s, axis=-1)
    ga = None
    gv = _mT(g, ct_vh) if ct_vh is not None else None
    if ct_u is not None or ct_vh is not None:
        eye_ = _eye(g, s_row)  # k x k
        e = g.op("add", g.op("sub", g.op("mul", s_row, s_row), g.op("mul", s_col, s_col)), eye_)
        j = None
        if ct_u is not None:
            uu = _mm(g, _mT(g, u), ct_u)
            j = g.op("mul", g.op("sub", uu, _mT(g, uu)), s_row)
        if gv is not None:
            vv = _mm(g, vh, gv)
            j = _add(g, j, g.op("mul", s_col, g.op("sub", vv, _mT(g, vv))))
        ga = g.op("div", j, e)
    if ct_s is not None:
        ga = _add(g, ga, g.op("diag", ct_s))
    if ga is None:
        return [None]
    if str(m) != str(k) and ct_u is not None:
        ga = _mm(g, u, ga)
        gus = g.op("div", ct_u, s_row)
        ga = g.op("add", ga, g.op("sub", gus, _mm(g, u, _mT(g, u), gus)))
        ga = _mm(g, ga, vh)
    elif str(cols) != str(k) and gv is not None:
        ga = _mm(g, ga, vh)
        gvs = g.op("div", gv, s_row)
        ga = g.op("add", ga, g.op("sub", _mT(g, gvs), _mm(g, _mT(g, gvs), _mT(g, vh), vh)))
        ga = _mm(g, u, ga)
    else:
        ga = _mm(g, u, ga, vh)
    return [ga]


svd.numpy(lambda cg, n, a: f"{cg.helper('lin_svd')}({a})")
svd.torch(lambda cg, n, a: f"{cg.helper('lin_svd')}({a})")


def _svd_onnx(o, n, a):
    t = o.type_of(n.args[0])
    m, c = t.shape[-2], t.shape[-1]
    return ox.svd(o, a, t.rank, str(m) == str(c) or (isinstance(m, int) and m >= c))


svd.onnx(_svd_onnx)


qr = defprim("qr", "(Q, R): A = Q R, QᵀQ = I, R upper with diag(R) >= 0 (reduced, m >= n)", 1,
             _qr_type)


@qr.vjp
def _(g, n, cts):
    # Walter & Lehmann / Seeger et al.: M = R R̄ᵀ - Q̄ᵀ Q,
    # Ā = (Q̄ + Q copyltu(M)) R⁻ᵀ, copyltu(M) = tril(M) + tril(M, -1)ᵀ.
    ct_q, ct_r = cts
    q, r = _get(g, n, 0), _get(g, n, 1)
    m_ = None
    if ct_r is not None:
        m_ = _mm(g, r, _mT(g, ct_r))
    if ct_q is not None:
        qq = _mm(g, _mT(g, ct_q), q)
        m_ = g.op("neg", qq) if m_ is None else g.op("sub", m_, qq)
    low = g.op("mul", m_, _tri_mask(g, m_, True))
    strict = g.op("mul", m_, _tri_mask(g, m_, True, strict=True))
    b = _mm(g, q, g.op("add", low, _mT(g, strict)))
    if ct_q is not None:
        b = g.op("add", b, ct_q)
    # B R⁻ᵀ = (R⁻¹ Bᵀ)ᵀ
    return [_mT(g, g.op("triangular_solve", r, _mT(g, b), lower=False, transpose=False))]


qr.numpy(lambda cg, n, a: f"{cg.helper('lin_qr')}({a})")
qr.torch(lambda cg, n, a: f"{cg.helper('lin_qr')}({a})")
qr.onnx(lambda o, n, a: ox.qr(o, a, n.type[0].rank))


# ============================================================================
# sort, argsort (k = the first k of the order: topk)
# ============================================================================

def _sort_args(n):
    rank = n.type.rank
    return norm_axis(n.attrs.get("axis", -1), rank), bool(n.attrs.get("descending", False)), \
        n.attrs.get("k")


sort = defprim("sort", "x sorted along axis (descending: largest first; k: the first k only)",
               1, _sort_type)


@sort.vjp
def _(g, n, ct):
    # y = P x with P[.., i, j] = (idx[.., i] == j): x̄ = Pᵀ ȳ, P from argsort (no gradient)
    (x,) = n.args
    tx = g.type(x)
    a = norm_axis(n.attrs.get("axis", -1), tx.rank)
    idx = g.op("argsort", x, **dict(n.attrs))
    pos = g.op("arange", length=tx.shape[a], dtype="i64")
    for _ in range(tx.rank - a - 1):
        pos = g.op("expand_dims", pos, axis=-1)
    hit = g.op("cast", g.op("eq", g.op("expand_dims", idx, axis=a + 1), pos), dtype=tx.dtype)
    return [g.op("sum", g.op("mul", hit, g.op("expand_dims", ct, axis=a + 1)), axis=a)]


def _sort_src(helper):
    def lower(cg, n, x):
        a, desc, k = _sort_args(n)
        return f"{cg.helper(helper)}({x}, {a}, {desc}, {k!r})"
    return lower


def _sort_onnx(which):
    def lower(o, n, x):
        a, desc, k = _sort_args(n)
        kk = o.ints([k]) if k is not None else o.op("Shape", x, start=a, end=a + 1)
        vals, idx = o.op("TopK", x, kk, axis=a, largest=int(desc), sorted=1, outputs=2)
        return vals if which == 0 else idx
    return lower


sort.numpy(_sort_src("lin_sort"))
sort.torch(_sort_src("lin_sort"))
sort.onnx(_sort_onnx(0))


argsort = defprim("argsort", "the (stable) order of x along axis: x[argsort] is sorted", 1,
                  _argsort_type, nondiff=_INDEX)
argsort.numpy(_sort_src("lin_argsort"))
argsort.torch(_sort_src("lin_argsort"))
argsort.onnx(_sort_onnx(1))
