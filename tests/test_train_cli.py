"""`dlc train` and the train-step ONNX export, end to end through `compiler.commands.cli.main`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.training import checkpoint
from compiler.commands.cli import main
from compiler.training.spec import model_for, parse_train

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "specs" / "mlp.dl")


def run_json(capsys, argv) -> tuple[int, dict]:
    code = main(argv + ["--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def test_train_mlp_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, payload = run_json(capsys, ["train", MLP, "--epochs", "2", "--out", str(out)])
    assert code == 0, payload
    assert payload["epochs"] == 2 and payload["test"]["acc"] > 0.8
    assert set(payload["train"]) == {"ce", "acc"} and payload["run_dir"] == str(out)
    files = {p.name for p in out.iterdir()}
    assert {"checkpoint.safetensors", "metrics.csv", "curves.png", "model.onnx"} <= files
    tensors, meta = checkpoint.load(out / "checkpoint.safetensors")
    assert meta["position"]["epoch"] == 2 and "train/opt.dense0.W.m" in tensors
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,time,") and "val_acc" in lines[0] and len(lines) == 4
    assert lines[-1].startswith("test,") and "test_acc" in lines[0]  # the final test row
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import onnxruntime as ort
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    feeds = {i.name: x if i.name == "x" else np.zeros(5, np.int64) for i in sess.get_inputs()}
    probs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))["probs"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_progress_and_summary(tmp_path, capsys):
    code = main(["train", MLP, "--epochs", "1", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0
    # stderr is not a terminal here: plain line-per-epoch logging, no control characters
    assert "\r" not in captured.err and "\x1b" not in captured.err
    assert "epoch 1  step 23/23  train_ce " in captured.err and "steps/s" in captured.err
    assert captured.out.startswith("trained MLP on digits: 1 epoch (23 steps)")
    assert "  test   ce " in captured.out and "model.onnx" in captured.out


def test_located_spec_error_through_the_cli(tmp_path, capsys):
    spec = tmp_path / "bad.dl"
    text = Path(MLP).read_text().replace("batch 64", "bacth 64")
    spec.write_text(text)
    line = text.splitlines().index("  bacth 64") + 1
    code = main(["train", str(spec), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"bad.dl:{line}:3: error: unknown option `bacth` in train block" in err
    assert f"{line:>4} |   bacth 64\n         ^^^^^\n" in err
    assert "hint: did you mean `batch`?" in err


def test_non_finite_exit_code_and_json(tmp_path, capsys):
    spec = tmp_path / "huge.dl"
    spec.write_text((ROOT / "specs" / "linear_regression.dl").read_text()
                    .replace("sgd(lr = 0.05)", "sgd(lr = 1e30)"))
    code, payload = run_json(capsys, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert code == 1 and payload["error"] == "NonFinite" and payload["step"] <= 2


def test_resume_without_a_checkpoint(tmp_path, capsys):
    code, payload = run_json(capsys, ["train", MLP, "--resume", "--out", str(tmp_path / "none")])
    assert code == 1 and payload["error"] == "CheckpointError"
    assert "no checkpoint at" in payload["message"]


@pytest.fixture(scope="module")
def step_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("step") / "step.onnx"
    assert main(["compile", MLP, "--to", "onnx", "--train-step", "-o", str(path)]) == 0
    return path


def test_onnx_train_step_lowers_the_loss(step_onnx):
    """20 steps of the exported train step in onnxruntime, from dlc's initial values."""
    import onnxruntime as ort
    m = api.load(MLP)
    state = model_for(m, parse_train(m)).init_params(0)
    sess = ort.InferenceSession(str(step_onnx), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for i in sess.get_inputs():
        if i.name.startswith("opt."):
            state[i.name] = np.zeros([int(d) for d in i.shape], np.float32)
    from compiler.training import datasets
    data = datasets.load("digits")
    x, y = data.x[:128], data.y[:128]
    losses = []
    for t in range(20):
        feeds = {"x": x, "y": y, "step": np.asarray(t, np.float32), **state}
        out = dict(zip(names, sess.run(names, feeds)))
        state.update({k[4:]: v for k, v in out.items() if k.startswith("new:")})
        losses.append(float(out["loss"]))
    assert losses[-1] < 0.5 * losses[0]


def test_standalone_train_step_script(step_onnx):
    script = ROOT / "docs" / "train_step_onnx.py"
    res = subprocess.run([sys.executable, str(script), str(step_onnx), "--steps", "80"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "the loss fell" in res.stdout
