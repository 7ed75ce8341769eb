"""The PyTorch backend on hand-built graphs: module layout, autograd, scan, compile."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import backends.torch as bt
from tests.test_backend_numpy import (cumsum_graph, mlp_graph, mlp_reference, mlp_values,
                                      nested_reference, nested_scan_graph, rnn_graph,
                                      rnn_reference, rnn_values)

HELD = ("dense0.W", "dense0.b", "encoder.block.0.W", "norm.scale")


def _mlp_module(dtype="f64", **kw):
    g, res = mlp_graph(dtype)
    m = bt.lower(g, res, dtype=dtype, **kw)
    v = mlp_values(4)
    m.load_numpy({k: v[k] for k in HELD})
    return m, v


def _np(t):
    return t.detach().cpu().numpy()


def test_mlp_values():
    m, v = _mlp_module()
    out = m({"x": v["x"], "t": v["t"]})
    y, loss = mlp_reference(v)
    np.testing.assert_allclose(_np(out["y"]), y, rtol=1e-12)
    np.testing.assert_allclose(_np(out["loss"]), loss, rtol=1e-12)
    out2 = m({"x": v["x"][:2], "t": v["t"][:2]})  # another batch size
    np.testing.assert_allclose(_np(out2["y"]), y[:2], rtol=1e-12)


def test_names_params_and_buffers():
    m, v = _mlp_module("f32")
    assert [k for k, _ in m.named_parameters()] == ["dense0.W", "dense0.b", "encoder.block.0.W"]
    assert [k for k, _ in m.named_buffers()] == ["norm.scale"]
    assert list(m.state_dict()) == list(HELD)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert m.feeds == ("x", "t")
    assert "def forward(self, feeds):" in m.source and "dense0_W" in m.source
    with pytest.raises(KeyError):
        m.load_numpy({"nope": np.zeros(3)})
    with pytest.raises(ValueError):
        m.load_numpy({"dense0.b": np.zeros(3)})


def test_state_dict_round_trip():
    m, v = _mlp_module()
    g, res = mlp_graph("f64")
    m2 = bt.lower(g, res, dtype="f64")
    m2.load_state_dict(m.state_dict())
    feeds = {"x": v["x"], "t": v["t"]}
    np.testing.assert_array_equal(_np(m(feeds)["y"]), _np(m2(feeds)["y"]))
    np.testing.assert_array_equal(m2.numpy_state()["dense0.W"], v["dense0.W"])


def test_autograd_matches_torch_reference():
    m, v = _mlp_module()
    x, t = torch.tensor(v["x"]), torch.tensor(v["t"])
    m({"x": x, "t": t})["loss"].backward()
    ref = {k: torch.tensor(v[k], requires_grad=True) for k in HELD[:3]}
    h = torch.tanh(x @ ref["dense0.W"] + ref["dense0.b"])
    y = (h @ ref["encoder.block.0.W"]) * torch.tensor(v["norm.scale"])
    ((y - t) ** 2).mean().backward()
    for name, p in m.named_parameters():
        np.testing.assert_allclose(_np(p.grad), _np(ref[name].grad), rtol=1e-12, atol=1e-14)


def test_feed_overrides_a_param():
    m, v = _mlp_module()
    w = np.zeros((8, 3))
    out = m({"x": v["x"], "t": v["t"], "encoder.block.0.W": w})
    np.testing.assert_array_equal(_np(out["y"]), 0.0)


def test_to_device_and_dtype():
    m, v = _mlp_module()
    m = m.to("cpu")
    assert m(dict(x=v["x"], t=v["t"]))["y"].device.type == "cpu"
    if torch.cuda.is_available():
        mc = m.to("cuda")
        out = mc({"x": v["x"], "t": v["t"]})
        assert out["y"].device.type == "cuda"
        np.testing.assert_allclose(_np(out["y"]), mlp_reference(v)[0], rtol=1e-10)


def test_lower_on_a_device():
    g, res = mlp_graph("f32")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = bt.lower(g, res, device=dev)
    assert all(p.device.type == dev for p in m.parameters())


@pytest.mark.parametrize("axis,reverse", [(0, False), (1, True)])
def test_scan_cumsum(axis, reverse):
    g, res = cumsum_graph(axis, reverse)
    m = bt.lower(g, res, dtype="f64")
    xs = np.random.default_rng(1).standard_normal((6, 3) if axis == 0 else (3, 6))
    out = m({"xs": xs})
    t = torch.tensor(xs)
    want = torch.flip(torch.cumsum(torch.flip(t, (axis,)), axis), (axis,)) if reverse \
        else torch.cumsum(t, axis)
    np.testing.assert_allclose(_np(out["ys"]), _np(want), rtol=1e-12)
    np.testing.assert_allclose(_np(out["final"]), xs.sum(axis=axis), rtol=1e-12)


def test_scan_rnn_values_and_bptt():
    g, res = rnn_graph()
    m = bt.lower(g, res, dtype="f64")
    v = rnn_values()
    m.load_numpy({k: v[k] for k in ("rnn.W", "rnn.U", "rnn.b")})
    out = m({"xs": v["xs"], "h0": v["h0"]})
    hT, hs, loss = rnn_reference(v)
    np.testing.assert_allclose(_np(out["hs"]), hs, rtol=1e-12)
    out["loss"].backward()
    # torch autograd through the generated loop = autograd through a plain loop
    W, U, b = (torch.tensor(v[k], requires_grad=True) for k in ("rnn.W", "rnn.U", "rnn.b"))
    h, hs_ = torch.tensor(v["h0"]), []
    for x in torch.tensor(v["xs"]):
        h = torch.tanh(h @ W + x @ U + b)
        hs_.append(h)
    (torch.stack(hs_) ** 2).sum().backward()
    got = dict(m.named_parameters())
    for name, p in zip(("rnn.W", "rnn.U", "rnn.b"), (W, U, b)):
        np.testing.assert_allclose(_np(got[name].grad), _np(p.grad), rtol=1e-10)


def test_nested_scan():
    g, res = nested_scan_graph()
    m = bt.lower(g, res, dtype="f64")
    X = np.random.default_rng(2).standard_normal((4, 5))
    out = m({"X": X, "k": np.array(0.5)})
    acc, sums = nested_reference(X, 0.5)
    np.testing.assert_allclose(_np(out["acc"]), acc, rtol=1e-12)
    np.testing.assert_allclose(_np(out["sums"]), sums, rtol=1e-12)


def _compile_available() -> str | None:
    if not hasattr(torch, "compile"):
        return "torch.compile is missing"
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler for inductor"
    return None


@pytest.mark.skipif(_compile_available() is not None, reason=str(_compile_available()))
def test_torch_compile():
    torch._dynamo.reset()
    m, v = _mlp_module("f32")
    compiled = torch.compile(m)
    feeds = {"x": torch.tensor(v["x"], dtype=torch.float32),
             "t": torch.tensor(v["t"], dtype=torch.float32)}
    want = m(feeds)
    got = compiled(feeds)
    np.testing.assert_allclose(_np(got["loss"]), _np(want["loss"]), rtol=1e-5)
    got["loss"].backward()
    assert m.get_parameter("dense0.W").grad is not None


def _weighted_sum(g, nodes, dtype="f64"):
    """sum_i sum(nodes[i] * w_i) with inputs w_i: a scalar touching every result."""
    from tests.test_backend_numpy import source
    total = None
    for i, n in enumerate(nodes):
        w = source(g, "input", f"w{i}", dtype, g.type(n).shape)
        s = g.op("sum", g.op("mul", n, w), axis=None, keepdims=False)
        total = s if total is None else g.op("add", total, s)
    return total


def v_shape(g, n, feeds):
    """The concrete shape of node n for these feeds (symbols read off dim_sources)."""
    import backends.numpy as bnp
    return bnp.lower(g, {"n": n}, dtype="f64")(feeds)["n"].shape


@pytest.mark.parametrize("which", ["rnn", "cumsum_reverse_axis1", "nested"])
def test_scan_gradients_agree_with_torch_autograd(which):
    """dlc's symbolic scan VJP (a reverse scan), run on both backends, against torch
    autograd through the generated forward loop."""
    from compiler.transform.autodiff import grad
    rng = np.random.default_rng(3)
    if which == "rnn":
        g, res = rnn_graph()
        v = rnn_values()
    elif which == "nested":
        g, res = nested_scan_graph()
        v = {"X": rng.standard_normal((3, 4)), "k": np.array(0.7)}
    else:
        g, res = cumsum_graph(axis=1, reverse=True)
        v = {"xs": rng.standard_normal((3, 5))}
    outs = list(res.values())
    loss = _weighted_sum(g, outs)
    for i, n in enumerate(outs):
        v[f"w{i}"] = rng.standard_normal(tuple(v_shape(g, n, v)))
    named = {**g.by_name("input"), **g.by_name("param")}
    wrt = {k: n for k, n in named.items() if not k.startswith("w")}
    grads = grad(g, loss, list(wrt.values()))
    gres = {f"d_{k}": d for k, d in zip(wrt, grads)}

    import backends.numpy as bnp
    dlc_np = bnp.lower(g, gres, dtype="f64")(v)
    dlc_torch = bt.lower(g, gres, dtype="f64")
    dlc_torch.load_numpy({k: v[k] for k in g.by_name("param")})
    dlc_torch_out = dlc_torch({k: x for k, x in v.items() if k not in g.by_name("param")})

    fwd = bt.lower(g, {"loss": loss}, dtype="f64")
    fwd.load_numpy({k: v[k] for k in g.by_name("param")})
    leaves = {k: torch.tensor(v[k], requires_grad=True) for k in g.by_name("input")}
    fwd(leaves)["loss"].backward()
    params = dict(fwd.named_parameters())
    for k in wrt:
        want = _np(params[k].grad if k in params else leaves[k].grad)
        np.testing.assert_allclose(dlc_np[f"d_{k}"], want, rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(_np(dlc_torch_out[f"d_{k}"]), want, rtol=1e-10, atol=1e-12,
                                   err_msg=k)



def test_standalone_source_defines_a_model(tmp_path):
    """`dlc compile --to torch` writes m.source: a module with a Model class."""
    import importlib.util
    m, v = _mlp_module()
    path = tmp_path / "mlp_torch.py"
    path.write_text(m.source)
    spec = importlib.util.spec_from_file_location("mlp_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Model()
    assert list(model.state_dict()) == list(HELD)
    model.load_state_dict(m.state_dict())
    feeds = {"x": v["x"], "t": v["t"]}
    np.testing.assert_array_equal(_np(model(feeds)["loss"]), _np(m(feeds)["loss"]))
