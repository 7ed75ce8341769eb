"""ONNX lowerings of the factorisations: `Loop`-based algorithms in the standard opset.

ONNX has no linear-algebra ops, so each factorisation is a loop whose body works on
whole (batched) matrices with MatMul, Gather and one-hot outer products; every
op broadcasts over the leading batch dims and every size is read at run time with
`Shape`, so batch dims and the matrix size may be symbolic. No contrib ops: the
models run in onnxruntime and in onnx's ReferenceEvaluator.

* cholesky: by columns (n steps, each one matrix-vector product);
* triangular solve: forward/back substitution (n steps);
* solve / log|det| / sign(det): Gaussian elimination with partial pivoting
  (row swaps as rank-1 updates), then back substitution;
* eigh: cyclic Jacobi rotations (JᵀSJ) over every pair, sweeps until the largest
  relative off-diagonal entry met in a sweep is below ~eps, at most `MAX_SWEEPS`;
* svd: one-sided (Hestenes) Jacobi on the columns, the same rotation rule on
  AᵀA's entries, then column norms; m < n works on Aᵀ;
* qr: classical Gram-Schmidt with one re-orthogonalisation ("twice is enough").

Results follow the conventions of backends/numpy/prelude_linalg.py (ascending
eigenvalues, descending singular values, signed vectors, diag(R) >= 0).
"""
from __future__ import annotations

import numpy as np

MAX_SWEEPS = 16
_EPS = {"f64": 2.220446049250313e-16, "f32": 1.1920929e-07, "f16": 9.77e-4}


# ---- small helpers (work on a root builder or a loop body builder) ------------

def _fconst(o, v):
    return o.const(np.array(v, dtype=o.np_dtype("f32")))


def _i(o, v):
    return o.const(np.array(v, dtype=np.int64))


def dim(o, x, axis):
    """0-D int64: x.shape[axis] read at run time."""
    return o.op("Squeeze", o.op("Shape", x, start=axis, end=(axis + 1) or None), o.ints([0]))


def batch_shape(o, x):
    """1-D int64: x.shape[:-2]."""
    return o.op("Shape", x, end=-2)


def iota(o, n):
    return o.op("Range", _i(o, 0), n, _i(o, 1))


def onehot(o, rng, i):
    """[.., n] float: rng == i (i a 0-D index or a [..] batch of them)."""
    return o.op("Cast", o.op("Equal", rng, o.op("Unsqueeze", i, o.ints([-1]))),
                to=o.elem_type("f32"))


def unit(o, rng, i):
    """e_i as [n] float for a 0-D index i."""
    return o.op("Cast", o.op("Equal", rng, i), to=o.elem_type("f32"))


def eye(o, n):
    r = iota(o, n)
    return o.op("Cast", o.op("Equal", o.op("Unsqueeze", r, o.ints([1])),
                             o.op("Unsqueeze", r, o.ints([0]))), to=o.elem_type("f32"))


def mT(o, x, rank):
    return o.op("Transpose", x, perm=list(range(rank - 2)) + [rank - 1, rank - 2])


def outer(o, col, row):
    """col [.., n] ⊗ row [.., k] -> [.., n, k]."""
    return o.op("Mul", o.op("Unsqueeze", col, o.ints([-1])), o.op("Unsqueeze", row, o.ints([-2])))


def matvec(o, a, v):
    """a [.., n, k] @ v [.., k] -> [.., n]."""
    return o.op("Squeeze", o.op("MatMul", a, o.op("Unsqueeze", v, o.ints([-1]))), o.ints([-1]))


def zeros_like(o, x):
    return o.op("Expand", _fconst(o, 0.0), o.op("Shape", x))


def loop(o, trip, carries, body_fn, elems):
    """An ONNX Loop of `trip` (0-D int64) iterations over `carries` (value names).

    ``body_fn(b, it, vals) -> (new_vals, cond_or_None)`` builds the body with the
    sub-builder ``b`` (outer values are visible by name); `elems` are the carries'
    ONNX element types. Returns the final carries.
    """
    from onnx import TensorProto, helper
    b = o.subgraph(o.graph)
    it, cin = b.names.fresh("iter"), b.names.fresh("cond")
    ins = [helper.make_tensor_value_info(it, TensorProto.INT64, []),
           helper.make_tensor_value_info(cin, TensorProto.BOOL, [])]
    vals = []
    for e in elems:
        nm = b.names.fresh("carry")
        ins.append(helper.make_tensor_value_info(nm, e, None))
        vals.append(nm)
    new, cond = body_fn(b, it, vals)
    outs = []
    cname = b.names.fresh("cond_out")
    b._emit("Identity", [cond if cond else cin], [cname], {})
    outs.append(helper.make_tensor_value_info(cname, TensorProto.BOOL, []))
    for v, e in zip(new, elems):
        nm = b.names.fresh("out")
        b._emit("Identity", [v], [nm], {})
        outs.append(helper.make_tensor_value_info(nm, e, None))
    g = helper.make_graph(b.nodes, o.names.fresh("loop_body"), ins, outs)
    res = o.op("Loop", trip, o.const(np.array(True)), *carries, outputs=len(carries), body=g)
    return [res] if isinstance(res, str) else list(res)


def _fl(o):
    return o.elem_type("f32")


# ---- cholesky -------------------------------------------------------------------

def cholesky(o, a, rank):
    s = o.op("Mul", o.op("Add", a, mT(o, a, rank)), _fconst(o, 0.5))
    n = dim(o, a, -1)
    rng = iota(o, n)

    def body(b, j, vals):
        (low,) = vals
        row = b.op("Gather", low, j, axis=-2)                      # L[j, :]
        col = b.op("Sub", b.op("Gather", s, j, axis=-1), matvec(b, low, row))
        d = b.op("Sqrt", b.op("Gather", col, j, axis=-1))
        keep = b.op("Cast", b.op("GreaterOrEqual", rng, j), to=_fl(b))
        col = b.op("Mul", b.op("Div", col, b.op("Unsqueeze", d, b.ints([-1]))), keep)
        return [b.op("Add", low, outer(b, col, unit(b, rng, j)))], None

    return loop(o, n, [zeros_like(o, a)], body, [_fl(o)])[0]


# ---- triangular solve -----------------------------------------------------------

def triangular_solve(o, a, bm, rank, lower, transpose):
    """X with T X = B, T = tril/triu(A) (transposed when asked); only T is read."""
    if transpose:
        a, lower = mT(o, a, rank), not lower
    n = dim(o, a, -1)
    rng = iota(o, n)
    last = o.op("Sub", n, _i(o, 1))

    def body(b, t, vals):
        (x,) = vals
        i = t if lower else b.op("Sub", last, t)
        arow = b.op("Gather", a, i, axis=-2)                        # [.., n]
        acc = b.op("Squeeze", b.op("MatMul", b.op("Unsqueeze", arow, b.ints([-2])), x), b.ints([-2]))
        aii = b.op("Unsqueeze", b.op("Gather", arow, i, axis=-1), b.ints([-1]))
        xi = b.op("Div", b.op("Sub", b.op("Gather", bm, i, axis=-2), acc), aii)
        return [b.op("Add", x, outer(b, unit(b, rng, i), xi))], None

    return loop(o, n, [zeros_like(o, bm)], body, [_fl(o)])[0]


# ---- Gaussian elimination with partial pivoting -----------------------------------

def eliminate(o, m, n):
    """Row-reduce [A | B] (m, [.., n, n+k]) to [U | C]; returns (M, sign of the row swaps)."""
    rng = iota(o, n)
    sign0 = o.op("Expand", _fconst(o, 1.0), batch_shape(o, m))

    def body(b, c, vals):
        mm, sign = vals
        col = b.op("Gather", mm, c, axis=-1)                        # [.., n]
        below = b.op("GreaterOrEqual", rng, c)
        score = b.op("Where", below, b.op("Abs", col), _fconst(b, -1.0))
        p = b.op("ArgMax", score, axis=-1, keepdims=0)              # [..] int64
        ep, ec = onehot(b, rng, p), unit(b, rng, c)
        rowc = b.op("Gather", mm, c, axis=-2)                       # [.., n+k]
        rowp = b.op("Squeeze", b.op("MatMul", b.op("Unsqueeze", ep, b.ints([-2])), mm), b.ints([-2]))
        mm = b.op("Add", mm, outer(b, b.op("Sub", ec, ep), b.op("Sub", rowp, rowc)))
        swapped = b.op("Not", b.op("Equal", p, c))
        sign = b.op("Where", swapped, b.op("Neg", sign), sign)
        piv = b.op("Unsqueeze", b.op("Gather", rowp, c, axis=-1), b.ints([-1]))
        strictly = b.op("Cast", b.op("Greater", rng, c), to=_fl(b))
        f = b.op("Mul", b.op("Div", b.op("Gather", mm, c, axis=-1), piv), strictly)
        return [b.op("Sub", mm, outer(b, f, rowp)), sign], None

    return loop(o, n, [m, sign0], body, [_fl(o), _fl(o)])


def solve(o, a, bm, rank):
    n = dim(o, a, -1)
    n1 = o.op("Unsqueeze", n, o.ints([0]))
    m, _ = eliminate(o, o.op("Concat", a, bm, axis=-1), n)
    u = o.op("Slice", m, o.ints([0]), n1, o.ints([-1]))
    c = o.op("Slice", m, n1, o.ints([np.iinfo(np.int64).max]), o.ints([-1]))
    return triangular_solve(o, u, c, rank, lower=False, transpose=False)


def _diag(o, x, n):
    return o.op("ReduceSum", o.op("Mul", x, eye(o, n)), o.ints([-1]), keepdims=0)


def slogdet(o, a):
    """(sign, log|det A|) from the pivots of the elimination."""
    n = dim(o, a, -1)
    m, sign = eliminate(o, a, n)
    d = _diag(o, m, n)
    logabs = o.op("ReduceSum", o.op("Log", o.op("Abs", d)), o.ints([-1]), keepdims=0)
    sign = o.op("Mul", sign, o.op("ReduceProd", o.op("Sign", d), o.ints([-1]), keepdims=0))
    return sign, logabs


# ---- Jacobi rotations ---------------------------------------------------------------

def _rotation(b, app, aqq, apq, valid):
    """(c, s) of the Jacobi rotation zeroing apq of [[app, apq], [apq, aqq]] (Golub-Van
    Loan 8.4.2); the identity where apq == 0 or the pair is not p < q."""
    nz = b.op("And", b.op("Not", b.op("Equal", apq, _fconst(b, 0.0))), valid)
    safe = b.op("Where", nz, apq, _fconst(b, 1.0))
    tau = b.op("Div", b.op("Sub", aqq, app), b.op("Mul", safe, _fconst(b, 2.0)))
    sgn = b.op("Where", b.op("Less", tau, _fconst(b, 0.0)), _fconst(b, -1.0), _fconst(b, 1.0))
    root = b.op("Sqrt", b.op("Add", _fconst(b, 1.0), b.op("Mul", tau, tau)))
    t = b.op("Div", sgn, b.op("Add", b.op("Abs", tau), root))
    c = b.op("Reciprocal", b.op("Sqrt", b.op("Add", _fconst(b, 1.0), b.op("Mul", t, t))))
    s = b.op("Mul", t, c)
    return (b.op("Where", nz, c, _fconst(b, 1.0)), b.op("Where", nz, s, _fconst(b, 0.0)))


def _jacobi(o, work, n, step, tol):
    """Cyclic Jacobi over all (p, q), p < q: ``step(b, vals, p, q, J, valid) -> vals``.

    The carries are the working matrices plus the largest relative off-diagonal
    entry seen in the current sweep; a sweep that saw none above `tol` ends the loop.
    """
    rng = iota(o, n)
    nn = o.op("Mul", n, n)
    trip = o.op("Mul", nn, _i(o, MAX_SWEEPS))
    ident = eye(o, n)

    def body(b, t, vals):
        *mats, worst = vals
        k = b.op("Mod", t, nn)
        p, q = b.op("Div", k, n), b.op("Mod", k, n)
        valid = b.op("Less", p, q)
        ep, eq = unit(b, rng, p), unit(b, rng, q)
        app, aqq, apq = step.entries(b, mats, p, q)
        c, s = _rotation(b, app, aqq, apq, valid)
        c1, s1 = (b.op("Unsqueeze", v, b.ints([-1, -2])) for v in (c, s))
        pp = b.op("Add", outer(b, ep, ep), outer(b, eq, eq))
        pq = b.op("Sub", outer(b, ep, eq), outer(b, eq, ep))
        jm = b.op("Add", ident, b.op("Add", b.op("Mul", b.op("Sub", c1, _fconst(b, 1.0)), pp),
                                     b.op("Mul", s1, pq)))
        mats = step.apply(b, mats, jm)
        denom = b.op("Sqrt", b.op("Abs", b.op("Mul", app, aqq)))
        rel = b.op("Where", b.op("And", valid, b.op("Greater", denom, _fconst(b, 0.0))),
                   b.op("Div", b.op("Abs", apq), b.op("Where", b.op("Greater", denom, _fconst(b, 0.0)),
                                                      denom, _fconst(b, 1.0))),
                   b.op("Where", valid, b.op("Abs", apq), _fconst(b, 0.0)))
        rel = b.op("ReduceMax", b.op("Reshape", rel, b.ints([-1])), keepdims=0)
        first = b.op("Equal", k, _i(b, 0))
        worst = b.op("Max", b.op("Where", first, _fconst(b, 0.0), worst), rel)
        last = b.op("Equal", k, b.op("Sub", nn, _i(b, 1)))
        go = b.op("Or", b.op("Not", last), b.op("Greater", worst, _fconst(b, tol)))
        return list(mats) + [worst], go

    return loop(o, trip, list(work) + [_fconst(o, 0.0)], body, [_fl(o)] * (len(work) + 1))[:-1]


class _EighStep:
    @staticmethod
    def entries(b, mats, p, q):
        s = mats[0]
        sp = b.op("Gather", s, p, axis=-1)
        return (b.op("Gather", sp, p, axis=-1), b.op("Gather", b.op("Gather", s, q, axis=-1), q, axis=-1),
                b.op("Gather", sp, q, axis=-1))

    def __init__(self, rank):
        self.rank = rank

    def apply(self, b, mats, jm):
        s, v = mats
        return [b.op("MatMul", mT(b, jm, self.rank), b.op("MatMul", s, jm)), b.op("MatMul", v, jm)]


class _SvdStep:
    @staticmethod
    def entries(b, mats, p, q):
        u = mats[0]
        up, uq = b.op("Gather", u, p, axis=-1), b.op("Gather", u, q, axis=-1)
        dot = lambda x, y: b.op("ReduceSum", b.op("Mul", x, y), b.ints([-1]), keepdims=0)
        return dot(up, up), dot(uq, uq), dot(up, uq)

    @staticmethod
    def apply(b, mats, jm):
        u, v = mats
        return [b.op("MatMul", u, jm), b.op("MatMul", v, jm)]


def _tol(o):
    return 4 * _EPS[o.run_dtype]


def _gather_cols(o, v, idx):
    """v [.., m, n] with its columns permuted by idx [.., n]."""
    full = o.op("Expand", o.op("Unsqueeze", idx, o.ints([-2])), o.op("Shape", v))
    return o.op("GatherElements", v, full, axis=-1)


def colsign(o, v):
    """[.., 1, n]: the sign of each column's largest-|.| entry (0 -> 1)."""
    i = o.op("ArgMax", o.op("Abs", v), axis=-2, keepdims=1)
    s = o.op("Sign", o.op("GatherElements", v, i, axis=-2))
    return o.op("Add", s, o.op("Cast", o.op("Equal", s, _fconst(o, 0.0)), to=_fl(o)))


def eigh(o, a, rank):
    s = o.op("Mul", o.op("Add", a, mT(o, a, rank)), _fconst(o, 0.5))
    n = dim(o, a, -1)
    v0 = o.op("Expand", eye(o, n), o.op("Shape", a))
    step = _EighStep(rank)
    s, v = _jacobi(o, [s, v0], n, step, _tol(o))
    w = _diag(o, s, n)
    w, idx = o.op("TopK", w, o.op("Unsqueeze", n, o.ints([0])), axis=-1, largest=0, sorted=1,
                  outputs=2)
    v = _gather_cols(o, v, idx)
    return [w, o.op("Mul", v, colsign(o, v))]


def svd(o, a, rank, tall):
    """Reduced SVD (U, S, Vh); `tall` says m >= n (else it works on Aᵀ)."""
    x = a if tall else mT(o, a, rank)
    n = dim(o, x, -1)
    v0 = o.op("Expand", eye(o, n), o.op("Concat", batch_shape(o, x),
                                         o.op("Shape", x, start=-1), o.op("Shape", x, start=-1),
                                         axis=0))
    u, v = _jacobi(o, [x, v0], n, _SvdStep, _tol(o))
    s = o.op("Sqrt", o.op("ReduceSum", o.op("Mul", u, u), o.ints([-2]), keepdims=0))
    s, idx = o.op("TopK", s, o.op("Unsqueeze", n, o.ints([0])), axis=-1, largest=1, sorted=1,
                  outputs=2)
    u, v = _gather_cols(o, u, idx), _gather_cols(o, v, idx)
    pos = o.op("Greater", s, _fconst(o, 0.0))
    u = o.op("Div", u, o.op("Unsqueeze", o.op("Where", pos, s, _fconst(o, 1.0)), o.ints([-2])))
    if not tall:
        u, v = v, u
    c = colsign(o, u)
    return [o.op("Mul", u, c), s, mT(o, o.op("Mul", v, c), rank)]


# ---- QR -----------------------------------------------------------------------------

def qr(o, a, rank):
    n = dim(o, a, -1)
    rng = iota(o, n)
    r0 = o.op("Expand", _fconst(o, 0.0), o.op("Concat", batch_shape(o, a), o.op("Shape", a, start=-1),
                                              o.op("Shape", a, start=-1), axis=0))

    def body(b, j, vals):
        q, r = vals
        col = b.op("Gather", a, j, axis=-1)                         # [.., m]
        qt = mT(b, q, rank)
        r1 = matvec(b, qt, col)
        v = b.op("Sub", col, matvec(b, q, r1))
        r2 = matvec(b, qt, v)
        v = b.op("Sub", v, matvec(b, q, r2))
        rjj = b.op("Sqrt", b.op("ReduceSum", b.op("Mul", v, v), b.ints([-1]), keepdims=1))
        ej = unit(b, rng, j)
        q = b.op("Add", q, outer(b, b.op("Div", v, rjj), ej))
        rcol = b.op("Add", b.op("Add", r1, r2), b.op("Mul", rjj, ej))
        return [q, b.op("Add", r, outer(b, rcol, ej))], None

    return loop(o, n, [zeros_like(o, a), r0], body, [_fl(o), _fl(o)])
