"""Every train block exports: N rounds of the exported regime, driven in plain
onnxruntime by docs/train_step_onnx.py from its manifest, equal N rounds of `dlc
train`'s runner (compiler.training.loop.Trainer, NumPy backend) from the same seed.

The zoo is globbed (every `specs/*.dl` with a train block), plus small regimes the zoo
lacks (tests/regimes: SVRG, Polyak averaging with dropout noise, a schedule and
clipping). Compared: every tensor of the run's state (params, optimizer slots,
averages, SVRG snapshots and full gradients, states such as the perceptron's mistake
count) and every train_* number of the metrics row (the step's logged loss and lr, and
the metrics, which the exported regime computes in a separate metrics model).

Both sides run in float64 (`--dtype f64`), so they differ by the rounding of two
different kernel libraries only: after a few rounds that is ~1e-12; the tolerance
1e-7 is far below any change of data order, noise, schedule step or update (those
move values by >= 1e-4 here).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.commands.cli import main
from compiler.training.loop import Trainer
from compiler.training.spec import model_for, parse_train
from compiler.training.step import _rounds, _split

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted(p for p in (ROOT / "specs").glob("*.dl")
             if re.search(r"^train\s", p.read_text(), re.M))
EXTRA = sorted((ROOT / "tests" / "regimes").glob("*.dl"))
ROUNDS = 3           # per zoo spec: the file's budget as the zoo grows
LONGER = {"svrg_linreg": 6, "polyak_mlp": 5}  # across epoch boundaries (snapshots)
# several rounds on a sign-dependent rule: a decision can flip only if two libraries'
# rounding straddles a margin; float64 keeps that ~1e-12 away
TOL = 1e-7
# onnxruntime's CPU provider has no float64 kernel for some ops (Conv): such specs run
# in float32 on both sides, where two libraries' summation orders differ by ~1e-7
# relative per op and a few rounds of Adam amplify that to ~1e-5
F32_TOL = 2e-4


def _driver():
    spec = importlib.util.spec_from_file_location("train_step_onnx", ROOT / "docs" / "train_step_onnx.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DRIVER = _driver()


def _run_both(path: Path, tmp_path: Path, rounds: int, dtype: str = "f64"):
    m = api.load(path)
    cfg = parse_train(m)
    model = model_for(m, cfg)
    parts = _split(cfg, model)
    horizon = _rounds(cfg, parts[0].num_batches(cfg.batch))
    rounds = min(rounds, horizon)
    out = tmp_path / f"regime-{dtype}"
    assert main(["compile", str(path), "--to", "onnx", "--train-step", "--dtype", dtype,
                 "-o", str(out), "--json"]) == 0
    try:
        reg = DRIVER.Regime(out)
    except Exception as e:  # onnxruntime: "Could not find an implementation" (f64)
        if dtype == "f64" and "NOT_IMPLEMENTED" in str(e):
            return _run_both(path, tmp_path, rounds, "f32")
        raise
    reg.train(rounds, metrics_every=1)

    # the runner `dlc train` uses, stopped after `rounds` rounds of the same run (the
    # schedules keep the full run's horizon, as the export does)
    short = dataclasses.replace(cfg, steps=rounds, epochs=None, early_stop=None, eval_every=None)
    run = tmp_path / f"run-{dtype}"
    run.mkdir()
    tr = Trainer(model, short, parts, backend="numpy", seed=cfg.seed, out=run,
                 dtype=dtype, horizon=horizon)
    tr.run()
    return reg, tr, rounds, (TOL if dtype == "f64" else F32_TOL)


@pytest.mark.parametrize("path", ZOO + EXTRA, ids=lambda p: p.stem)
def test_exported_regime_equals_dlc_train(path, tmp_path):
    reg, tr, rounds, tol = _run_both(path, tmp_path, LONGER.get(path.stem, ROUNDS))
    assert reg.round == tr.pos.round == rounds
    assert set(reg.state) == set(tr.values), set(reg.state) ^ set(tr.values)
    for k, v in tr.values.items():
        np.testing.assert_allclose(np.asarray(reg.state[k], np.float64), np.asarray(v, np.float64),
                                   rtol=tol, atol=tol, err_msg=f"{path.stem}: {k}")
    # each metrics row: train_K is the row-weighted mean of K over the rounds since the
    # row before (lr: its last value)
    rows, start = _batch_rows(reg), 0
    at_log = {k for e in reg.man["steps"] for k in e.get("metrics_at_log", ())}
    assert tr.pos.history
    for row in tr.pos.history:
        end = row["step"]
        for key, want in row.items():
            name = key[len("train_"):] if key.startswith("train_") else key
            if name in at_log:  # a costly metric: at the row's last step only
                got = reg.log[end - 1][name]
            elif key.startswith("train_"):
                got = np.average([r[name] for r in reg.log[start:end]], weights=rows[start:end])
            elif name == "lr" or name.endswith(".lr"):
                got = reg.log[end - 1][name]
            else:
                continue
            assert got == pytest.approx(want, rel=tol, abs=tol), (path.stem, key, row["step"])
        start = end


def _batch_rows(reg) -> list:
    """The rows of each round's batch (the last batch of an epoch may be smaller)."""
    man, nb = reg.man, reg.man["batches_per_epoch"]
    sizes = [min(man["batch"], man["data"]["rows"] - i * man["batch"]) for i in range(nb)]
    return [sizes[r % nb] for r in range(reg.round)]


def test_wgan_exports_both_players_with_k_critic_steps(tmp_path):
    """Issue 19: the GAN's artifact holds the generator's step too, and says the order."""
    out = tmp_path / "step.onnx"
    assert main(["compile", str(ROOT / "specs" / "wgan_gp.dl"), "--to", "onnx",
                 "--train-step", "-o", str(out)]) == 0
    man = json.loads((tmp_path / "step.manifest.json").read_text())
    assert [(e["player"], e["repeats"]) for e in man["steps"]] == [("critic", 5), ("generator", 1)]
    assert man["steps"][0]["model"] == "step.onnx"
    gen = man["steps"][1]
    assert (tmp_path / gen["model"]).exists()
    assert any(k.startswith("new:gen.") for k in gen["updates"])
    assert not any(k.startswith("new:gen.") for k in man["steps"][0]["updates"])
    assert {n["dist"] for e in man["steps"] for n in e["noise"]} >= {"normal"}


def test_the_step_model_computes_no_metrics(tmp_path):
    """A step model's outputs are the minimised loss, lr and next values; the metrics
    are a separate model (so the export does no work no update needs)."""
    import onnxruntime as ort
    out = tmp_path / "mlp"
    assert main(["compile", str(ROOT / "specs" / "mlp.dl"), "--to", "onnx", "--train-step",
                 "-o", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    step = ort.InferenceSession(str(out / man["steps"][0]["model"]))
    names = {o.name for o in step.get_outputs()}
    assert names - {"loss", "lr"} and all(n.startswith("new:") for n in names - {"loss", "lr"})
    metrics = ort.InferenceSession(str(out / man["steps"][0]["metrics_model"]))
    assert {o.name for o in metrics.get_outputs()} == set(man["steps"][0]["metrics"]) >= {"acc"}


def test_costly_metrics_are_no_part_of_the_step():
    """specs/adversarial.dl's attack accuracies need extra passes (FGSM's gradient, PGD's
    scan): they are read at each metrics row, not computed by every step; the clean
    accuracy, which reuses the loss's logits, stays in the step."""
    from compiler.training.step import build_step
    m = api.load(ROOT / "specs" / "adversarial.dl")
    cfg = parse_train(m)
    sg = build_step(model_for(m, cfg), cfg, cfg.groups[0], 10)
    assert set(sg.deferred) == {"fgsm_acc", "pgd_acc"}
    assert "acc" in sg.results and not set(sg.deferred) & set(sg.results)


def test_train_step_without_a_train_block_is_a_located_error(tmp_path, capsys):
    spec = tmp_path / "bare.dl"
    spec.write_text("model M() {\n  input x: f32[B, 2]\n  param w: [2] ~ zeros\n"
                    "  loss l = mean(x @ w)\n}\n")
    assert main(["compile", str(spec), "--to", "onnx", "--train-step", "-o",
                 str(tmp_path / "s.onnx")]) == 1
    err = capsys.readouterr().err
    assert "no train block for model `M`" in err and "bare.dl:1:1" in err and "^" in err
    assert not (tmp_path / "s.onnx").exists()


def test_the_documented_manifest_is_the_written_one(tmp_path):
    """docs/train_step_onnx.md's (abridged) manifest names only fields a real export has."""
    text = (ROOT / "docs" / "train_step_onnx.md").read_text()
    doc = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert main(["compile", str(ROOT / "specs" / "wgan_gp.dl"), "--to", "onnx",
                 "--train-step", "-o", str(tmp_path / "w")]) == 0
    real = json.loads((tmp_path / "w" / "manifest.json").read_text())

    def check(d, r, where):
        for k, v in d.items():
            if k == "...":
                continue
            assert k in r, f"{where}.{k} is documented but not written"
            if isinstance(v, dict) and isinstance(r[k], dict) and "..." not in v:
                check(v, r[k], f"{where}.{k}")
    check(doc, real, "manifest")
    for d, r in zip(doc["steps"], real["steps"]):
        check({k: v for k, v in d.items() if k != "updates"}, r, "steps[]")
        for n in d.get("noise", []):
            assert set(n) <= set(r["noise"][0]), n
    assert [(s["player"], s["repeats"]) for s in doc["steps"]] == \
        [(s["player"], s["repeats"]) for s in real["steps"]]
