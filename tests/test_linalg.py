"""Linear algebra, sorting, sampling and Jacobians beyond the per-op table.

* multi-result primitives (eigh, svd, qr): gradients through autodiff against
  float64 central differences (first and second order) and against torch.autograd;
* ill-conditioned inputs (condition number 1e8) on NumPy, PyTorch and ONNX
  (onnxruntime and the reference evaluator), checked by backward errors and
  against np.linalg, with tolerances documented per check;
* shape errors are located and name both operands;
* bernoulli / categorical / gumbel_softmax: frequencies, and the same draws on
  every backend; jacobian against finite differences, on every backend.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import backends.numpy as bnp
import backends.onnx as bo
import backends.torch as btorch
from compiler import api
from compiler.transform import autodiff
from compiler.core.ir import Graph
from dsl.errors import DslError

EPS = 1e-6


def _fd(f, x, eps=EPS):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = f(x)
        x[i] = old - eps
        lo = f(x)
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def _loss_graph(op, shape, seed=0):
    """g, a, loss = Σ_r <result_r, C_r> for random fixed weights C_r, and the weights."""
    rng = np.random.default_rng(seed)
    g = Graph(op)
    a = g.add("input", (), {"name": "a", "dtype": "f64", "shape": shape})
    node = g.add(op, [a], {})
    loss = None
    for i, t in enumerate(g.type(node)):
        r = g.op("tuple_get", node, index=i)
        c = g.add("input", (), {"name": f"c{i}", "dtype": "f64", "shape": t.shape})
        term = g.op("sum", g.op("mul", r, c), axis=None, keepdims=False)
        loss = term if loss is None else g.op("add", loss, term)
    feeds = {f"c{i}": rng.standard_normal(tuple(t.shape)) for i, t in enumerate(g.type(node))}
    return g, a, loss, feeds


MULTI = [("eigh", (4, 4)), ("eigh", (2, 3, 3)), ("svd", (4, 3)), ("svd", (3, 5)),
         ("svd", (2, 3, 3)), ("qr", (5, 3)), ("qr", (2, 3, 3))]


@pytest.mark.parametrize("op,shape", MULTI, ids=[f"{o}-{'x'.join(map(str, s))}" for o, s in MULTI])
def test_multi_result_gradient_first_and_second_order(op, shape):
    # tolerances: central differences with eps 1e-6 in float64 (as tests/test_primitives.py)
    g, a, loss, feeds = _loss_graph(op, shape)
    x = np.random.default_rng(1).standard_normal(shape)
    (ga,) = autodiff.grad(g, loss, [a])
    w = g.add("input", (), {"name": "w", "dtype": "f64", "shape": shape})
    s = g.op("sum", g.op("mul", ga, w), axis=None, keepdims=False)
    (gga,) = autodiff.grad(g, s, [a])
    feeds["w"] = np.random.default_rng(2).standard_normal(shape)
    f0 = bnp.lower(g, {"l": loss}, dtype="f64")
    f1 = bnp.lower(g, {"g": ga, "s": s}, dtype="f64")
    f2 = bnp.lower(g, {"gg": gga}, dtype="f64")
    got1 = f1({**feeds, "a": x})["g"]
    num1 = _fd(lambda v: float(f0({**feeds, "a": v})["l"]), x.copy())
    np.testing.assert_allclose(got1, num1, atol=1e-6, rtol=1e-4)
    got2 = f2({**feeds, "a": x})["gg"]
    num2 = _fd(lambda v: float(f1({**feeds, "a": v})["s"]), x.copy())
    np.testing.assert_allclose(got2, num2, atol=1e-5, rtol=1e-3)
    # the gradient graph lowers to torch and ONNX with the same values
    tg = btorch.lower(g, {"g": ga}, dtype="f64")
    with torch.no_grad():
        np.testing.assert_allclose(tg({**feeds, "a": x})["g"].numpy(), got1, atol=1e-10)
    model = bo.lower(g, {"g": ga}, "f64")
    bo.check(model)
    np.testing.assert_allclose(bo.Program(model, threads=1)({**feeds, "a": x})["g"], got1, atol=1e-9)


def _colsign(v):
    idx = torch.argmax(v.abs(), dim=-2, keepdim=True)
    return torch.sign(torch.gather(v, -2, idx))


@pytest.mark.parametrize("op,shape", MULTI[:5], ids=[f"{o}-{'x'.join(map(str, s))}" for o, s in MULTI[:5]])
def test_multi_result_gradient_matches_torch_autograd(op, shape):
    g, a, loss, feeds = _loss_graph(op, shape)
    x = np.random.default_rng(3).standard_normal(shape)
    (ga,) = autodiff.grad(g, loss, [a])
    ours = bnp.lower(g, {"g": ga}, dtype="f64")({**feeds, "a": x})["g"]
    xt = torch.tensor(x, requires_grad=True)
    if op == "eigh":
        wv, vv = torch.linalg.eigh((xt + xt.mT) / 2)
        res = (wv, vv * _colsign(vv).detach())
    else:
        u, s, vh = torch.linalg.svd(xt, full_matrices=False)
        c = _colsign(u).detach()
        res = (u * c, s, vh * c.mT)
    total = sum((r * torch.tensor(feeds[f"c{i}"])).sum() for i, r in enumerate(res))
    total.backward()
    np.testing.assert_allclose(ours, xt.grad.numpy(), atol=1e-9, rtol=1e-7)


# ---- ill-conditioned inputs ------------------------------------------------------------------

def _ill(n=5, cond=1e8, seed=0, spd=False):
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.logspace(0, -np.log10(cond), n)
    return q1 @ np.diag(s) @ (q1.T if spd else q2.T)


def _run_all(op, args, attrs=None):
    """{backend: [results]} for one node on numpy, torch, onnxruntime and the reference."""
    g = Graph(op)
    ids = [g.add("input", (), {"name": f"a{i}", "dtype": "f64", "shape": v.shape})
           for i, v in enumerate(args)]
    node = g.add(op, ids, dict(attrs or {}))
    t = g.type(node)
    res = ({f"y{i}": g.op("tuple_get", node, index=i) for i in range(len(t))}
           if isinstance(t, tuple) else {"y0": node})
    feeds = {f"a{i}": v for i, v in enumerate(args)}
    out = {"numpy": bnp.lower(g, res, dtype="f64")(feeds)}
    with torch.no_grad():
        out["torch"] = {k: v.numpy() for k, v in btorch.lower(g, res, dtype="f64")(feeds).items()}
    model = bo.lower(g, res, "f64")
    bo.check(model)
    out["onnxruntime"] = bo.Program(model, threads=1)(feeds)
    out["reference"] = bo.reference(model, feeds)
    return {k: [v[f"y{i}"] for i in range(len(res))] for k, v in out.items()}


BACKENDS = ("numpy", "torch", "onnxruntime", "reference")
EPS64 = np.finfo(np.float64).eps


def test_ill_conditioned_solve_has_a_small_backward_error():
    # Gaussian elimination with partial pivoting is backward stable: the residual
    # ||A x - b|| / (||A|| ||x||) stays a small multiple of eps (we allow 100 eps)
    # even at condition number 1e8, where the forward error may reach cond * eps ~ 2e-8.
    a = _ill()
    b = np.random.default_rng(1).standard_normal((5, 2))
    x_np = np.linalg.solve(a, b)
    for be, (x,) in _run_all("solve", [a, b]).items():
        back = np.linalg.norm(a @ x - b) / (np.linalg.norm(a, 2) * np.linalg.norm(x))
        assert back < 100 * EPS64, (be, back)
        assert np.linalg.norm(x - x_np) / np.linalg.norm(x_np) < 1e8 * 100 * EPS64, be


def test_ill_conditioned_cholesky_and_logdet():
    a = _ill(spd=True)
    for be, (low,) in _run_all("cholesky", [a]).items():
        # ||L Lᵀ - A|| / ||A||: backward stable (100 eps)
        assert np.linalg.norm(low @ low.T - a) / np.linalg.norm(a) < 100 * EPS64, be
        assert np.allclose(np.triu(low, 1), 0), be
    want = np.linalg.slogdet(a)[1]           # about -46: pivots from 1 down to 1e-8
    for be, (la,) in _run_all("logabsdet", [a]).items():
        # each log pivot is off by about cond * eps relative to its pivot: 1e-7 absolute
        assert abs(la - want) < 1e-7, (be, la, want)


def test_ill_conditioned_eigh_svd_qr():
    a = _ill(spd=True)
    w_np = np.linalg.eigvalsh(a)
    for be, (w, v) in _run_all("eigh", [a]).items():
        # residual ||A V - V diag(w)|| / ||A|| and orthogonality: 100 eps; eigenvalues
        # to 100 eps * ||A|| absolutely (Weyl), whatever their size
        assert np.linalg.norm(a @ v - v * w) / np.linalg.norm(a, 2) < 100 * EPS64, be
        assert np.linalg.norm(v.T @ v - np.eye(5)) < 100 * EPS64, be
        assert np.max(np.abs(w - w_np)) < 100 * EPS64 * np.linalg.norm(a, 2), be
    a = _ill(seed=2)
    s_np = np.linalg.svd(a, compute_uv=False)
    for be, (u, s, vh) in _run_all("svd", [a]).items():
        assert np.linalg.norm(u * s @ vh - a) / np.linalg.norm(a, 2) < 100 * EPS64, be
        assert np.max(np.abs(s - s_np)) < 100 * EPS64 * s_np[0], be
    for be, (q, r) in _run_all("qr", [a]).items():
        # Householder (numpy, torch) and Gram-Schmidt twice (ONNX) both keep QᵀQ = I
        # to a small multiple of eps while cond * eps < 1
        assert np.linalg.norm(q @ r - a) / np.linalg.norm(a, 2) < 100 * EPS64, be
        assert np.linalg.norm(q.T @ q - np.eye(5)) < 1000 * EPS64, be
        assert np.all(np.diag(r) >= 0), be


def test_sorting_agrees_on_every_backend_with_ties():
    x = np.array([[3.0, 1.0, 3.0, -2.0, 1.0], [0.0, 0.0, 5.0, 0.0, -1.0]])
    for desc in (False, True):
        outs = _run_all("argsort", [x], {"axis": -1, "descending": desc})
        want = np.argsort(-x if desc else x, axis=-1, kind="stable")
        for be, (idx,) in outs.items():
            np.testing.assert_array_equal(idx, want, err_msg=be)


# ---- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("body,words", [
    ("output y = solve(A, b)", ["B must have as many rows as A", "f32[3, 3]", "f32[4, 2]"]),
    ("output y = cholesky(b)", ["square", "f32[4, 2]"]),
    ("output y = triangular_solve(A, b)", ["f32[3, 3]", "f32[4, 2]"]),
    ("output y = qr(transpose(b))[0]", ["m >= n", "f32[2, 4]"]),
    ("output y = topk(b, 5, axis=0)[0]", ["k = 5", "f32[4, 2]"]),
])
def test_shape_errors_are_located_and_show_both_shapes(body, words):
    text = f"model M() {{\n  input A: f32[3, 3]\n  input b: f32[4, 2]\n  {body}\n}}\n"
    with pytest.raises(DslError) as e:
        api.load(text=text)
    msg = str(e.value)
    assert e.value.span is not None and e.value.span.line == 4, msg
    for w in words:
        assert w in msg, msg


# ---- symbolic eye, sampling, jacobian -------------------------------------------------------------

SPEC = """
model S(k = 3) {
  input x: f32[N, 4]
  input logits: f32[2, 3]
  I = eye(dim(x, 0))
  output gram = x @ transpose(x) + I
  output coin = bernoulli(0.25 * ones([4000]))
  output draws = categorical(logits, [3000])
  output soft = gumbel_softmax(logits, 0.5)
}
"""


def test_symbolic_eye_and_discrete_draws_on_every_backend():
    m = api.load(text=SPEC)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    logits = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, -3.0]], dtype=np.float32)
    outs = {be: m.run({"x": x, "logits": logits}, backend=be, seed=7) for be in ("numpy", "torch", "onnx")}
    for be, o in outs.items():
        np.testing.assert_allclose(o["gram"], x @ x.T + np.eye(6), rtol=1e-5, atol=1e-5)
        # the draws are functions of the same host noise: identical on every backend
        np.testing.assert_array_equal(o["coin"], outs["numpy"]["coin"], err_msg=be)
        np.testing.assert_array_equal(o["draws"], outs["numpy"]["draws"], err_msg=be)
        np.testing.assert_allclose(o["soft"], outs["numpy"]["soft"], atol=1e-5)
    o = outs["numpy"]
    assert set(np.unique(o["coin"])) <= {0.0, 1.0}
    # 4000 Bernoulli(0.25) draws: the standard deviation of the mean is 0.0068; 5 sigma
    assert abs(o["coin"].mean() - 0.25) < 0.035
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert o["draws"].shape == (3000, 2) and o["draws"].dtype == np.int64
    for row in range(2):
        freq = np.bincount(o["draws"][:, row], minlength=3) / 3000
        # 3000 draws: per-class standard deviation <= 0.0092; 5 sigma
        assert np.max(np.abs(freq - p[row])) < 0.046, (freq, p[row])
    np.testing.assert_allclose(o["soft"].sum(-1), 1.0, rtol=1e-5)
    other = m.run({"x": x, "logits": logits}, seed=8)
    assert not np.array_equal(other["draws"], o["draws"])


NTK = """
model NTK() {
  input x: f32[4, 3]
  param W1: [3, 8] ~ normal(0, 1)
  param W2: [8, 1] ~ normal(0, 1)
  f = tanh(x @ W1) @ W2 / sqrt(8.0)
  J1, J2 = jacobian(f, (W1, W2))
  Jf = concat([reshape(J1, [4, 24]), reshape(J2, [4, 8])], axis=1)
  output f
  output K = Jf @ transpose(Jf)
  output J1
}
"""


def test_jacobian_gives_the_empirical_ntk_on_every_backend():
    m = api.load(text=NTK)
    params = {k: v.astype(np.float64) for k, v in m.init_params(seed=0).items()}
    x = np.random.default_rng(0).standard_normal((4, 3))

    def f(w1, w2=params["W2"]):
        return (np.tanh(x @ w1) @ w2 / np.sqrt(8.0))[:, 0]

    # finite-difference Jacobian in float64: central differences, eps 1e-6
    j_num = np.stack([_fd(lambda w, i=i: f(w)[i], params["W1"].copy()) for i in range(4)])
    outs = {be: m.run({"x": x}, params, backend=be, dtype="f64") for be in ("numpy", "torch", "onnx")}
    for be, o in outs.items():
        np.testing.assert_allclose(o["J1"][:, 0], j_num, atol=1e-8, err_msg=be)
        k = o["K"]
        np.testing.assert_allclose(k, k.T, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(k) > -1e-10), be      # a Gram matrix is PSD
        np.testing.assert_allclose(k, outs["numpy"]["K"], atol=1e-10, err_msg=be)
    # W2 enters linearly: its block of K is tanh(x W1) tanh(x W1)ᵀ / 8
    h = np.tanh(x @ params["W1"])
    j2 = outs["numpy"]["K"] - np.einsum("iab,jab->ij", outs["numpy"]["J1"][:, 0], outs["numpy"]["J1"][:, 0])
    np.testing.assert_allclose(j2, h @ h.T / 8, atol=1e-10)


def test_transposed_matrix_times_vector_in_onnx():
    # onnxruntime 1.32 fuses Transpose+MatMul into FusedMatMul and gets `xᵀ y` wrong
    # for a 1-D y; matmul's ONNX lowering makes vectors 2-D to stay clear of it
    m = api.load(text="model R() {\n  input x: f32[B, 4]\n  input y: f32[B]\n  input v: f32[4]\n"
                      "  output a = transpose(x) @ y\n  output b = y @ x\n  output c = v @ transpose(x)\n}\n")
    rng = np.random.default_rng(0)
    x, y, v = rng.standard_normal((30, 4)), rng.standard_normal(30), rng.standard_normal(4)
    o = m.run({"x": x, "y": y, "v": v}, backend="onnx", dtype="f64")
    np.testing.assert_allclose(o["a"], x.T @ y, atol=1e-12)
    np.testing.assert_allclose(o["b"], y @ x, atol=1e-12)
    np.testing.assert_allclose(o["c"], v @ x.T, atol=1e-12)


COMPOSITES = """
model C() {
  input A: f32[4, 3]
  input S: f32[3, 3]
  input c: f32[3, 4]
  loss p = sum(pinv(A) * c)
  loss i = sum(inv(S) * c[:, :3])
  loss d = det(S) + logdet(S @ transpose(S) + eye(3)) + trace(S)
}
"""


@pytest.mark.parametrize("loss,ref", [
    ("p", lambda a, s, c: (torch.linalg.pinv(a) * c).sum()),
    ("i", lambda a, s, c: (torch.linalg.inv(s) * c[:, :3]).sum()),
    ("d", lambda a, s, c: torch.linalg.det(s) + torch.logdet(s @ s.T + torch.eye(3, dtype=s.dtype))
     + torch.trace(s)),
])
def test_composite_builtins_gradients_match_torch(loss, ref):
    m = api.load(text=COMPOSITES)
    rng = np.random.default_rng(0)
    data = {"A": rng.standard_normal((4, 3)), "S": rng.standard_normal((3, 3)) + 2 * np.eye(3),
            "c": rng.standard_normal((3, 4))}
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in data.items()}
    value = ref(ts["A"], ts["S"], ts["c"])
    value.backward()
    for be in ("numpy", "torch", "onnx"):
        g = m.gradients(loss, data, {}, wrt=["A", "S"], backend=be, dtype="f64")
        np.testing.assert_allclose(g[loss], value.item(), rtol=1e-10, err_msg=be)
        for k in ("A", "S"):
            want = np.zeros_like(data[k]) if ts[k].grad is None else ts[k].grad.numpy()
            np.testing.assert_allclose(g[k], want, atol=1e-9, err_msg=f"{be} d{loss}/d{k}")
