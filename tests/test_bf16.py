"""bf16 as a run dtype (issue 18): torch runs it, NumPy and onnxruntime refuse it clearly.

bf16 keeps 8 mantissa bits: one ulp near 1 is 2^-7 = 0.0078, so values are compared
to float64 torch at 1e-2 relative (about one ulp), except where f32 accumulation is
the point and the answer is exact. Results come back as float32 NumPy arrays (NumPy
has no bfloat16; widening bf16 to f32 is exact)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compiler import api
from compiler.commands.cli import main
from compiler.core.types import RunDtypeError

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "specs" / "mlp.dl")


def test_bf16_sum_accumulates_in_f32():
    # a bf16 running sum of ones stalls at 256 (256 + 1 rounds back to 256); with f32
    # accumulation and one rounding at the end, 4096 ones sum to exactly 4096
    m = api.load(text="model M() {\n  input x: f32[N]\n  output s = sum(x)\n  output a = mean(x)\n}\n")
    r = m.run({"x": np.ones(4096, np.float32)}, backend="torch", dtype="bf16")
    assert r["s"].dtype == np.float32 and float(r["s"]) == 4096.0
    assert float(r["a"]) == 1.0


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_bf16_cross_entropy_at_large_logits(scale):
    m = api.load(text="model M() {\n  input z: f32[B, 4]\n  input y: i64[B]\n"
                      "  loss ce = cross_entropy(z, y)\n}\n")
    # bf16-representable logits, so the reference sees the same inputs
    z = torch.tensor([[scale, scale - 64, scale + 32, -scale], [scale, scale, scale - 128, 0.0]],
                     dtype=torch.bfloat16).double()
    y = np.array([1, 2])
    zt = z.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(y))
    ref.backward()
    g = m.gradients("ce", {"z": z.numpy().astype(np.float32), "y": y}, {}, wrt=["z"],
                    backend="torch", dtype="bf16")
    np.testing.assert_allclose(float(g["ce"]), ref.item(), rtol=1e-2)
    np.testing.assert_allclose(g["z"], zt.grad.numpy(), atol=1e-2)


def _eager_mlp_grads(params, x, y, dt):
    p = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(x, dtype=dt)
    for i in range(3):
        h = h @ p[f"dense{i}.W"] + p[f"dense{i}.b"]
        h = torch.relu(h) if i < 2 else h
    loss = torch.nn.functional.cross_entropy(h, torch.tensor(y))
    loss.backward()
    return loss.item(), {k: v.grad.double().numpy() for k, v in p.items()}


def test_bf16_mlp_gradients_match_eager_torch_bf16():
    # Against f64 a bf16 MLP's weight gradients are 10-30% off at their largest entry
    # (ReLUs flip at rounded pre-activations); the fair reference is the same net
    # written in eager PyTorch in bf16. They agree to one bf16 ulp of each tensor's
    # scale (measured: bit-identical), and the loss to the f64 one within 1e-2.
    m = api.load(MLP)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    params = m.init_params()
    got = m.gradients("ce", {"x": x, "y": y}, params, backend="torch", dtype="bf16")
    ref_loss, ref = _eager_mlp_grads(params, x, y, torch.bfloat16)
    f64_loss, _ = _eager_mlp_grads(params, x, y, torch.float64)
    assert abs(float(got["ce"]) - ref_loss) <= 2 ** -7 * abs(ref_loss)
    np.testing.assert_allclose(float(got["ce"]), f64_loss, rtol=1e-2)
    for k, v in ref.items():
        assert got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], v, atol=2 ** -7 * np.abs(v).max(), err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "onnx"])
def test_bf16_refused_clearly_on_numpy_and_onnx(backend):
    m = api.load(MLP)
    with pytest.raises(RunDtypeError, match="bf16.*torch backend"):
        m.run({"x": np.zeros((2, 64), np.float32)}, backend=backend, dtype="bf16")


@pytest.mark.parametrize("to", ["numpy", "onnx"])
def test_cli_bf16_on_numpy_or_onnx_is_usage_error(tmp_path, capsys, to):
    rc = main(["compile", MLP, "--to", to, "--dtype", "bf16", "-o", str(tmp_path / f"m.{to}")])
    err = capsys.readouterr().err
    assert rc == 2 and "torch backend" in err and "Traceback" not in err


def test_cli_compiles_a_bf16_torch_module(tmp_path, capsys):
    out = tmp_path / "m.py"
    assert main(["compile", MLP, "--to", "torch", "--dtype", "bf16", "-o", str(out)]) == 0
    assert "torch.bfloat16" in out.read_text()
