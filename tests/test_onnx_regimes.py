"""Every train block exports: N rounds of the exported regime, driven in plain
onnxruntime by docs/train_step_onnx.py from its manifest, equal N rounds of `dlc
train`'s runner (compiler.training.loop.Trainer, NumPy backend) from the same seed.

The zoo is globbed (every `specs/*.dl` with a train block), plus small regimes the zoo
lacks (tests/regimes: SVRG, Polyak averaging with dropout noise, a schedule and
clipping, augmentation (noise, flip, crop), checkpoint averaging). Also compared: what
each side evaluates with (`evaluate_with`, the checkpoint-average ring). Fine-tuning
(`init_from`, `freeze`), bagging's bootstrap counts and a regime continued from a run's
checkpoint (`--checkpoint RUN`) have tests of their own below. Compared: every tensor of the run's state (params, optimizer slots,
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
# across epoch boundaries (snapshots); past 3 evaluations (the checkpoint ring)
LONGER = {"svrg_linreg": 6, "polyak_mlp": 5, "checkpoint_average": 7}
# several rounds on a sign-dependent rule: a decision can flip only if two libraries'
# rounding straddles a margin; float64 keeps that ~1e-12 away
TOL = 1e-7
# onnxruntime's CPU provider has no float64 kernel for some ops (Conv): such specs run
# in float32 on both sides, where two libraries' summation orders differ by ~1e-7
# relative per op and a few rounds of Adam amplify that to ~1e-5
F32_TOL = 2e-4
# A parameter whose gradient is zero in exact arithmetic (an attention key bias:
# softmax is shift-invariant along the keys) gets pure rounding noise as its gradient,
# ~1e-9 in float32, and Adam normalises that to steps of about +-lr in a direction each
# library's rounding picks. Such parameters (found as a float64 gradient <= 1e-12 of
# the largest, for every loss) are compared to Adam's bound instead: |step| <= 3 lr.
NULL_GRAD = 1e-12


def _driver():
    spec = importlib.util.spec_from_file_location("train_step_onnx", ROOT / "docs" / "train_step_onnx.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DRIVER = _driver()


def _run_both(path: Path, tmp_path: Path, rounds: int, dtype: str = "f64", export=()):
    m = api.load(path)
    cfg = parse_train(m)
    model = model_for(m, cfg)
    parts = _split(cfg, model)
    horizon = _rounds(cfg, parts[0].num_batches(cfg.batch))
    rounds = min(rounds, horizon)
    out = tmp_path / f"regime-{dtype}"
    assert main(["compile", str(path), "--to", "onnx", "--train-step", "--dtype", dtype,
                 "-o", str(out), "--json", *export]) == 0
    try:
        reg = DRIVER.Regime(out)
    except Exception as e:  # onnxruntime: "Could not find an implementation" (f64)
        if dtype == "f64" and "NOT_IMPLEMENTED" in str(e):
            return _run_both(path, tmp_path, rounds, "f32", export)
        raise
    reg.train(rounds, metrics_every=1)
    if model.losses and _max_lr(cfg):
        reg.null_bound = {k: 3 * _max_lr(cfg) * rounds for k in _null_gradients(model, cfg, parts)}

    # the runner `dlc train` uses, stopped after `rounds` rounds of the same run (the
    # schedules keep the full run's horizon, as the export does; evaluations where the
    # spec has them: checkpoint averaging keeps the params of each)
    short = dataclasses.replace(cfg, steps=rounds, epochs=None, early_stop=None)
    run = tmp_path / f"run-{dtype}"
    run.mkdir()
    tr = Trainer(model, short, parts, backend="numpy", seed=cfg.seed, out=run,
                 dtype=dtype, horizon=horizon)
    tr.run()
    return reg, tr, rounds, (TOL if dtype == "f64" else F32_TOL)


@pytest.mark.parametrize("path", ZOO + EXTRA, ids=lambda p: p.stem)
def test_exported_regime_equals_dlc_train(path, tmp_path):
    _check(*_run_both(path, tmp_path, LONGER.get(path.stem, ROUNDS)), path.stem)


def _max_lr(cfg) -> float:
    return max((float(g.optimizer.kwargs.get("lr", 1e-3)) for g in cfg.groups
                if g.optimizer is not None), default=0.0)  # (update rules: no optimizer)


def _null_gradients(model, cfg, parts) -> set:
    """Parameters with a zero gradient (to float64 rounding) for every loss."""
    batch = next(iter(parts[0].batches(cfg.batch, seed=0, epoch=0, start=0)))
    feeds = {k: v for k, v in batch.items() if k in model.inputs}
    params = model.init_params()
    null = set(params)
    for loss in model.losses:
        g = model.gradients(loss, feeds, params, dtype="f64")
        grads = {k: np.abs(np.asarray(v)).max(initial=0.0) for k, v in g.items() if k in params}
        scale = max(grads.values(), default=0.0)
        null &= {k for k, a in grads.items() if a <= NULL_GRAD * scale}
    return null


def _check(reg, tr, rounds, tol, name):
    """The driver's run `reg` equals the Trainer's `tr`: state, evaluation values, rows."""
    path = Path(name)  # (its stem names the spec in messages)
    assert reg.round == tr.pos.round == rounds
    assert set(reg.state) == set(tr.values), set(reg.state) ^ set(tr.values)
    bound = getattr(reg, "null_bound", {})
    for k, v in tr.values.items():
        atol = bound.get(k, tol) if tol == F32_TOL else tol  # (see NULL_GRAD)
        np.testing.assert_allclose(np.asarray(reg.state[k], np.float64), np.asarray(v, np.float64),
                                   rtol=tol, atol=atol, err_msg=f"{path.stem}: {k}")
    # what each evaluates (and deploys) with: averaged params, the checkpoint ring's mean
    ev = reg.evaluation_values()
    for k, v in tr.eval_values().items():
        atol = bound.get(k, tol) if tol == F32_TOL else tol
        np.testing.assert_allclose(np.asarray(ev[k], np.float64), np.asarray(v, np.float64),
                                   rtol=tol, atol=atol, err_msg=f"{path.stem}: evaluates {k}")
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


# ---- fine-tuning, bagging, a continued run ---------------------------------------------------

NET = """
model Net(hidden = 8) {
  input x: f32[B, 2]
  input y: i64[B]
  logits = x |> Dense(hidden, tanh) |> Dense(2)
  loss ce = cross_entropy(logits, y)
  metric acc = accuracy(logits, y)
}
"""


def test_init_from_and_freeze_export_the_fine_tuned_regime(tmp_path):
    """`init_from` puts the pretrained values in init.npz (bit-equal to the checkpoint's
    deployed params); `freeze`: the frozen params are no step's update, have no
    optimizer slots and stay at those values in the driver, as in dlc train."""
    from compiler.training import checkpoint
    pre = tmp_path / "pre.dl"
    pre.write_text(NET + "train Net on moons(n = 128) {\n  batch 32\n  epochs 2\n"
                   "  optimizer adam(lr = 0.05)\n}\n")
    assert main(["train", str(pre), "--out", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    want = checkpoint.namespace(checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")[0],
                                checkpoint.PARAMS)
    tuned = tmp_path / "tuned.dl"
    tuned.write_text(NET + "train Net on moons(n = 128) {\n  batch 32\n  epochs 2\n"
                     "  optimizer adam(lr = 0.05)\n"
                     f'  init_from "{tmp_path}/run/checkpoint.safetensors" dense0\n'
                     "  freeze dense0\n  seed 3\n}\n")
    reg, tr, rounds, tol = _run_both(tuned, tmp_path, 4)
    _check(reg, tr, rounds, tol, "tuned")
    with np.load(tmp_path / "regime-f64" / reg.man["init"]) as z:
        init = {k: z[k] for k in z.files}
    frozen = reg.man["frozen"]
    assert frozen and all(p.startswith("dense0.") for p in frozen)
    updated = {x for e in reg.man["steps"] for x in e["updates"].values()}
    for p in frozen:
        # f32 checkpoint values are exact in float64: bit-equal
        np.testing.assert_array_equal(init[p], want[p].astype(np.float64), err_msg=p)
        assert p not in updated and not any(k.startswith(f"opt.{p}.") for k in init), p
        np.testing.assert_array_equal(reg.state[p], init[p], err_msg=p)
    # the rest starts from the seed (not the checkpoint) and trains
    for p in (p for p in want if p.startswith("dense1.")):
        assert np.abs(init[p] - want[p]).max() > 1e-3, p
        assert p in updated and np.abs(reg.state[p] - init[p]).max() > 1e-4, p


def test_bagging_counts_are_the_bootstrap_draws_in_the_data(tmp_path):
    """specs/bagging.dl: data.npz's `bag` column is each member's bootstrap count (not
    ones); fed ones instead, the driver's run departs from dlc train's."""
    from compiler.training import bagging
    reg, tr, rounds, tol = _run_both(ROOT / "specs" / "bagging.dl", tmp_path, 3)
    _check(reg, tr, rounds, tol, "bagging")
    bag = reg.data["bag"]
    assert bag.shape == (reg.man["data"]["rows"], 5)
    np.testing.assert_array_equal(bag, bagging.counts(len(bag), 5, reg.man["seed"]))
    assert (bag == 0).any() and (bag >= 2).any()  # sampled with replacement
    ones = DRIVER.Regime(tmp_path / "regime-f64")
    ones.data["bag"] = np.ones_like(bag)
    ones.train(rounds)
    diff = max(float(np.abs(ones.state[k] - np.asarray(v)).max()) for k, v in tr.values.items())
    assert diff > 1e3 * tol, diff


# augment_moons: across an epoch boundary (13 batches), Adam's step counts matter;
# checkpoint_average (evaluations every 2 rounds, n = 3): the run ends with 2 ring
# entries (rounds 2, 4) and the final mean needs one of them (rounds 4, 6, 7)
@pytest.mark.parametrize("spec, first, total", [("augment_moons", 4, 15),
                                                ("checkpoint_average", 4, 7)])
def test_a_regime_exported_from_a_run_continues_it(spec, first, total, tmp_path):
    """`dlc compile --train-step --checkpoint RUN`: init.npz is the run's training state
    (params, Adam/momentum slots, the checkpoint ring), `start` its position (round,
    epoch, batch, step counts, noise stream); the driver's further rounds equal one
    uninterrupted dlc train run of as many rounds in all."""
    path = ROOT / "tests" / "regimes" / f"{spec}.dl"
    m = api.load(path)
    cfg = parse_train(m)
    model = model_for(m, cfg)
    parts = _split(cfg, model)
    horizon = _rounds(cfg, parts[0].num_batches(cfg.batch))

    def trainer(rounds, out):
        out.mkdir()
        tr = Trainer(model, dataclasses.replace(cfg, steps=rounds, epochs=None), parts,
                     backend="numpy", seed=cfg.seed, out=out, dtype="f64", horizon=horizon)
        tr.run()
        return tr
    trainer(first, tmp_path / "run")
    out = tmp_path / "more"
    assert main(["compile", str(path), "--to", "onnx", "--train-step", "--dtype", "f64",
                 "--checkpoint", str(tmp_path / "run"), "-o", str(out), "--json"]) == 0
    reg = DRIVER.Regime(out)
    assert reg.round == first and reg.man["start"]["round"] == first
    reg.train(total)
    whole = trainer(total, tmp_path / "whole")
    assert reg.round == whole.pos.round == total
    for k, v in whole.values.items():
        np.testing.assert_allclose(reg.state[k], np.asarray(v), rtol=TOL, atol=TOL, err_msg=k)
    ev = reg.evaluation_values()
    for k, v in whole.eval_values().items():
        np.testing.assert_allclose(ev[k], np.asarray(v), rtol=TOL, atol=TOL, err_msg=k)


def test_train_step_from_another_runs_checkpoint_is_a_usage_error(tmp_path, capsys):
    """A checkpoint of another train block lacks the regime's tensors: exit 2, no trace."""
    a = tmp_path / "a.dl"
    a.write_text(NET + "train Net on moons(n = 64) {\n  batch 32\n  steps 2\n"
                 "  optimizer sgd(lr = 0.1)\n}\n")
    assert main(["train", str(a), "--out", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    b = tmp_path / "b.dl"
    b.write_text(a.read_text().replace("sgd(lr = 0.1)", "adam(lr = 0.1)"))
    capsys.readouterr()
    assert main(["compile", str(b), "--to", "onnx", "--train-step", "--checkpoint",
                 str(tmp_path / "run"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "lacks opt." in err and "Traceback" not in err


def test_api_train_step_is_update_only_with_a_metrics_model(tmp_path):
    """`Model.export_onnx(train_step=True)` writes the CLI's update-only step and the
    metrics beside it (PATH.metrics.onnx), both from the same feeds."""
    import onnxruntime as ort
    m = api.load(ROOT / "specs" / "mlp.dl")
    m.export_onnx(tmp_path / "step.onnx", train_step=True)
    step = ort.InferenceSession(str(tmp_path / "step.onnx"))
    names = {o.name for o in step.get_outputs()}
    assert "loss" in names and all(n.startswith("new:") for n in names - {"loss", "lr"})
    metrics = ort.InferenceSession(str(tmp_path / "step.metrics.onnx"))
    assert "acc" in {o.name for o in metrics.get_outputs()}
