"""Bad inputs from the issue-18 fuzzer: each is a located error (exit 1) or a usage
error (exit 2), never a traceback, a MemoryError or a hang."""
from __future__ import annotations

import os
import re

import pytest

from compiler.commands.cli import main

HEADER = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$", re.M)
LR = os.path.join(os.path.dirname(__file__), "..", "specs", "logistic_regression.dl")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err


def spec(tmp_path, body, train=""):
    p = tmp_path / "s.dl"
    p.write_text("model M() {\n" + body + "\n}\n" + train)
    return p


def located(err):
    m = HEADER.match(err.split("\n")[0])
    assert m, err[:400]
    return int(m["line"]), m["msg"]


@pytest.mark.parametrize("body, line, words", [
    ("  input x: f32[B, 4]\n  param w: [100000000, 100000000] ~ normal(1.0)\n  output y = x", 3,
     "DLC_MAX_TENSOR_ELEMENTS"),
    ("  input x: f32[B, 4]\n  param w: [9223372036854775807] ~ normal(1.0)\n  output y = x", 3,
     "DLC_MAX_TENSOR_ELEMENTS"),
    ("  input x: f32[B, 4]\n  output y = x |> repeat(100000000, Dense(4))", 3, "DLC_MAX_REPEAT"),
    ("  input x: f32[B]\n  m = x > 0\n  output y = m + 1", 4, "bool"),
    ("  input x: f32[B]\n  m = x > 0\n  output y = m * 3", 4, "bool"),
    ("  input x: f32[B]\n  m = x > 0\n  output y = m - 1", 4, "bool"),
    ("  input x: f32[B]\n  m = x > 0\n  output y = m + m", 4, "bool"),
    ("  input x: f32[B, 3]\n  output y = sum(x, axis = 1, keepdims = \"yes\")", 3, "keepdims"),
    ("  input x: f32[B, 3]\n  output y = x * 1e999", 3, "too large"),
])
def test_bad_specs_are_located(tmp_path, capsys, body, line, words):
    rc, err = run(capsys, "check", spec(tmp_path, body))
    assert rc == 1
    got_line, msg = located(err)
    assert got_line == line and words in msg


def test_param_bytes_limit_is_configurable(tmp_path, capsys, monkeypatch):
    p = spec(tmp_path, "  input x: f32[B, 4]\n  param w: [1000, 1000] ~ zeros\n  output y = x")
    assert run(capsys, "check", p)[0] == 0
    monkeypatch.setenv("DLC_MAX_PARAM_BYTES", "1000000")
    rc, err = run(capsys, "check", p)
    assert rc == 1 and "DLC_MAX_PARAM_BYTES" in located(err)[1]


def test_dataset_size_limit(tmp_path, capsys):
    p = spec(tmp_path, "  input x: f32[B, 2]\n  input y: i64[B]\n  param w: [2] ~ zeros\n"
             "  loss L = mean(x @ w)",
             "train M on gaussians(n = 1e99) {\n  batch 4; steps 1\n  optimizer sgd(lr = 0.1)\n}\n")
    rc, err = run(capsys, "train", p, "--out", tmp_path / "run", "--quiet")
    assert rc == 1 and located(err)[0] == 7 and "DLC_MAX_DATASET_ROWS" in err


def test_divergence_in_the_update_points_at_the_optimizer(tmp_path, capsys):
    p = spec(tmp_path, "  input x: f32[B, 2]\n  input y: i64[B]\n  param w: [2] ~ zeros\n"
             "  param q: [2] ~ zeros\n  loss L = mean(x @ w) + sum(relu(q))",
             "train M on gaussians(n = 64) {\n  batch 4; steps 2\n  optimizer adam(lr = 0.1, eps = 0)\n}\n")
    rc, err = run(capsys, "train", p, "--out", tmp_path / "run", "--quiet")
    assert rc == 1
    line, msg = located(err)
    assert line == 10 and "diverged" in msg and "adam" in msg


@pytest.mark.parametrize("argv", [
    ["gradcheck", LR, "--max-entries", "-5"],
    ["train", LR, "--steps", "0"],
    ["train", LR, "--steps", "-3"],
    ["train", LR, "--epochs", "0"],
    ["equiv", LR, "--steps", "-1"],
])
def test_non_positive_counts_are_usage_errors(capsys, argv):
    assert run(capsys, *argv)[0] == 2


def _outputs(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    return ["/proc/nope/x.py", str(tmp_path), "", "/dev/full", str(afile / "x.py"),
            str(tmp_path / ("a" * 5000))]


def test_bad_output_paths(tmp_path, capsys):
    for o in _outputs(tmp_path):
        for to in ("numpy", "onnx"):
            rc, err = run(capsys, "compile", LR, "--to", to, "-o", o)
            assert rc == 2, (o[:80], to, err)
            assert err.strip() and len(err) < 1000


def test_bad_run_directories(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (str(afile), "/dev/null", "", "/proc/nope/run"):
        rc, err = run(capsys, "train", LR, "--out", out, "--steps", "1", "--quiet")
        assert rc == 2, (out, err)
    assert afile.read_text() == "x"


def test_fifo_as_spec_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "spec.dl"
    os.mkfifo(fifo)
    assert run(capsys, "check", fifo)[0] == 2
    assert run(capsys, "check", tmp_path)[0] == 1  # a directory: the loader's located error


def _tamper(path, change_tensor=None, position=None):
    import json as _json

    from compiler.training import checkpoint
    tensors, meta = checkpoint.load(path)
    if change_tensor:
        tensors = change_tensor(dict(tensors))
    if position is not None:
        meta = dict(meta, position=position)
    meta.pop("format", None)
    checkpoint.save(path, tensors, meta)
    _json.dumps(meta)


@pytest.mark.parametrize("how", ["f64", "i64", "shape", "garbage", "negative", "unknown", "type"])
def test_inconsistent_checkpoints_are_clear_errors(tmp_path, capsys, how):
    import numpy as np
    out = tmp_path / "run"
    assert run(capsys, "train", LR, "--out", out, "--steps", "1", "--quiet")[0] == 0
    ck = next(p for p in out.iterdir() if p.name.startswith("checkpoint"))
    w = "train/w"  # the training state a resume reads (checkpoint namespaces)
    tensor = {"f64": lambda t: {**t, w: t[w].astype(np.float64)},
              "i64": lambda t: {**t, w: t[w].astype(np.int64)},
              "shape": lambda t: {**t, w: np.zeros(3, np.float32)}}.get(how)
    position = {"garbage": "garbage", "negative": {"epoch": -4},
                "unknown": {"epoch": 0, "wormhole": 1}, "type": {"batch": "three"}}.get(how)
    _tamper(ck, tensor, position)
    rc, err = run(capsys, "train", LR, "--out", out, "--steps", "2", "--quiet", "--resume")
    assert rc == 1
    assert "checkpoint" in err and len(err.strip().splitlines()) <= 3
