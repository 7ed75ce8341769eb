"""The deploy path (issue 15): inference artifacts without labels, trained weights in
every backend, the train block checked at `dlc check`, and the rough edges."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from compiler import api
from compiler.commands.cli import main
from compiler.training import checkpoint

SPEC = textwrap.dedent("""
    model Tiny(hidden = 4, classes = 3) {
      input x: f32[B, 2]
      input y: i64[B]
      logits = x |> Dense(hidden, relu) |> Dense(classes)
      output probs = softmax(logits)
      loss ce = cross_entropy(logits, y)
      metric acc = accuracy(logits, y)
    }
    train Tiny(hidden = 16) on blobs(n = 120) {
      split 0.5 0.25 0.25
      batch 16
      steps 12
      optimizer adam(lr = 1e-2)
    }
""")


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.dl"
    p.write_text(SPEC)
    return p


def _json(capsys, argv):
    capsys.readouterr()
    code = main(argv + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def test_onnx_inference_needs_no_labels(spec, tmp_path):
    import onnxruntime as ort
    assert main(["compile", str(spec), "--to", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    s = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [i.name for i in s.get_inputs()] == ["x"]
    assert [o.name for o in s.get_outputs()] == ["probs"]
    (probs,) = s.run(["probs"], {"x": np.zeros((5, 2), np.float32)})
    assert probs.shape == (5, 3)
    assert main(["compile", str(spec), "--to", "onnx", "-o", str(tmp_path / "w.onnx"),
                 "--with-losses"]) == 0
    s = ort.InferenceSession(str(tmp_path / "w.onnx"))
    assert {i.name for i in s.get_inputs()} == {"x", "y"}


def test_compile_uses_the_train_block_hparams(spec, tmp_path, capsys):
    code, info = _json(capsys, ["compile", str(spec), "--to", "numpy", "-o", str(tmp_path / "m.py")])
    assert code == 0 and info["inputs"] == ["x"]
    src = (tmp_path / "m.py").read_text()
    assert "[B, 16]" in src and 'feeds["y"]' not in src
    code, _ = _json(capsys, ["compile", str(spec), "--to", "numpy", "-o", str(tmp_path / "n.py"),
                             "--set", "hidden=8"])
    assert "[B, 8]" in (tmp_path / "n.py").read_text()   # --set wins over the train block


def test_deploy_round_trip(spec, tmp_path, capsys):
    """Train, export with the checkpoint, and get the run's test accuracy back from
    onnxruntime, the generated torch module and the generated NumPy module."""
    import importlib.util

    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file
    run = tmp_path / "run"
    code, res = _json(capsys, ["train", str(spec), "--out", str(run), "--quiet"])
    assert code == 0
    test_acc = res["test"]["acc"]
    params, meta = checkpoint.load_params(run)
    assert meta["hparams"] == {"hidden": 16} and len(meta["spec"]["hash"]) == 16
    assert not any(k.startswith("opt.") for k in params)
    # the test part, as `dlc train` split it
    from compiler.training.spec import parse_train, model_for
    from compiler.training.step import _split
    m = api.load(spec, train_block=True)
    cfg = parse_train(m)
    test = _split(cfg, model_for(m, cfg))[2]
    x, y = test.fields["x"], test.fields["y"]

    for backend, ext in (("onnx", ".onnx"), ("torch", ".py"), ("numpy", ".py")):
        out = tmp_path / f"m_{backend}{ext}"
        assert main(["compile", str(spec), "--to", backend, "-o", str(out),
                     "--checkpoint", str(run)]) == 0
        if backend == "onnx":
            probs = ort.InferenceSession(str(out)).run(["probs"], {"x": x})[0]
        else:
            spec_ = importlib.util.spec_from_file_location(f"gen_{backend}", out)
            mod = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(mod)
            if backend == "torch":
                net = mod.Model()
                net.load_state_dict(load_file(str(out.with_suffix(".safetensors"))), strict=True)
                with torch.no_grad():
                    probs = net({"x": torch.as_tensor(x)})["probs"].numpy()
            else:
                w = dict(np.load(out.with_suffix(".npz")))
                probs = mod.run({**w, "x": x})["probs"]
        acc = float(np.mean(np.argmax(probs, axis=1) == y))
        # the same weights on the same samples: argmax agrees exactly (ties aside)
        assert acc == pytest.approx(test_acc, abs=1e-6), backend


def test_check_validates_the_train_block(tmp_path, capsys):
    bad = {"adamm(lr = 1e-3)": "optimizer", }
    for text, frag in [("optimizer adamm(lr = 1e-3)", "adamm"),
                       ("schedule cosinee", "cosinee")]:
        p = tmp_path / "b.dl"
        p.write_text(SPEC.replace("optimizer adam(lr = 1e-2)", text))
        code, out = _json(capsys, ["check", str(p)])
        assert code == 1 and frag in out["message"], out
    for data, frag in [('"nonexistent.npz"', "nonexistent"), ("blobs(nn = 3)", "nn"),
                       ("digits", "field `x`")]:
        p = tmp_path / "b.dl"
        p.write_text(SPEC.replace("blobs(n = 120)", data))
        code, out = _json(capsys, ["check", str(p)])
        assert code == 1, out
        if frag:
            assert frag in out["message"]
    del bad


def test_rough_edges(spec, tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.dl")]) == 2
    assert main(["--version"]) == 0
    p = tmp_path / "n.dl"
    p.write_text(SPEC.replace("softmax(logits)", "softmax(logitz)"))
    code, out = _json(capsys, ["check", str(p)])
    assert out["error"] == "NameError"
    m = api.load(spec)
    with pytest.raises(ValueError, match="input `x`"):
        m.run({"x": np.zeros((3, 5), np.float32), "y": np.zeros(3, np.int64)})
    for backend in ("numpy", "onnx"):  # (torch: only where CUDA is missing)
        assert main(["train", str(spec), "--backend", backend, "--device", "cuda",
                     "--out", str(tmp_path / "c")]) == 2


def test_out_is_not_overwritten_and_seed_0_is_honoured(spec, tmp_path, capsys):
    s = SPEC.replace("steps 12", "steps 2\n  seed 5")
    spec.write_text(s)
    run = tmp_path / "r"
    code, res = _json(capsys, ["train", str(spec), "--out", str(run), "--seed", "0"])
    assert code == 0 and res["seed"] == 0
    assert main(["train", str(spec), "--out", str(run), "--quiet"]) == 2
    assert main(["train", str(spec), "--out", str(run), "--quiet", "--force"]) == 0


def test_resume_keeps_the_schedule_horizon(spec, tmp_path, capsys):
    spec.write_text(SPEC.replace("steps 12", "steps 4\n  schedule cosine"))
    run = tmp_path / "r"
    assert main(["train", str(spec), "--out", str(run), "--quiet"]) == 0
    assert main(["train", str(spec), "--out", str(run), "--quiet", "--resume", "--steps", "8"]) == 0
    _, meta = checkpoint.load(run / "checkpoint.safetensors")
    assert meta["horizon"] == 4 and meta["total_rounds"] == 8


def test_readme_listing_is_specs_mlp():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("```\n", 2)[1]
    assert block == (root / "specs" / "mlp.dl").read_text().rstrip("\n") + "\n"


def test_onnx_metadata_props(spec, tmp_path):
    import onnx
    m = api.load(spec, train_block=True)
    model = m.export_onnx(tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["dlc.spec_hash"] == m.spec_hash() and json.loads(props["dlc.hparams"]) == {"hidden": 16}
    assert props["dlc.version"] == api.version() and model.producer_name == "dlc"


def test_equiv_on_a_model_without_parameters(tmp_path, capsys):
    p = tmp_path / "np.dl"
    p.write_text("model P() {\n  input x: f32[B, 3]\n  loss l = mean(x * x)\n}\n")
    code, out = _json(capsys, ["equiv", str(p), "--steps", "0"])
    assert code == 0, out


def test_gradcheck_feeds_a_batch_of_the_train_block_data(spec, capsys):
    from compiler.commands.deploy import data_batch
    from compiler.commands.gradcheck import gradcheck
    m = api.load(spec)
    batch = data_batch(m)
    assert batch["x"].shape == (4, 2) and batch["y"].dtype.kind == "i"
    checks = gradcheck(m, feeds=batch, max_entries=8)
    assert checks and all(c.ok for c in checks)
    code, out = _json(capsys, ["gradcheck", str(spec), "--dims", "B=2"])
    assert code == 0, out
