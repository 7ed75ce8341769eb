"""Training regimes: train blocks, the train-step graph, checkpoints, resume, backends.

Small models and few epochs keep this file fast (seconds, plus torch's import).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compiler import api
from compiler.training import checkpoint
from compiler.training.spec import parse_train
from compiler.training.loop import Trainer
from compiler.training.step import build_train_step
from compiler.commands.train import run_training
from dsl.errors import DslError, SpecError

SPECS = Path(__file__).resolve().parent.parent / "specs"

# A small digits classifier: fast, and with a real learning signal.
SMALL_MLP = """
model Small(hidden = 16) {
  input x: f32[B, 64]
  input y: i64[B]
  logits = x |> Dense(hidden, relu) |> Dense(10)
  loss ce = cross_entropy(logits, y)
  metric acc = accuracy(logits, y)
}
"""


def write(tmp_path, text, name="spec.dl") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def train(path, out, **kw):
    """`dlc train` through the Python entry point; returns (exit code, payload)."""
    args = SimpleNamespace(seed=0, out=str(out), quiet=True, json=True, backend="numpy",
                           device="cpu", resume=False, epochs=None, steps=None)
    for k, v in kw.items():
        setattr(args, k, v)
    return run_training(api.load(path), args)


def final_tensors(out) -> dict:
    tensors, _ = checkpoint.load(Path(out) / "checkpoint.safetensors")
    # the trainer's state, and the best evaluation's values under `best/`
    return {**checkpoint.namespace(tensors, checkpoint.TRAIN),
            **{k: v for k, v in tensors.items() if k.startswith(checkpoint.BEST)}}


def spec_error(tmp_path, text) -> DslError:
    with pytest.raises(DslError) as e:
        parse_train(api.load(write(tmp_path, text)))
    return e.value


# ---- train blocks: located errors ----------------------------------------------------------

def test_unknown_option_is_located_with_did_you_mean(tmp_path):
    err = spec_error(tmp_path, SMALL_MLP + "train Small on digits {\n  epoch 3\n}\n")
    text = err.render()
    assert "spec.dl:10:3: error: unknown option `epoch` in train block" in text
    assert "  10 |   epoch 3\n         ^^^^^\n" in text
    assert "hint: did you mean `epochs`?" in text


def test_unknown_optimizer_is_located_at_the_call(tmp_path):
    err = spec_error(tmp_path, SMALL_MLP + "train Small on digits {\n  optimizer adm(lr = 1)\n}\n")
    text = err.render()
    assert "spec.dl:10:13: error: unknown optimizer `adm` (did you mean `adam`?)" in text
    assert "  optimizer adm(lr = 1)\n" + " " * 19 + "^" * 11 in text


def test_unknown_dataset_is_located_at_the_data_expression(tmp_path):
    code = None
    with pytest.raises(SpecError) as e:
        code = train(write(tmp_path, SMALL_MLP + "train Small on digts {\n  epochs 1\n}\n"),
                     tmp_path / "run")
    assert code is None
    text = e.value.render()
    assert "spec.dl:9:16: error: unknown dataset 'digts'; did you mean 'digits'?" in text
    assert "train Small on digts {\n" + " " * 22 + "^^^^^" in text


def test_bad_values_and_conflicts_are_located(tmp_path):
    cases = {
        "batch 0": "`batch` must be an integer >= 1, found `0`",
        "epochs 2; steps 5": "give either `epochs` or `steps`, not both",
        "split 0.5 0.2": "split fractions must sum to 1",
        "early_stop val.accc patience 2": "`val.accc`: the model has no loss or metric `accc`",
        "early_stop val.ce patience 2; split 1.0 0.0": "`early_stop` needs a validation part",
        "schedule cosin": "unknown schedule `cosin` (did you mean `cosine`?)",
        "optimizer adam(lr = 1e-3, weight_decay = 1); weight_decay 0.1":
            "`weight_decay` is given both as an option and to the optimizer",
        "batch 8; batch 16": "option `batch` is given twice",
    }
    for body, message in cases.items():
        err = spec_error(tmp_path, SMALL_MLP + f"train Small on digits {{\n  {body}\n}}\n")
        assert message in err.message, (body, err.message)
        assert err.span is not None and err.span.line == 10, body


def test_dataset_fields_must_match_the_inputs(tmp_path):
    with pytest.raises(SpecError) as e:
        train(write(tmp_path, SMALL_MLP + "train Small on moons {\n  epochs 1\n}\n"),
              tmp_path / "run")
    assert "dataset field `x` is [N, 2] but the model's input `x` is f32[B, 64]" in e.value.message


def test_several_losses_need_a_choice(tmp_path):
    two = SMALL_MLP.replace("metric acc", "loss ce2 = 2.0 * cross_entropy(logits, y)\n  metric acc")
    err = spec_error(tmp_path, two + "train Small on digits {\n  epochs 1\n}\n")
    assert "has several losses (ce, ce2); choose one in train block" in err.message
    cfg = parse_train(api.load(write(tmp_path, two + "train Small on digits {\n  loss ce2\n}\n",
                                     "b.dl")))
    assert cfg.groups[0].loss == "ce2"


# ---- the step graph ---------------------------------------------------------------------------

def test_weight_decay_leaves_biases_alone(tmp_path):
    """With a zero gradient, one SGD step with weight decay shrinks rank-2 weights only."""
    path = write(tmp_path, """
model Z() {
  input x: f32[B, 3]
  input y: i64[B]
  h = x |> Dense(3)
  loss zero = 0.0 * mean(h)
}
train Z on iris {
  optimizer sgd(lr = 0.1)
  weight_decay 0.5
}
""")
    m = api.load(path)
    g, res = build_train_step(m, total_steps=10)
    params = {k: v + 1.0 for k, v in m.init_params(0).items()}  # nonzero biases too
    feeds = {**params, "x": np.ones((2, 3), np.float32), "y": np.zeros(2, np.int64),
             "step": np.float32(0)}
    out = m.lower(res, g)(feeds)
    np.testing.assert_allclose(out["new:dense0.W"], params["dense0.W"] * (1 - 0.1 * 0.5),
                               rtol=1e-6)
    np.testing.assert_array_equal(out["new:dense0.b"], params["dense0.b"])


def test_step_graph_sources_and_results():
    m = api.load(SPECS / "mlp.dl")
    g, res = build_train_step(m, total_steps=100)
    names = {g.node(n).attrs["name"] for n in g.inputs + g.params}
    assert {"x", "y", "step", "dense0.W", "opt.dense0.W.m", "opt.dense0.W.v"} <= names
    assert {"loss", "acc", "lr", "new:dense0.W", "new:opt.dense0.W.m"} <= set(res)
    assert "ce" not in res  # the minimised loss is `loss` (not computed twice)


# ---- the runner -------------------------------------------------------------------------------

EARLY = """
model LR(features = 30) {
  input x: f32[B, features]
  input y: i64[B]
  param w: [features] ~ zeros
  param b: [] ~ zeros
  z = x @ w + b
  loss bce = bce_with_logits(z, float(y))
  metric acc = mean(float((z > 0) == (y == 1)))
}
train LR on breast_cancer {
  batch 64
  epochs 10
  optimizer sgd(lr = 0.05)
  early_stop val.bce patience 2 max
}
"""


def test_early_stopping_restores_the_best_epoch(tmp_path):
    """`max` on a falling loss: every epoch after the first is worse, so training stops
    after epoch 3 and restores epoch 1, which equals a 1-epoch run."""
    path = write(tmp_path, EARLY)
    code, stopped = train(path, tmp_path / "a")
    assert code == 0 and stopped["stopped_early"]
    assert stopped["epochs"] == 3 and stopped["best"]["epoch"] == 1
    code, one = train(path, tmp_path / "b", epochs=1)
    assert stopped["val"] == one["val"] and stopped["test"] == one["test"]
    best = {k[5:]: v for k, v in final_tensors(tmp_path / "a").items() if k.startswith("best/")}
    after_one = final_tensors(tmp_path / "b")
    for k in ("w", "b"):
        np.testing.assert_array_equal(best[k], after_one[k])
    assert not np.array_equal(final_tensors(tmp_path / "a")["w"], after_one["w"])


CONSTANT_LR = SMALL_MLP + """
train Small on digits {
  batch 64
  epochs 4
  optimizer adam(lr = 3e-3)
}
"""


def test_resume_is_bit_exact(tmp_path):
    path = write(tmp_path, CONSTANT_LR)
    assert train(path, tmp_path / "straight")[0] == 0
    assert train(path, tmp_path / "split", epochs=2)[0] == 0
    code, payload = train(path, tmp_path / "split", epochs=4, resume=True)
    assert code == 0 and payload["epochs"] == 4
    a, b = final_tensors(tmp_path / "straight"), final_tensors(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_interrupt_writes_a_checkpoint_and_resume_is_bit_exact(tmp_path, monkeypatch):
    """Ctrl-C in the middle of an epoch (with a cosine schedule) and resume."""
    path = write(tmp_path, CONSTANT_LR.replace("epochs 4", "epochs 3\n  schedule cosine"))
    assert train(path, tmp_path / "straight")[0] == 0
    real_round = Trainer._round

    def interrupted(self, batch):
        if self.pos.round == 30:  # epoch 2, batch 8 of 23
            raise KeyboardInterrupt
        return real_round(self, batch)

    monkeypatch.setattr(Trainer, "_round", interrupted)
    code, payload = train(path, tmp_path / "split")
    assert code == 130 and payload["step"] == 30
    monkeypatch.setattr(Trainer, "_round", real_round)
    assert train(path, tmp_path / "split", resume=True)[0] == 0
    a, b = final_tensors(tmp_path / "straight"), final_tensors(tmp_path / "split")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert metric_rows(tmp_path / "split") == metric_rows(tmp_path / "straight")


def metric_rows(out) -> list:
    """metrics.csv without its wall-clock column."""
    import csv
    with open(Path(out) / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)
                if row["epoch"] != "test"]  # the final test row is written at the end of a run


def test_checkpoints_are_safetensors_and_never_unpickle(tmp_path, monkeypatch):
    path = write(tmp_path, CONSTANT_LR)
    assert train(path, tmp_path / "run", epochs=1)[0] == 0
    raw = (tmp_path / "run" / "checkpoint.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and header_len < len(raw)

    def no_pickle(*a, **k):
        raise AssertionError("a checkpoint load unpickled something")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    real_np_load = np.load

    def np_load(*a, allow_pickle=False, **k):  # datasets may use np.load, never with pickle
        assert not allow_pickle
        return real_np_load(*a, allow_pickle=False, **k)

    monkeypatch.setattr(np, "load", np_load)
    tensors, meta = checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["position"]["epoch"] == 1 and "train/dense0.W" in tensors
    code, _ = train(path, tmp_path / "run", epochs=2, resume=True)
    assert code == 0


def test_resume_refuses_another_configuration(tmp_path):
    path = write(tmp_path, CONSTANT_LR)
    assert train(path, tmp_path / "run", epochs=1)[0] == 0
    other = write(tmp_path, CONSTANT_LR.replace("batch 64", "batch 32"), "other.dl")
    code, payload = train(other, tmp_path / "run", resume=True)
    assert code == 1 and "different training configuration" in payload["message"]


def test_backends_agree_over_50_steps(tmp_path):
    """The same 50 Adam steps on NumPy, PyTorch and onnxruntime (float32 everywhere).

    Tolerance: 1e-4 relative to each tensor's largest magnitude (at least 1). Measured
    differences are ~1e-7: float32 rounding in different kernels.
    """
    pytest.importorskip("torch")
    path = write(tmp_path, CONSTANT_LR.replace("epochs 4", "epochs 4\n  schedule cosine"))
    params = {}
    for backend in ("numpy", "torch", "onnx"):
        code, payload = train(path, tmp_path / backend, steps=50, backend=backend)
        assert code == 0 and payload["steps"] == 50
        params[backend] = final_tensors(tmp_path / backend)
    ref = params["numpy"]
    for backend in ("torch", "onnx"):
        for k, v in ref.items():
            scale = max(1.0, float(np.abs(v).max()))
            assert np.abs(params[backend][k] - v).max() <= 1e-4 * scale, (backend, k)


def test_nan_stops_within_one_step_naming_the_tensor(tmp_path):
    path = write(tmp_path, """
model Bad(features = 4) {
  input x: f32[B, features]
  input y: f32[B]
  param w: [features] ~ zeros
  loss l = mean(log(x @ w - 1.0))
}
train Bad on linreg {
  optimizer sgd(lr = 0.1)
}
""")
    code, payload = train(path, tmp_path / "run")
    assert code == 1 and payload["error"] == "NonFinite"
    assert payload["step"] == 1 and payload["tensor"] == "loss"
    assert payload["message"].startswith("training diverged at step 1: `loss` is nan")
    assert "computed by `log`" in payload["message"] and payload["line"] == 6


SLOT_OVERFLOW = """
model Slot(features = 4) {
  input x: f32[B, features]
  input y: f32[B]
  param w: [features] ~ zeros
  loss l = 1e25 * mean(x @ w)
}
train Slot on linreg {
  optimizer adam(lr = 0.1)
  epochs 2
}
"""


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_state_only_overflow_is_named_at_its_own_step(tmp_path, backend):
    # Adam's second moment overflows at step 1 (g^2 ~ 1e48 in f32) while the loss and
    # w stay exactly 0 (m / sqrt(inf) = 0): only the full state check can see it, and it
    # runs every 16 rounds; the replay must still name step 1 and the slot
    code, payload = train(write(tmp_path, SLOT_OVERFLOW), tmp_path / "run", backend=backend)
    assert code == 1 and payload["error"] == "NonFinite"
    assert payload["step"] == 1, payload["message"]
    assert payload["tensor"].startswith("new:") and payload["tensor"] != "new:w"
    assert "the update of `adam` made it" in payload["message"]
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_huge_learning_rate_stops_at_the_first_non_finite_step(tmp_path):
    text = (SPECS / "linear_regression.dl").read_text().replace("sgd(lr = 0.05)", "sgd(lr = 1e30)")
    code, payload = train(write(tmp_path, text), tmp_path / "run")
    assert code == 1 and payload["step"] <= 2
    assert payload["message"].startswith(f"training diverged at step {payload['step']}: `")


# ---- other regimes ------------------------------------------------------------------------------

def test_perceptron_update_rule_without_gradients(tmp_path):
    path = write(tmp_path, """
model Perceptron(dim = 2) {
  input x: f32[B, dim]
  input y: i64[B]
  param w: [dim] ~ zeros
  score = x @ w
  t = float(y)
  metric acc = sign_accuracy(score, t)
  wrong = float(score * t <= 0)
}
train Perceptron on blobs {
  batch 1
  epochs 3
  w <- w + (wrong * t) @ x
}
""")
    g, res = build_train_step(api.load(path), total_steps=1)
    assert set(res) == {"acc", "new:w"}  # no loss, no optimizer, no `step`
    code, payload = train(path, tmp_path / "run")
    assert code == 0 and payload["test"]["acc"] == 1.0  # blobs are separable


def test_players_step_their_own_parameters(tmp_path):
    path = write(tmp_path, """
model GAN(z = 4, hidden = 16) {
  input x: f32[B, 2]
  g1 = Dense(hidden, relu)
  g2 = Dense(2)
  c1 = Dense(hidden, relu)
  c2 = Dense(1)
  fake = g2(g1(normal([dim(x, 0), z])))
  loss critic_loss = mean(c2(c1(fake))) - mean(c2(c1(x)))
  loss gen_loss = -mean(c2(c1(fake)))
}
train GAN on gaussians(n = 256) {
  batch 64
  steps 6
  player critic { params c1 c2; loss critic_loss; optimizer adam(lr = 1e-3); steps 5 }
  player gen { params g1 g2; loss gen_loss; optimizer sgd(lr = 1e-2) }
}
""")
    m = api.load(path)
    for player, layers in (("critic", {"c1", "c2"}), ("gen", {"g1", "g2"})):
        g, res = build_train_step(m, player=player, total_steps=10)
        updated = {k[4:] for k in res if k.startswith("new:") and not k.startswith("new:opt.")}
        assert updated == {f"{layer}.{p}" for layer in layers for p in ("W", "b")}
    code, payload = train(path, tmp_path / "run")
    assert code == 0 and payload["steps"] == 6
    _, meta = checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["position"]["group_steps"] == {"critic": 30, "gen": 6}


def test_svrg_and_polyak_average_reach_least_squares(tmp_path):
    text = (SPECS / "linear_regression.dl").read_text()
    text = text[:text.index("train ")] + """
train LinearRegression on linreg {
  batch 32
  epochs 4
  optimizer svrg(lr = 0.05)
  average polyak(decay = 0.9)
}
"""
    code, payload = train(write(tmp_path, text), tmp_path / "run")
    assert code == 0
    from compiler.training import datasets
    train_part = datasets.load("linreg").split((0.8, 0.1, 0.1))[0]
    xb = np.c_[train_part.x, np.ones(train_part.n)].astype(np.float64)
    residual = xb @ np.linalg.lstsq(xb, train_part.y, rcond=None)[0] - train_part.y
    assert payload["train"]["mse"] < 1.1 * np.mean(residual ** 2)  # least squares
    tensors = final_tensors(tmp_path / "run")
    assert {"avg.w", "snapshot:w", "opt.w.mu"} <= set(tensors)
