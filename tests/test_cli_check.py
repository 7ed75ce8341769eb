"""`dlc check`: the summary table (every input, parameter, state and result with dtype
and shape), the parameter count, `--json`, `--model` and `--set`."""
from __future__ import annotations

import json
import re
from math import prod
from pathlib import Path

import pytest

from compiler.commands.cli import main

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.dl"))
ROW = re.compile(r"^  (input|param|state|output|loss|metric)\s+(\S+)\s+(\S+)\s+(\[.*\])$")


def check(capsys, *argv):
    rc = main(["check", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def table(out: str) -> list[tuple[str, str, str, list]]:
    rows = []
    for line in out.split("\n"):
        m = ROW.match(line)
        if m:
            dims = [d.strip() for d in m[4][1:-1].split(",") if d.strip()]
            rows.append((m[1], m[2], m[3], [int(d) if d.isdigit() else d for d in dims]))
    return rows


def param_count(out: str) -> int:
    (n,) = re.findall(r"^parameters: ([\d,]+)$", out, re.M)
    return int(n.replace(",", ""))


def model_block(text: str, name: str) -> str:
    """The text of `model NAME(...) { ... }`, found by matching braces."""
    m = re.search(rf"^model {name}\b", text, re.M)
    i = text.index("{", m.start())
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j + 1]
    raise AssertionError("unbalanced")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_summary_of_every_spec(path, capsys):
    rc, out, err = check(capsys, path)
    assert rc == 0, err
    header = out.split("\n")[0]
    model = re.match(r"model (\w+) \((.*)\)$", header)
    assert model and model[2] == str(path)
    rows = table(out)
    kinds = {k for k, *_ in rows}
    assert "input" in kinds and kinds & {"output", "loss", "metric"}
    for kind, name, dtype, shape in rows:
        assert dtype in {"f32", "f64", "f16", "i64", "i32", "bool"}, (name, dtype)
        if kind == "param":
            assert all(isinstance(d, int) for d in shape), (name, shape)   # params are static
        if kind in ("loss", "metric"):
            assert shape == [], (name, shape)                              # scalars
    # the parameter count is the sum of the parameter shapes shown
    assert param_count(out) == sum(prod(s) for k, _, _, s in rows if k == "param")
    # every input and result the model declares is listed, with the declared dtype
    block = model_block(path.read_text(), model[1])
    declared_inputs = dict(re.findall(r"^\s*input (\w+)\s*:\s*(\w+)?\[", block, re.M))
    assert {n for k, n, *_ in rows if k == "input"} == set(declared_inputs)
    for k, n, dtype, _ in rows:
        if k == "input" and declared_inputs[n]:
            assert dtype == declared_inputs[n]
    declared_results = set(re.findall(r"^\s*(?:output|loss|metric) (\w+)", block, re.M))
    assert {n for k, n, *_ in rows if k in ("output", "loss", "metric")} == declared_results


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_json_matches_the_table(path, capsys):
    rc, text_out, _ = check(capsys, path)
    rc, out, err = check(capsys, path, "--json")
    assert rc == 0 and err == ""
    lines = out.strip().split("\n")
    assert len(lines) == 1                                  # one JSON object on stdout
    info = json.loads(lines[0])
    for key in ("model", "file", "inputs", "params", "states", "outputs", "param_count"):
        assert key in info
    rows = [("input", i["name"], i["dtype"], i["shape"]) for i in info["inputs"]]
    rows += [("param", p["name"], p["dtype"], p["shape"]) for p in info["params"]]
    rows += [("state", s["name"], s["dtype"], s["shape"]) for s in info["states"]]
    rows += [(o["kind"], o["name"], o["dtype"], o["shape"]) for o in info["outputs"]]
    assert rows == table(text_out)
    assert info["param_count"] == sum(prod(p["shape"]) for p in info["params"])
    assert all(p["size"] == prod(p["shape"]) for p in info["params"])
    assert info["param_count"] == param_count(text_out)


def test_mlp_summary_exactly(capsys):
    path = [p for p in SPECS if p.name == "mlp.dl"][0]
    rc, out, _ = check(capsys, path)
    hidden, classes, features = 256, 10, 64     # the train block of mlp.dl (over the default 128)
    assert table(out) == [
        ("input", "x", "f32", ["B", features]),
        ("input", "y", "i64", ["B"]),
        ("param", "dense0.W", "f32", [features, hidden]),
        ("param", "dense0.b", "f32", [hidden]),
        ("param", "dense1.W", "f32", [hidden, hidden]),
        ("param", "dense1.b", "f32", [hidden]),
        ("param", "dense2.W", "f32", [hidden, classes]),
        ("param", "dense2.b", "f32", [classes]),
        ("output", "probs", "f32", ["B", classes]),
        ("loss", "ce", "f32", []),
        ("metric", "acc", "f32", []),
    ]
    expected = features * hidden + hidden + hidden * hidden + hidden + hidden * classes + classes
    assert param_count(out) == expected
    assert re.search(r"^graph nodes: forward \d+ \(\d+ after passes\); forward\+gradients \d+ "
                     r"\(\d+ after passes\)$", out, re.M)


def test_set_overrides_a_hyperparameter(capsys):
    path = [p for p in SPECS if p.name == "mlp.dl"][0]
    rc, out, _ = check(capsys, path, "--set", "hidden=32", "--set", "classes=3")
    assert rc == 0
    assert param_count(out) == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    rc, out, err = check(capsys, path, "--set", "hiden=32")
    assert rc == 1 and "has no parameter `hiden`" in err
    rc, out, err = check(capsys, path, "--set", "hidden")
    assert rc == 2 and "NAME=VALUE" in err


SEVERAL = """
model Small() {
  input x: f32[B, 3]
  output y = x |> Dense(2)
}
model Big(width = 8) {
  input x: f32[B, 3]
  input t: i64[B]
  logits = x |> Dense(width, relu) |> Dense(4)
  loss ce = cross_entropy(logits, t)
}
"""


def test_model_selection(tmp_path, capsys):
    p = tmp_path / "two.dl"
    p.write_text(SEVERAL)
    rc, out, _ = check(capsys, p, "--model", "Small")
    assert rc == 0 and out.startswith(f"model Small ({p})")
    assert param_count(out) == 3 * 2 + 2
    rc, out, _ = check(capsys, p, "-m", "Big", "--json")
    info = json.loads(out)
    assert info["model"] == "Big" and info["models_in_file"] == ["Small", "Big"]
    assert info["param_count"] == 3 * 8 + 8 + 8 * 4 + 4
    assert [(o["name"], o["kind"], o["shape"]) for o in info["outputs"]] == [("ce", "loss", [])]
    rc, out, err = check(capsys, p)
    assert rc == 1 and "defines 2 models (Small, Big); choose one with --model" in err
    rc, out, err = check(capsys, p, "--model", "Huge")
    assert rc == 1 and "no model `Huge`" in err


def test_the_trained_model_is_the_default(tmp_path, capsys):
    p = tmp_path / "two.dl"
    p.write_text(SEVERAL + "train Big on digits {\n  steps 1\n}\n")
    rc, out, err = check(capsys, p)
    # Big is chosen: `dlc check` validates its train block, whose data do not fit it
    assert rc == 1 and "train Big on digits" in err and "dataset field `x`" in err


def test_states_are_listed(tmp_path, capsys):
    p = tmp_path / "bn.dl"
    p.write_text("model M() {\n  input x: f32[B, 3]\n  output y = BatchNorm()(x)\n}\n")
    rc, out, _ = check(capsys, p)
    rows = table(out)
    assert ("state", "batchnorm0.running_mean", "f32", [3]) in rows
    assert ("state", "batchnorm0.running_var", "f32", [3]) in rows
    assert param_count(out) == 6    # gamma and beta; states are not parameters
