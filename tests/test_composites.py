"""Composite ops: every backend's native lowering agrees with the decomposition.

For each composite (a table row: builder of the op on fresh inputs, plus feeds) we
build two graphs, the op itself and its decomposition (`Primitive.expand` spliced
in), seed a random cotangent, and compare value and VJPs:

* the reference is the decomposition on the NumPy backend in float64;
* each backend's lowering of the op (native where it has one) runs in float64, so
  the bound is 1e-9 of the largest magnitude: only summation order differs. The
  one exception is ONNX's Erf (GELU), which onnxruntime computes in float32 inside a
  float64 model (`ORT_F32_ONLY`): 1e-6, a few float32 ulps;
* the VJP is the op's own rule (fused) against autodiff of the decomposition.
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import api
from compiler.transform.autodiff import vjp
from compiler.core.ir import Graph
from compiler.primitives import all_primitives, get_primitive

import backends.numpy as bnp

RNG = np.random.default_rng(0)


def _inp(g, name, dtype, shape):
    return g.add("input", (), {"name": name, "dtype": dtype, "shape": tuple(shape)})


def _case_sce(g):
    z = _inp(g, "z", "f32", (6, 5, 7))
    y = _inp(g, "y", "i64", (6, 5))
    feeds = {"z": RNG.normal(size=(6, 5, 7)) * 3, "y": RNG.integers(0, 7, size=(6, 5))}
    return "softmax_cross_entropy", [z, y], {}, feeds


def _case_sce_grad(g):
    z = _inp(g, "z", "f32", (6, 5, 7))
    y = _inp(g, "y", "i64", (6, 5))
    ct = _inp(g, "ct", "f32", ())
    labels = RNG.integers(0, 7, size=(6, 5))
    labels[0, 1], labels[3, 4] = -1, 7  # out of [0, K): zero rows, the masked path
    feeds = {"z": RNG.normal(size=(6, 5, 7)) * 3, "y": labels, "ct": np.array(1.3)}
    return "softmax_cross_entropy_grad", [z, y, ct], {}, feeds


def _case_sce_grad_valid(g):
    op, args, attrs, feeds = _case_sce_grad(g)
    return op, args, attrs, dict(feeds, y=RNG.integers(0, 7, size=(6, 5)))  # every label in range


def _case_ln(g):
    x = _inp(g, "x", "f32", (4, 3, 16))
    ga = _inp(g, "gamma", "f32", (16,))
    be = _inp(g, "beta", "f32", (16,))
    feeds = {"x": RNG.normal(size=(4, 3, 16)) * 2 + 1, "gamma": RNG.normal(size=16),
             "beta": RNG.normal(size=16)}
    return "layer_norm", [x, ga, be], {"eps": 1e-5}, feeds


def _case_gelu(g):
    x = _inp(g, "x", "f32", (5, 9))
    return "gelu", [x], {}, {"x": RNG.normal(size=(5, 9)) * 3}


def _case_gelu_grad(g):
    ct = _inp(g, "ct", "f32", (5, 9))
    x = _inp(g, "x", "f32", (5, 9))
    return "gelu_grad", [ct, x], {}, {"ct": RNG.normal(size=(5, 9)), "x": RNG.normal(size=(5, 9)) * 3}


def _case_attention(g):
    q = _inp(g, "q", "f32", (2, 3, 5, 8))
    k = _inp(g, "k", "f32", (2, 3, 6, 8))
    v = _inp(g, "v", "f32", (2, 3, 6, 4))
    keep = _inp(g, "keep", "bool", (2, 1, 1, 6))
    mask = RNG.random((2, 1, 1, 6)) > 0.4
    mask[..., 0] = True  # no row with every key dropped (there torch's -1e9 add differs)
    feeds = {"q": RNG.normal(size=(2, 3, 5, 8)), "k": RNG.normal(size=(2, 3, 6, 8)),
             "v": RNG.normal(size=(2, 3, 6, 4)), "keep": mask}
    return "attention", [q, k, v, keep], {}, feeds


def _case_attention_nomask(g):
    q = _inp(g, "q", "f32", (3, 4, 8))
    kv = _inp(g, "kv", "f32", (3, 4, 8))
    keep = g.add("const", (), {"value": True, "dtype": "bool", "shape": ()})
    feeds = {"q": RNG.normal(size=(3, 4, 8)), "kv": RNG.normal(size=(3, 4, 8))}
    return "attention", [q, kv, kv, keep], {}, feeds  # one arg twice: its cotangents add


def _case_lerp(g):
    a = _inp(g, "a", "f32", (4, 6))
    b = _inp(g, "b", "f32", (6,))
    return "lerp", [a, b], {"w": 0.1}, {"a": RNG.normal(size=(4, 6)), "b": RNG.normal(size=6)}


def _case_adam(g):
    names = ("p", "m", "v")
    ins = [_inp(g, k, "f32", (5, 3)) for k in names] + [_inp(g, "s", "f32", ()), _inp(g, "c", "f32", ())]
    feeds = {"p": RNG.normal(size=(5, 3)), "m": RNG.normal(size=(5, 3)),
             "v": RNG.uniform(0.01, 1, size=(5, 3)), "s": np.array(0.01), "c": np.array(0.2)}
    return "adam_param", ins, {"eps": 1e-8}, feeds


CASES = {"lerp": _case_lerp, "adam_param": _case_adam, "softmax_cross_entropy": _case_sce,
         "softmax_cross_entropy_grad": _case_sce_grad,
         "softmax_cross_entropy_grad_valid": _case_sce_grad_valid, "layer_norm": _case_ln, "gelu": _case_gelu,
         "gelu_grad": _case_gelu_grad, "attention": _case_attention,
         "attention_nomask": _case_attention_nomask}


def _build(case, decomposed: bool):
    """(graph, results): the op's value and its VJPs for a fixed random cotangent."""
    g = Graph(case)
    op, args, attrs, feeds = CASES[case](g)
    prim = get_primitive(op)
    out = prim.decomposition(g, args, attrs) if decomposed else g.add(op, args, attrs)
    t = g.type(out)
    ct = _inp(g, "ct_out", t.dtype, t.shape)
    feeds = dict(feeds, ct_out=RNG.normal(size=t.shape) if t.shape else np.array(0.7))
    wrt = list(dict.fromkeys(a for a in args if g.type(a).is_float))
    results = {"value": out}
    for a, c in zip(wrt, vjp(g, [out], [ct], wrt)):
        results["d_" + g.node(a).attrs["name"]] = c
    return g, results, feeds


def _run(backend, g, results, feeds, dtype):
    feeds = {k: (v.astype(dtype) if np.asarray(v).dtype.kind == "f" else v) for k, v in feeds.items()}
    if backend == "numpy":
        out = bnp.lower(g, results, dtype="f64" if dtype == np.float64 else "f32")(feeds)
    elif backend == "torch":
        import torch
        import backends.torch as bt
        m = bt.lower(g, results, dtype="f64" if dtype == np.float64 else "f32")
        with torch.no_grad():
            out = m({k: torch.as_tensor(np.asarray(v)) for k, v in feeds.items()})
        out = {k: v.numpy() for k, v in out.items()}
    else:
        import backends.onnx as box
        prog = box.lower_program(g, results, dtype="f32" if dtype == np.float32 else "f64")
        out = prog(feeds)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def test_every_composite_has_a_case():
    composites = {n for n, p in all_primitives().items() if p.decomposition is not None}
    covered = {CASES[c](Graph())[0] for c in CASES}
    assert composites == covered | MULTI_RESULT  # those: test_lstm_native_matches_decomposition


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_native_matches_decomposition(case, backend):
    g_ref, r_ref, feeds = _build(case, decomposed=True)
    ref = _run("numpy", g_ref, r_ref, feeds, np.float64)
    g, r, _ = _build(case, decomposed=False)
    got = _run(backend, g, r, feeds, np.float64)
    assert set(got) == set(ref)
    rtol = 1e-6 if backend == "onnx" and case.startswith("gelu") else 1e-9
    for k in ref:
        scale = max(1.0, float(np.max(np.abs(ref[k]))))
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=rtol * scale, err_msg=f"{case} {k}")


def test_native_lowerings_are_used():
    """The torch module calls the fused kernels (else the table would be dead code)."""
    import backends.torch as bt
    want = {"softmax_cross_entropy": "F.cross_entropy", "layer_norm": "F.layer_norm",
            "gelu": "F.gelu", "attention": "F.scaled_dot_product_attention",
            "attention_nomask": "F.scaled_dot_product_attention", "lerp": "torch.lerp",
            "adam_param": "torch.addcdiv"}
    for op in ("lstm", "gru"):
        g, r, _ = _build_rnn(op, False, False)
        src = bt.lower(g, r).source
        assert f"torch._VF.{op}" in src and "torch.autograd.grad" in src and "for _t" not in src
        # forward and VJP in one program: the backward reads the forward's autograd tape
        assert f"{op}_seq_taped(" in src and "rnn_vjp_taped(" in src
    for case, call in want.items():
        g, r, _ = _build(case, decomposed=False)
        assert call in bt.lower(g, {"value": r["value"]}).source
    # with its VJP: the forward keeps its statistics for aten's fused backward
    g, r, _ = _build("layer_norm", decomposed=False)
    src = bt.lower(g, r).source
    assert "aten.native_layer_norm(" in src and src.count("native_layer_norm(") == 1
    assert "native_layer_norm_backward(" in src and "F.layer_norm" not in src


def test_cross_entropy_is_stable_at_large_logits():
    """logits near 1e4 differing by 1: logsumexp(z) - z_y would keep ~3 digits in f32."""
    g = Graph("ce")
    z = _inp(g, "z", "f32", (2, 3))
    y = _inp(g, "y", "i64", (2,))
    out = g.add("softmax_cross_entropy", [z, y], {})
    zs = np.array([[1e4, 1e4 - 1, 1e4 - 2], [-1e4, -1e4 + 1, -1e4 + 3]], np.float32)
    ys = np.array([0, 2])
    zz = zs.astype(np.float64) - zs.astype(np.float64).max(-1, keepdims=True)
    lp = zz - np.log(np.exp(zz).sum(-1, keepdims=True))
    exact = -np.mean(lp[np.arange(2), ys])
    for backend in ("numpy", "torch", "onnx"):
        got = _run(backend, g, {"v": out}, {"z": zs, "y": ys}, np.float32)["v"]
        assert abs(got - exact) <= 1e-6 * exact, backend  # a few f32 ulps of the loss itself


def test_cross_entropy_out_of_range_label_is_a_zero_term_on_every_backend():
    """A label outside [0, K) (e.g. blobs' -1 under 3 classes) adds a zero term to the
    mean on every backend, as the decomposition's one-hot row says; the native kernels
    would index out of range. Reference: torch on clamped labels, masked."""
    import torch
    m = api.load(text="model M() { input z: f32[B, 3]\n input y: i64[B]\n"
                      " loss L = cross_entropy(z, y) }")
    z = np.random.default_rng(0).standard_normal((5, 3))
    y = np.array([0, -1, 2, 3, 1])
    keep = torch.tensor([1.0, 0, 1, 0, 1], dtype=torch.float64)
    zt = torch.tensor(z, requires_grad=True)
    ref = (torch.nn.functional.cross_entropy(zt, torch.tensor(np.clip(y, 0, 2)),
                                             reduction="none") * keep).mean()
    ref.backward()
    for backend in ("numpy", "torch", "onnx"):
        dtype = "f32" if backend == "onnx" else "f64"
        tol = 1e-6 if dtype == "f32" else 1e-12
        out = m.run({"z": z, "y": y}, {}, backend=backend, dtype=dtype)["L"]
        g = m.gradients("L", {"z": z, "y": y}, {}, wrt=["z"], backend=backend, dtype=dtype)["z"]
        assert abs(float(out) - ref.item()) < tol, backend
        np.testing.assert_allclose(g, zt.grad.numpy(), atol=tol)


# ---- lstm, gru (compiler/primitives/recurrent.py): several results, a fused VJP -----------

# *_grad: exercised as their VJPs (layer_norm_grad, attention_grad: their op's cases)
MULTI_RESULT = {"lstm", "lstm_grad", "gru", "gru_grad", "layer_norm_grad", "attention_grad"}


def _build_rnn(op: str, decomposed: bool, reverse: bool, forget_bias: float = 0.0):
    """(graph, results, feeds): the op's results and the VJPs of all six operands for
    random cotangents of every result; decomposed: the scan and autodiff's reverse scan."""
    rng = np.random.default_rng(1)
    B, T, D, H = 3, 5, 4, 6
    k = 4 if op == "lstm" else 3
    g = Graph(op)
    states = {"h0": (B, H), "c0": (B, H)} if op == "lstm" else {"h0": (B, H)}
    weights = {"W": (D, k * H), "U": (H, k * H)}
    weights.update({"b": (k * H,)} if op == "lstm" else {"bx": (k * H,), "bh": (k * H,)})
    shapes = {**states, "x": (B, T, D), **weights}
    args = [_inp(g, name, "f32", s) for name, s in shapes.items()]
    feeds = {name: rng.normal(size=s) * (0.5 if name in "WU" else 1.0) for name, s in shapes.items()}
    attrs = {"reverse": reverse, **({"forget_bias": forget_bias} if op == "lstm" else {})}
    prim = get_primitive(op)
    node = prim.decomposition(g, args, attrs) if decomposed else g.add(op, args, attrs)
    outs = [g.add("tuple_get", [node], {"index": i}) for i in range(len(states) + 1)]
    names = ["h", "c"][:len(states)] + ["ys"]
    cts = []
    for name, o in zip(names, outs):
        t = g.type(o)
        cts.append(_inp(g, "ct_" + name, t.dtype, t.shape))
        feeds["ct_" + name] = rng.normal(size=t.shape)
    results = dict(zip(names, outs))
    for a, c in zip(args, vjp(g, outs, cts, args)):
        results["d_" + g.node(a).attrs["name"]] = c
    return g, results, feeds


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
@pytest.mark.parametrize("op,forget_bias,reverse", [("lstm", 0.0, False), ("lstm", 1.0, True),
                                                    ("gru", 0.0, False), ("gru", 0.0, True)])
def test_rnn_native_matches_decomposition(backend, op, forget_bias, reverse):
    """torch: torch._VF.lstm / gru and torch's fused backward (weights transposed, the
    forget bias folded into the input bias, time flipped for reverse) against the std
    cell's scan and autodiff's reverse scan, in float64. NumPy runs the decompositions
    inlined (*_grad's: the decomposition's VJP, optimised), another code path to the
    same numbers; ONNX too in float64 (its LSTM/GRU kernels are float32-only: see
    tests/test_onnx_rnn.py) but for lstm_grad, whose own BPTT lowering runs here. 1e-10 of the largest magnitude: only summation order
    differs (float64 ulp 1e-16, grown by T = 5 steps of matmuls); a swapped gate or a
    missed bias is O(1)."""
    g_ref, r_ref, feeds = _build_rnn(op, True, reverse, forget_bias)
    ref = _run("numpy", g_ref, r_ref, feeds, np.float64)
    g, r, _ = _build_rnn(op, False, reverse, forget_bias)
    assert any(g.node(n).op == op + "_grad" for n in g.topo_order(list(r.values())))
    got = _run(backend, g, r, feeds, np.float64)
    assert set(got) == set(ref) and len(ref) == 9 - (op == "gru")
    for k in ref:
        scale = max(1.0, float(np.max(np.abs(ref[k]))))
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * scale, err_msg=k)


def test_std_lstm_is_the_fused_op_and_other_cells_stay_scans():
    """The std LSTM layer elaborates to one `lstm` node (its scan is dead code), a
    GRUCell through `rnn_scan` to one `gru`; the std GRU layer (a plain scan: torch's
    CPU GRU is no faster) and any other cell through `rnn_scan` stay scans."""
    def ops(body):
        m = api.load(text="model M() { input x: f32[B, T, 3]\n z = zeros([B, 4])\n" + body + " }")
        g = m.graph
        return {g.node(n).op for n in g.topo_order(list(g.outputs.values()))}
    got = ops("ys, _ = x |> LSTM(4)\n output y = ys")
    assert "lstm" in got and "scan" not in got
    got = ops("_, ys = rnn_scan(GRUCell(4), x, z)\n output y = ys")
    assert "gru" in got and "scan" not in got
    got = ops("ys, _ = x |> GRU(4)\n output y = ys")
    assert "scan" in got and "gru" not in got
    got = ops("_, ys = rnn_scan(RNNCell(4), x, z)\n output y = ys")
    assert "scan" in got and not {"lstm", "gru"} & got


@pytest.mark.parametrize("op", ["lstm", "gru"])
def test_rnn_vjp_without_its_forward_replays_it(op):
    """A program of the cotangents alone lowers no forward to take a tape from: the VJP
    replays the fused forward itself; same numbers as the decomposition (1e-10, as above)."""
    import backends.torch as bt
    g_ref, r_ref, feeds = _build_rnn(op, True, True, 1.0 if op == "lstm" else 0.0)
    g, r, _ = _build_rnn(op, False, True, 1.0 if op == "lstm" else 0.0)
    grads = {k: v for k, v in r.items() if k.startswith("d_")}
    src = bt.lower(g, grads).source
    assert f"{op}_seq_vjp(" in src and "_taped(" not in src.split("def forward")[-1]
    ref = _run("numpy", g_ref, {k: r_ref[k] for k in grads}, feeds, np.float64)
    got = _run("torch", g, grads, feeds, np.float64)
    for k in ref:
        scale = max(1.0, float(np.max(np.abs(ref[k]))))
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * scale, err_msg=k)


def test_rnn_ops_run_under_torch_compile():
    """`dlc train --compile`: dynamo can trace neither the CPU LSTM kernel nor
    autograd.grad, so the helpers run eagerly there (a graph break): the compiled
    program gives the eager program's numbers exactly."""
    import torch
    import backends.torch as bt
    g, r, feeds = _build_rnn("lstm", False, True, 1.0)
    module = bt.lower(g, r, dtype="f64")
    f = {k: torch.as_tensor(np.asarray(v)) for k, v in feeds.items()}
    with torch.no_grad():
        want = module(f)
        got = bt.compile_program(module)(f)
    for k in want:
        assert torch.equal(want[k], got[k]), k


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_second_order_through_the_fused_lstm_vjp(backend):
    """d/dθ |∂s/∂x|² with s = Σ ys²: through `lstm_grad` (its VJP: the decomposition's,
    differentiated) and through the cotangent of ys, which depends on θ too (a VJP
    rule's arguments are independent leaves, else that path counts twice). Reference:
    central finite differences of the loss in float64 (step 1e-6: error ~1e-10 against
    entries ~1e-2; 1e-7 bound)."""
    m = api.load(text="model M() {\n input x: f32[B, T, 3]\n ys, _ = x |> LSTM(4, forget_bias = 1.0)\n"
                      " gx = grad(sum(ys * ys), x)\n loss L = sum(gx * gx)\n}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3))
    p = {k: np.asarray(v, np.float64) for k, v in m.init_params().items()}
    k = "lstm0.cell.b"
    got = m.gradients("L", {"x": x}, p, backend=backend, dtype="f64")[k]
    fd = np.zeros(4)
    for i in range(4):
        vals = []
        for e in (1e-6, -1e-6):
            b = p[k].copy()
            b[i] += e
            vals.append(float(m.run({"x": x}, {**p, k: b}, dtype="f64")["L"]))
        fd[i] = (vals[0] - vals[1]) / 2e-6
    np.testing.assert_allclose(got[:4], fd, rtol=0, atol=1e-7)


SECOND_ORDER = {
    # d/dθ |∂s/∂x|²: through the fused VJP node (its VJP: its decomposition's, by autodiff)
    "layer_norm_grad": ("model M() {\n input x: f32[B, 6]\n y = x |> LayerNorm()\n"
                        " gx = grad(sum(y * y * y), x)\n loss L = sum(gx * gx)\n}", (2, 6)),
    "attention_grad": ("model M() {\n input x: f32[B, T, 4]\n param w: [4, 4] ~ normal(0.0, 0.5)\n"
                       " o = dot_product_attention(x @ w, x, x)\n"
                       " gx = grad(sum(o * o * o), x)\n loss L = sum(gx * gx)\n}", (2, 3, 4)),
}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("op", sorted(SECOND_ORDER))
def test_second_order_through_the_fused_vjps(op, backend):
    """Every parameter's gradient of a loss built from a first gradient, against central
    finite differences of the loss in float64 (step 1e-6; 1e-6 bound on entries of
    order 1: the difference quotient's error is ~1e-9)."""
    text, shape = SECOND_ORDER[op]
    m = api.load(text=text)
    g, res = m.gradient_results("L")
    assert op in {g.node(n).op for n in g.topo_order(list(res.values()))}
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    p = {k: np.asarray(v, np.float64) + 0.3 * rng.normal(size=np.shape(v))
         for k, v in m.init_params().items()}
    got = m.gradients("L", {"x": x}, p, backend=backend, dtype="f64")
    for k in p:
        flat = p[k].reshape(-1)
        for i in range(flat.size):
            vals = []
            for e in (1e-6, -1e-6):
                b = flat.copy()
                b[i] += e
                vals.append(float(m.run({"x": x}, {**p, k: b.reshape(p[k].shape)}, dtype="f64")["L"]))
            fd = (vals[0] - vals[1]) / 2e-6
            assert abs(got[k].reshape(-1)[i] - fd) <= 1e-6 * max(1.0, abs(fd)), (k, i, got[k], fd)


def test_layer_norm_vjp_without_its_forward_recomputes_the_statistics():
    # a program of the gradients alone lowers no layer_norm: its fused backward then
    # computes mean and 1/σ itself; same numbers as the decomposition's VJP (f64)
    import backends.torch as bt
    g_ref, r_ref, feeds = _build("layer_norm", decomposed=True)
    ref = _run("numpy", g_ref, r_ref, feeds, np.float64)
    g, r, _ = _build("layer_norm", decomposed=False)
    grads = {k: v for k, v in r.items() if k.startswith("d_")}
    assert "native_layer_norm(" in bt.lower(g, grads).source
    got = _run("torch", g, grads, feeds, np.float64)
    for k in grads:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * max(1.0, np.abs(ref[k]).max()))


@pytest.mark.parametrize("shapes", [((2, 3, 5, 8), (2, 1, 6, 8), (2, 1, 6, 4)),  # k, v shared by heads
                                    ((5, 8), (6, 8), (6, 4))])                    # no batch axes
def test_attention_vjp_on_torch_sums_broadcast_operands(shapes):
    # torch's fused backward runs on the forward's tape; broadcast operands get their
    # cotangents summed back to their own shapes, as the decomposition's VJP does (f64)
    import backends.torch as bt

    def build(decomposed):
        g = Graph("attn_bcast")
        q, k, v = (_inp(g, n, "f32", s) for n, s in zip("qkv", shapes))
        keep = g.const(True, "bool", ())
        prim = get_primitive("attention")
        out = prim.decomposition(g, [q, k, v, keep], {}) if decomposed else g.add("attention", [q, k, v, keep], {})
        ct = _inp(g, "ct_out", "f32", g.type(out).shape)
        res = {"value": out}
        res.update({f"d_{n}": c for n, c in zip("qkv", vjp(g, [out], [ct], [q, k, v]))})
        return g, res

    rng = np.random.default_rng(3)
    feeds = {n: rng.normal(size=s) for n, s in zip("qkv", shapes)}
    g, r = build(True)
    feeds["ct_out"] = rng.normal(size=g.type(r["value"]).shape)
    ref = _run("numpy", g, r, feeds, np.float64)
    g, r = build(False)
    assert "attention_taped(" in bt.lower(g, r).source
    got = _run("torch", g, r, feeds, np.float64)
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * max(1.0, np.abs(ref[k]).max()), err_msg=k)
    # the gradients alone: the forward is replayed under autograd
    grads = {k: v for k, v in r.items() if k.startswith("d_")}
    assert "attention_vjp(" in bt.lower(g, grads).source
    got = _run("torch", g, grads, feeds, np.float64)
    for k in grads:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * max(1.0, np.abs(ref[k]).max()), err_msg=k)
