"""Builtins for linear algebra, sorting, discrete sampling and Jacobians.

Registered into the builtins table with `compiler.builtins.builtin`; each wraps
primitives of `compiler/primitives/decomp.py` (shape errors come from their
rules, located at the call). Composite ones (`inv`, `pinv`, `trace`, `det`,
`logdet`) are built from those primitives, so they differentiate and lower like
any other graph. Discrete draws are functions of the seeded host `uniform` noise,
so they are the same on every backend.
"""
from __future__ import annotations

from dsl.errors import ShapeError, SpecError

from compiler.elaborate.builtins.base import _bind, _describe, _dims, _dtype, _int, _tensor, builtin
from compiler.core.values import Record, SymDim, Tensor


def _get(ev, t, i, span):
    return ev.add("tuple_get", [t], span, index=i)


def _mT(ev, x, span):
    r = x.type.rank
    if r < 2:
        raise ShapeError(f"expects a matrix [..., m, n], found {x.type}", span)
    return ev.add("transpose", [x], span, perm=tuple(range(r - 2)) + (r - 1, r - 2))


def _eye_like(ev, a, span):
    """The identity with a's [..., n, n] shape (batch dims broadcast)."""
    e = ev.add("eye", [], span, length=a.type.shape[-1], dtype=a.type.dtype)
    return ev.add("broadcast_like", [e, a], span) if a.type.rank > 2 else e


# ---- constructors and diagonals ------------------------------------------------------

@builtin()
def eye(ev, args, kwargs, span):
    """eye(n, dtype="f32"): the n x n identity (n may be a symbolic dim)"""
    b = _bind("eye", args, kwargs, span, ["n", "dtype"], {"dtype": "f32"})
    n = b["n"]
    if isinstance(n, bool) or not isinstance(n, (int, str)) or isinstance(n, int) and n < 0:
        raise SpecError(f"eye needs a non-negative dim, found {_describe(n)}", span)
    return ev.add("eye", [], span, length=str(n) if isinstance(n, SymDim) else n,
                  dtype=_dtype(b["dtype"], span))


@builtin()
def diag(ev, args, kwargs, span):
    """diag(v): the diagonal matrix [..., n, n] with v [..., n] on its diagonal"""
    v = _bind("diag", args, kwargs, span, ["v"], {})["v"]
    return ev.add("diag", [_tensor(ev, v, span)], span)


@builtin()
def diagonal(ev, args, kwargs, span):
    """diagonal(A): A[..., i, i] of a square A, shaped [..., n]"""
    a = _bind("diagonal", args, kwargs, span, ["A"], {})["A"]
    return ev.add("diagonal", [_tensor(ev, a, span)], span)


@builtin()
def trace(ev, args, kwargs, span):
    """trace(A): Σ_i A[..., i, i]"""
    a = _tensor(ev, _bind("trace", args, kwargs, span, ["A"], {})["A"], span)
    return ev.add("sum", [ev.add("diagonal", [a], span)], span, axis=-1, keepdims=False)


# ---- factorisations and solves -----------------------------------------------------------

@builtin()
def cholesky(ev, args, kwargs, span):
    """cholesky(A): lower L with L Lᵀ = (A + Aᵀ)/2 (NaN if not positive definite)"""
    a = _bind("cholesky", args, kwargs, span, ["A"], {})["A"]
    return ev.add("cholesky", [_tensor(ev, a, span)], span)


def _rhs(ev, a, b, span):
    """B as a matrix, and whether it was a vector [..., n] (solved as one column)."""
    if b.type.rank == a.type.rank - 1:
        return ev.add("expand_dims", [b], span, axis=-1), True
    return b, False


def _solve_like(ev, op, a, b, span, **attrs):
    bm, vec = _rhs(ev, a, b, span)
    x = ev.add(op, [a, bm], span, **attrs)
    return ev.add("squeeze", [x], span, axis=-1) if vec else x


@builtin()
def solve(ev, args, kwargs, span):
    """solve(A, B): X with A X = B; B is [..., n, k] or a vector [..., n]"""
    b = _bind("solve", args, kwargs, span, ["A", "B"], {})
    return _solve_like(ev, "solve", _tensor(ev, b["A"], span), _tensor(ev, b["B"], span), span)


@builtin()
def triangular_solve(ev, args, kwargs, span):
    """triangular_solve(A, B, lower=true, transpose=false): X with T X = B, T = tril(A)
    (triu if not lower; Tᵀ if transpose)"""
    b = _bind("triangular_solve", args, kwargs, span, ["A", "B", "lower", "transpose"],
              {"lower": True, "transpose": False})
    for k in ("lower", "transpose"):
        if not isinstance(b[k], bool):
            raise SpecError(f"triangular_solve's `{k}` must be true or false, found "
                            f"{_describe(b[k])}", span)
    return _solve_like(ev, "triangular_solve", _tensor(ev, b["A"], span), _tensor(ev, b["B"], span),
                       span, lower=b["lower"], transpose=b["transpose"])


@builtin()
def inv(ev, args, kwargs, span):
    """inv(A): A⁻¹ (solve(A, I))"""
    a = _tensor(ev, _bind("inv", args, kwargs, span, ["A"], {})["A"], span)
    ev.add("logabsdet", [a], span)  # the square check, with the user's shapes
    return ev.add("solve", [a, _eye_like(ev, a, span)], span)


@builtin()
def slogdet(ev, args, kwargs, span):
    """slogdet(A): (sign, log|det A|); only log|det A| carries a gradient"""
    a = _tensor(ev, _bind("slogdet", args, kwargs, span, ["A"], {})["A"], span)
    return ev.add("det_sign", [a], span), ev.add("logabsdet", [a], span)


@builtin()
def logdet(ev, args, kwargs, span):
    """logdet(A): ln det A (NaN where det A < 0, as torch.logdet)"""
    a = _tensor(ev, _bind("logdet", args, kwargs, span, ["A"], {})["A"], span)
    return ev.add("add", [ev.add("logabsdet", [a], span),
                          ev.add("log", [ev.add("det_sign", [a], span)], span)], span)


@builtin()
def det(ev, args, kwargs, span):
    """det(A) = sign · exp(log|det A|)"""
    a = _tensor(ev, _bind("det", args, kwargs, span, ["A"], {})["A"], span)
    return ev.add("mul", [ev.add("det_sign", [a], span),
                          ev.add("exp", [ev.add("logabsdet", [a], span)], span)], span)


@builtin()
def eigh(ev, args, kwargs, span):
    """eigh(A): (w, V), (A + Aᵀ)/2 = V diag(w) Vᵀ with w ascending"""
    a = _tensor(ev, _bind("eigh", args, kwargs, span, ["A"], {})["A"], span)
    t = ev.add("eigh", [a], span)
    return _get(ev, t, 0, span), _get(ev, t, 1, span)


@builtin()
def svd(ev, args, kwargs, span):
    """svd(A): (U, S, Vh), A = U diag(S) Vh (reduced), S descending"""
    a = _tensor(ev, _bind("svd", args, kwargs, span, ["A"], {})["A"], span)
    t = ev.add("svd", [a], span)
    return tuple(_get(ev, t, i, span) for i in range(3))


@builtin()
def qr(ev, args, kwargs, span):
    """qr(A): (Q, R), A = Q R with QᵀQ = I and R upper with diag(R) >= 0 (m >= n)"""
    a = _tensor(ev, _bind("qr", args, kwargs, span, ["A"], {})["A"], span)
    t = ev.add("qr", [a], span)
    return _get(ev, t, 0, span), _get(ev, t, 1, span)


@builtin()
def pinv(ev, args, kwargs, span):
    """pinv(A, rcond=1e-10): Moore-Penrose pseudo-inverse by SVD; singular values below
    rcond · max(S) count as zero"""
    b = _bind("pinv", args, kwargs, span, ["A", "rcond"], {"rcond": 1e-10})
    a = _tensor(ev, b["A"], span)
    rc = b["rcond"]
    if isinstance(rc, bool) or not isinstance(rc, (int, float)):
        raise SpecError(f"pinv's `rcond` must be a number, found {_describe(rc)}", span)
    t = ev.add("svd", [a], span)
    u, s, vh = (_get(ev, t, i, span) for i in range(3))
    top = ev.add("max", [s], span, axis=-1, keepdims=True)
    tol = ev.add("mul", [top, ev.const_like(float(rc), s, span)], span)
    keep = ev.add("gt", [s, tol], span)
    one = ev.const_like(1.0, s, span)
    safe = ev.add("where", [keep, s, one], span)            # no 1/0 in the unused branch
    sinv = ev.add("where", [keep, ev.add("reciprocal", [safe], span), ev.const_like(0.0, s, span)],
                  span)
    v_scaled = ev.add("mul", [_mT(ev, vh, span), ev.add("expand_dims", [sinv], span, axis=-2)], span)
    return ev.add("matmul", [v_scaled, _mT(ev, u, span)], span)


# ---- sorting ---------------------------------------------------------------------------------

def _sort_kw(b, span):
    axis = _int(b["axis"], span, "axis")
    desc = b.get("descending", b.get("largest"))
    if not isinstance(desc, bool):
        raise SpecError(f"expects true or false, found {_describe(desc)}", span)
    return axis, desc


@builtin()
def sort(ev, args, kwargs, span):
    """sort(x, axis=-1, descending=false): x sorted along an axis (stable)"""
    b = _bind("sort", args, kwargs, span, ["x", "axis", "descending"], {"axis": -1, "descending": False})
    axis, desc = _sort_kw(b, span)
    return ev.add("sort", [_tensor(ev, b["x"], span)], span, axis=axis, descending=desc, k=None)


@builtin()
def argsort(ev, args, kwargs, span):
    """argsort(x, axis=-1, descending=false): the stable order along an axis (i64)"""
    b = _bind("argsort", args, kwargs, span, ["x", "axis", "descending"],
              {"axis": -1, "descending": False})
    axis, desc = _sort_kw(b, span)
    return ev.add("argsort", [_tensor(ev, b["x"], span)], span, axis=axis, descending=desc, k=None)


@builtin()
def topk(ev, args, kwargs, span):
    """topk(x, k, axis=-1, largest=true): (values, indices) of the k largest (smallest)"""
    b = _bind("topk", args, kwargs, span, ["x", "k", "axis", "largest"], {"axis": -1, "largest": True})
    axis, desc = _sort_kw(b, span)
    x = _tensor(ev, b["x"], span)
    k = _int(b["k"], span, "k")
    return (ev.add("sort", [x], span, axis=axis, descending=desc, k=k),
            ev.add("argsort", [x], span, axis=axis, descending=desc, k=k))


# ---- discrete sampling (functions of seeded uniform noise) -----------------------------------

def _prob_tensor(ev, p, span, what):
    if isinstance(p, (int, float)) and not isinstance(p, (bool, SymDim)):
        return None, float(p)
    t = _tensor(ev, p, span, what)
    if not t.type.is_float:
        raise ShapeError(f"{what} must be a float tensor, found {t.type}", span)
    return t, None


def _uniform(ev, shape, dtype, span):
    u = ev.make_noise("uniform", tuple(shape), span)
    return u if dtype == "f32" else ev.add("cast", [u], span, dtype=dtype)


@builtin()
def bernoulli(ev, args, kwargs, span):
    """bernoulli(p, shape=p's shape): 1.0 with probability p, else 0.0 (seeded, fresh each
    step, no gradient)"""
    b = _bind("bernoulli", args, kwargs, span, ["p", "shape"], {"shape": None})
    t, c = _prob_tensor(ev, b["p"], span, "bernoulli's `p`")
    if b["shape"] is None:
        if t is None:
            raise SpecError("bernoulli with a number `p` needs a `shape`", span)
        shape = t.type.shape
    else:
        shape = _dims(b["shape"], span)
    dtype = t.type.dtype if t is not None else "f32"
    u = _uniform(ev, shape, dtype, span)
    p = ev.add("stop_gradient", [t], span) if t is not None else ev.to_tensor(c, span, like=u)
    return ev.add("cast", [ev.add("lt", [u, p], span)], span, dtype=dtype)


@builtin()
def categorical(ev, args, kwargs, span):
    """categorical(logits, shape=()): i64 draws from softmax(logits) over the last axis,
    shaped shape + logits.shape[:-1] (Gumbel-max on seeded uniform noise)"""
    b = _bind("categorical", args, kwargs, span, ["logits", "shape"], {"shape": ()})
    logits = _tensor(ev, b["logits"], span, "logits")
    if not logits.type.is_float or logits.type.rank < 1:
        raise ShapeError(f"categorical needs float logits [..., K], found {logits.type}", span)
    sample = _dims(b["shape"], span) if b["shape"] != () else ()
    u = _uniform(ev, tuple(sample) + tuple(logits.type.shape), logits.type.dtype, span)
    # Gumbel(0, 1) = -log(-log u); u = 0 gives -inf, which argmax never picks
    gum = ev.add("neg", [ev.add("log", [ev.add("neg", [ev.add("log", [u], span)], span)], span)], span)
    z = ev.add("add", [ev.add("stop_gradient", [logits], span), gum], span)
    return ev.add("argmax", [z], span, axis=-1, keepdims=False)


@builtin()
def gumbel(ev, args, kwargs, span):
    """gumbel(shape): seeded standard Gumbel noise -log(-log u), fresh each step"""
    b = _bind("gumbel", args, kwargs, span, ["shape"], {})
    u = _uniform(ev, _dims(b["shape"], span), "f32", span)
    tiny = ev.to_tensor(1e-20, span, like=u)          # keeps log finite at u = 0
    inner = ev.add("neg", [ev.add("log", [ev.add("add", [u, tiny], span)], span)], span)
    return ev.add("neg", [ev.add("log", [ev.add("add", [inner, tiny], span)], span)], span)


# ---- Jacobians ----------------------------------------------------------------------------------

@builtin()
def jacobian(ev, args, kwargs, span):
    """jacobian(y, wrt): ∂y/∂wrt shaped y.shape + wrt.shape, for a tensor or a tuple of tensors"""
    from compiler.transform.jacobian import jacobian as build
    b = _bind("jacobian", args, kwargs, span, ["y", "wrt"], {})
    y = b["y"]
    if not isinstance(y, Tensor) or not y.type.is_float:
        raise ShapeError(f"jacobian needs a float tensor to differentiate, found {_describe(y)}", span)
    wrt = b["wrt"]
    single = isinstance(wrt, Tensor)
    items = (wrt,) if single else wrt.as_tuple() if isinstance(wrt, Record) else wrt
    if not isinstance(items, tuple) or not items or not all(isinstance(w, Tensor) for w in items):
        raise SpecError(f"jacobian's `wrt` must be a tensor or a tuple of tensors, found "
                        f"{_describe(wrt)}", span)
    for w in items:
        if not w.type.is_float:
            raise ShapeError(f"cannot differentiate with respect to an integer tensor {w.type}", span)
    nodes = build(ev.graph, ev.lift(y), [ev.lift(w) for w in items], span=span)
    out = tuple(Tensor(ev.frame, n) for n in nodes)
    return out[0] if single else out
