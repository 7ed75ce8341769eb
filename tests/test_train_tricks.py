"""Train-block tricks (issue 14), each end to end against an independent reference.

* `constrain ... clip / max_norm / nonneg`: projections after the optimizer step, inside
  the step graph (so every backend and the exported step apply them); a critic step of
  specs/wgan_clip.dl against torch RMSprop + clamp_ with copied weights; a whole run
  keeps the critic in [-c, c].
  `fn(w) -> EXPR` projections against NumPy; the exported ONNX train step clips too.
* early stopping stops `patience` evaluations after the best validation epoch and
  restores it; Polyak averaging lowers the variance of the evaluated loss.
* `init_from` / `freeze`: loaded params are bit-equal to the checkpoint's, frozen ones
  never move and get no optimizer slots; a fine-tuned run starts at the pretrained loss.
* `augment`: noise / flip / crop against NumPy references; training batches only,
  reproducible, bit-exact on resume.
* `bagging` and specs/bagging.dl: bootstrap counts; members fit their own sample
  (in-bag < out-of-bag error); the bagged prediction varies less than one member's.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.core import noise
from compiler.training import checkpoint
from tests.helpers import cli_json, train_cli
from compiler.training.spec import parse_train
from compiler.training.step import build_step, initial_values

SPECS = Path(__file__).resolve().parent.parent / "specs"
WGAN_CLIP = SPECS / "wgan_clip.dl"


def _write(tmp_path, text, name="t.dl") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _history(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # the evaluation rows (the file ends with the final train/val/test row)
    return [{k: float(v) for k, v in row.items() if v != ""} for row in rows
            if row["epoch"].replace(".", "", 1).isdigit()]


NET = """
model Net(hidden = 8) {
  input x: f32[B, 2]
  input y: i64[B]
  logits = x |> Dense(hidden, relu) |> Dense(2)
  loss ce = cross_entropy(logits, y)
  metric acc = accuracy(logits, y)
}
"""


def _constrained_sgd_step(path, lr=0.5):
    """One step of the spec's `sgd(lr)` train block from perturbed params on a random
    batch, and the plain SGD step from `Model.gradients` the projections must act on."""
    m = api.load(path)
    cfg = parse_train(m)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) + 0.3 * rng.standard_normal(v.shape)
              for k, v in m.init_params(0).items()}
    batch = {"x": rng.standard_normal((16, 2)), "y": rng.integers(0, 2, 16)}
    out, _ = _step_once(m, cfg, cfg.groups[0], params, batch)
    g = m.gradients("ce", batch, params, dtype="f64")
    return out, {k: params[k] - lr * g[k] for k in params}


def _step_once(m, cfg, group, params, batch, backend="numpy", dtype="f64", seed=0):
    """One step of `group` from `params` (slots at their initial fill): its results."""
    sg = build_step(m, cfg, group, 10)
    values = initial_values(m, [sg], 0)
    values.update(params)
    feeds = {**values, **batch, **noise.draw(sg.graph, batch, seed, 0, sg.noise_names),
             "step": np.asarray(0, np.float32)}
    feeds = {k: v for k, v in feeds.items() if sg.graph.source_named(k) is not None}
    out = m.lower(sg.results, sg.graph, backend, dtype)(feeds)
    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            for k, v in out.items()}, feeds


# ---- projections after the optimizer step -------------------------------------------------

def test_clip_max_norm_nonneg_are_the_projection_of_the_sgd_update(tmp_path):
    """new:P == project(P - lr * grad P), the gradient from `Model.gradients` (the
    plain loss: the projection changes the update, not the gradient)."""
    path = _write(tmp_path, NET + """
train Net on moons(n = 64) {
  optimizer sgd(lr = 0.5)
  constrain dense0.W clip(0.05)
  constrain dense1.W max_norm(0.8, axis = 1)
  constrain dense0.b dense1.b nonneg
}
""")
    out, sgd = _constrained_sgd_step(path)
    np.testing.assert_allclose(out["new:dense0.W"], np.clip(sgd["dense0.W"], -0.05, 0.05),
                               rtol=1e-12)
    w = sgd["dense1.W"]
    norms = np.sqrt((w ** 2).sum(1, keepdims=True))  # each row
    np.testing.assert_allclose(out["new:dense1.W"], w * np.minimum(1, 0.8 / (norms + 1e-7)),
                               rtol=1e-12)
    assert (norms > 0.8).any() and (norms < 0.8).any()  # both branches exercised
    for b in ("dense0.b", "dense1.b"):
        np.testing.assert_allclose(out["new:" + b], np.maximum(sgd[b], 0), rtol=1e-12)
    assert (sgd["dense0.W"] > 0.05).any() and (sgd["dense0.b"] < 0).any()


def test_constraints_hold_after_a_run_on_every_backend(tmp_path):
    path = _write(tmp_path, NET + """
train Net on moons(n = 128) {
  batch 32
  epochs 2
  optimizer adam(lr = 0.05)
  constrain dense0 clip(0.1)
}
""")
    finals = {}
    for backend in ("numpy", "torch", "onnx"):
        _, tensors, _ = train_cli(path, tmp_path / backend, "--backend", backend)
        p = checkpoint.namespace(tensors, checkpoint.PARAMS)
        assert np.abs(p["dense0.W"]).max() <= 0.1 + 1e-7
        assert np.isclose(np.abs(p["dense0.W"]).max(), 0.1)  # the bound is active
        assert np.abs(p["dense1.W"]).max() > 0.1             # other layers are free
        finals[backend] = p
    for backend in ("torch", "onnx"):
        for k, v in finals["numpy"].items():
            # float32 runs of one graph on three backends: rounding differences only
            np.testing.assert_allclose(finals[backend][k], v, atol=1e-4, err_msg=(backend, k))


@pytest.mark.parametrize("line, message", [
    ("constrain dense0 clip(0)", "needs a bound C > 0"),
    ("constrain dense0 clamp(0.1)", "unknown projection `clamp`"),
    ("constrain dens0 clip(0.1)", "no parameters under `dens0`"),
    ("constrain clip(0.1)", "expects parameter prefixes and a projection"),
    ("constrain dense0 max_norm(1.0, axs = 0)", "has no option `axs`"),
])
def test_bad_constraints_are_located(tmp_path, line, message):
    path = _write(tmp_path, NET + "train Net on moons {\n  " + line + "\n}\n")
    rc, payload = cli_json("check", path)
    assert rc == 1 and message in payload["message"], payload
    assert payload["line"] == NET.count("\n") + 2


def test_a_player_may_constrain_only_its_own_parameters(tmp_path):
    text = WGAN_CLIP.read_text().replace("constrain critic clip", "constrain gen clip")
    rc, payload = cli_json("check", _write(tmp_path, text, "w.dl"))
    assert rc == 1 and "does not train" in payload["message"], payload


# ---- specs/wgan_clip.dl -----------------------------------------------------------------------

def _torch_critic_step(params, x, z, c, lr, depth=2):
    """One WGAN critic step written from the paper: RMSprop on L_D, then clamp_(-c, c)."""
    import torch
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}

    def mlp(prefix, v):  # std MLP: `depth` hidden relu Dense layers, then a linear one
        for i in range(depth):
            v = torch.relu(v @ P[f"{prefix}.dense{i}.W"] + P[f"{prefix}.dense{i}.b"])
        return v @ P[f"{prefix}.dense{depth}.W"] + P[f"{prefix}.dense{depth}.b"]

    x, z = torch.tensor(x, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)
    fake = mlp("gen", z).detach()
    loss = mlp("critic", fake)[:, 0].mean() - mlp("critic", x)[:, 0].mean()
    critic = [P[k] for k in P if k.startswith("critic.")]
    opt = torch.optim.RMSprop(critic, lr=lr)  # alpha 0.99, eps 1e-8: dlc's defaults
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for p in critic:
            p.clamp_(-c, c)
    return loss.item(), {k: P[k].detach().numpy() for k in P if k.startswith("critic.")}


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_wgan_clip_critic_step_matches_torch_rmsprop_and_clamp(backend):
    pytest.importorskip("torch")
    m = api.load(WGAN_CLIP, dims={"B": 16})
    cfg = parse_train(m)
    critic = next(g for g in cfg.groups if g.name == "critic")
    (c,) = [k.c for k in critic.constraints]
    lr = critic.optimizer.kwargs["lr"]
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) for k, v in m.init_params(2).items()}
    batch = {"x": rng.standard_normal((16, 2))}
    dtype = "f32" if backend == "onnx" else "f64"
    out, feeds = _step_once(m, cfg, critic, params, batch, backend, dtype)
    (z,) = [v for k, v in feeds.items() if k not in params and k not in ("x", "step")
            and not k.startswith("opt.")]
    loss, want = _torch_critic_step(params, batch["x"], z, c, lr)
    # float64 on numpy/torch: only summation order differs; onnx runs float32 here
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "f32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["loss"], loss, **tol)
    clipped = 0
    for k, w in want.items():
        np.testing.assert_allclose(out["new:" + k], w, err_msg=k, **tol)
        clipped += int((np.abs(w) == c).sum())
    assert clipped > 0  # Glorot weights exceed c: the projection is active
    assert not any(k.startswith("new:gen") for k in out)  # the generator is not stepped


def test_wgan_clip_run_keeps_the_critic_in_the_box(tmp_path):
    payload, tensors, meta = train_cli(WGAN_CLIP, tmp_path / "run", "--steps", 60)
    assert meta["position"]["group_steps"] == {"critic": 300, "generator": 60}
    p = checkpoint.namespace(tensors, checkpoint.PARAMS)
    c = 0.05
    critic = [v for k, v in p.items() if k.startswith("critic.")]
    gen = [v for k, v in p.items() if k.startswith("gen.")]
    assert max(np.abs(v).max() for v in critic) <= c
    assert sum(int((np.abs(v) == np.float32(c)).sum()) for v in critic) > 0
    assert max(np.abs(v).max() for v in gen) > c  # the generator is not clipped
    assert np.isfinite(payload["train"]["critic_loss"])


# ---- early stopping and averaging: their effect ------------------------------------------------

LINREG = (SPECS / "linear_regression.dl").read_text()
LINREG = LINREG[:LINREG.index("train ")]


def test_early_stopping_stops_patience_after_the_best_epoch_and_restores_it(tmp_path):
    """A noisy SGD run (lr near the stability limit, batch 4): the validation loss goes
    up and down. The run must stop exactly `patience` evaluations after the minimum of
    the logged validation curve and report (and checkpoint) that epoch's values."""
    path = _write(tmp_path, LINREG + """
train LinearRegression on linreg {
  batch 4
  epochs 40
  optimizer sgd(lr = 0.15)
  early_stop val.mse patience 3
}
""")
    payload, tensors, _ = train_cli(path, tmp_path / "run")
    hist = _history(tmp_path / "run")
    val = [row["val_mse"] for row in hist]
    best = int(np.argmin(val))
    assert payload["stopped_early"] and len(hist) == best + 1 + 3 < 40
    assert all(v > val[best] for v in val[best + 1:])
    assert payload["best"]["epoch"] == best + 1
    # the restored parameters give the best epoch's validation loss (float32 rounding of
    # one evaluation pass vs the csv's printed value)
    np.testing.assert_allclose(payload["val"]["mse"], val[best], rtol=1e-5)
    p = checkpoint.namespace(tensors, checkpoint.PARAMS)
    last = checkpoint.namespace(tensors, checkpoint.TRAIN)
    assert not np.array_equal(p["w"], last["w"])  # not the last iterate


def test_polyak_average_has_lower_loss_variance_than_the_last_iterate(tmp_path):
    """Same seed, same raw SGD trajectory; evaluating the average instead of the last
    iterate must cut the spread of the validation loss (noise ~ lr * gradient noise,
    averaged over ~1/(1 - decay) = 20 steps)."""
    base = LINREG + """
train LinearRegression on linreg {
  batch 4
  steps 600
  eval_every 20
  optimizer sgd(lr = 0.1)
  AVG
}
"""
    curves = {}
    for name, avg in (("last", ""), ("polyak", "average polyak(decay = 0.95)"),
                      ("uniform", "average uniform"), ("checkpoints", "average checkpoints(n = 5)")):
        train_cli(_write(tmp_path, base.replace("AVG", avg), f"{name}.dl"), tmp_path / name)
        curves[name] = np.array([r["val_mse"] for r in _history(tmp_path / name)])[10:]
    # measured (evaluations 11-30): std 1.3e-3 (last), 3.0e-4 (polyak), 3.0e-5 (uniform),
    # 3.0e-4 (checkpoints, n = 5); mean 0.0123, 0.0106, 0.0102, 0.0108
    assert curves["polyak"].std() < 0.5 * curves["last"].std(), curves
    assert curves["polyak"].mean() < curves["last"].mean()
    assert curves["uniform"].std() < 0.5 * curves["last"].std()
    assert curves["checkpoints"].std() < 0.5 * curves["last"].std(), curves
    assert curves["checkpoints"].mean() < curves["last"].mean()


def test_checkpoint_average_is_the_mean_of_the_last_evaluations(tmp_path):
    """`average checkpoints(n = 3)` deploys (params/) the mean of the raw params at the
    last 3 evaluations; each of those equals the last iterate of a shorter run with the
    same seed (runs are deterministic), so the reference needs no access to the trainer."""
    text = LINREG + """
train LinearRegression on linreg {
  batch 4
  steps 100
  eval_every 20
  optimizer sgd(lr = 0.1)
  AVG
}
"""
    path = _write(tmp_path, text.replace("AVG", "average checkpoints(n = 3)"), "ck.dl")
    payload, tensors, _ = train_cli(path, tmp_path / "ck")
    plain = _write(tmp_path, text.replace("AVG", ""), "plain.dl")
    raws = [checkpoint.namespace(train_cli(plain, tmp_path / f"r{k}", "--steps", k)[1],
                                 checkpoint.TRAIN) for k in (60, 80, 100)]
    deployed = checkpoint.namespace(tensors, checkpoint.PARAMS)
    for k in ("w", "b"):
        want = np.mean([r[k].astype(np.float64) for r in raws], 0)
        np.testing.assert_allclose(deployed[k], want, rtol=1e-6)  # float32 mean
        assert not np.allclose(deployed[k], raws[-1][k], rtol=1e-4)
    # a resume restores the ring: 100 steps in two halves deploy the same average
    train_cli(path, tmp_path / "halves", "--steps", 60)
    _, resumed, _ = train_cli(path, tmp_path / "halves", "--steps", 100, "--resume")
    for k in ("w", "b"):
        np.testing.assert_array_equal(checkpoint.namespace(resumed, checkpoint.PARAMS)[k],
                                      deployed[k])


# ---- fine-tuning: init_from and freeze ---------------------------------------------------------

PRE = NET + """
train Net on moons(n = 256) {
  batch 32
  epochs 6
  optimizer adam(lr = 0.02)
}
"""


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    payload, tensors, _ = train_cli(_write(d, PRE, "pre.dl"), d / "run")
    return d / "run", payload, checkpoint.namespace(tensors, checkpoint.PARAMS)


def test_init_from_a_prefix_and_freeze_it(tmp_path, pretrained):
    run, _, pre = pretrained
    text = PRE.replace("epochs 6", f'epochs 2\n  init_from "{run}/checkpoint.safetensors" dense0'
                                  "\n  freeze dense0\n  seed 3")
    _, tensors, _ = train_cli(_write(tmp_path, text), tmp_path / "ft")
    p = checkpoint.namespace(tensors, checkpoint.PARAMS)
    state = checkpoint.namespace(tensors, checkpoint.TRAIN)
    for k in ("dense0.W", "dense0.b"):  # loaded and never updated
        np.testing.assert_array_equal(p[k], pre[k])
        assert not any(s.startswith(f"opt.{k}.") for s in state)  # no optimizer state
    m = api.load(_write(tmp_path, text))
    fresh = m.init_params(3)
    assert not np.allclose(p["dense1.W"], pre["dense1.W"])      # not loaded ...
    assert not np.allclose(p["dense1.W"], fresh["dense1.W"])    # ... but trained
    assert "opt.dense1.W.m" in state


def test_init_from_everything_starts_at_the_pretrained_loss(tmp_path, pretrained):
    """The first epoch of a run initialised from the pretrained params has (about) the
    pretrained loss; a run from scratch starts far above it."""
    run, pre_payload, _ = pretrained
    tuned = PRE.replace("epochs 6", f'epochs 1\n  init_from "{run}"')
    scratch = PRE.replace("epochs 6", "epochs 1")
    ft, _, _ = train_cli(_write(tmp_path, tuned, "a.dl"), tmp_path / "a")
    sc, _, _ = train_cli(_write(tmp_path, scratch, "b.dl"), tmp_path / "b")
    # Adam's first steps from fresh moments perturb the optimum a little: 20%
    assert ft["train"]["ce"] < 1.2 * pre_payload["train"]["ce"]
    assert sc["train"]["ce"] > 1.5 * ft["train"]["ce"], (sc["train"], ft["train"])


def test_bad_init_from_is_located(tmp_path, pretrained):
    run, _, _ = pretrained
    bad_shape = NET.replace("hidden = 8", "hidden = 5") + \
        f'train Net on moons {{\n  init_from "{run}"\n}}\n'
    rc, payload = cli_json("train", _write(tmp_path, bad_shape), "--out", tmp_path / "x")
    assert rc == 1 and "is [2, 8] in" in payload["message"] and payload["line"] == 10, payload
    missing = NET + 'train Net on moons {\n  init_from "nowhere.safetensors"\n}\n'
    rc, payload = cli_json("train", _write(tmp_path, missing), "--out", tmp_path / "y")
    assert rc == 1 and "no checkpoint at" in payload["message"] and payload["line"] == 10
    rc, payload = cli_json("check", _write(tmp_path, NET + "train Net on moons {\n  freeze dens\n}\n"))
    assert rc == 1 and "no parameters under `dens`" in payload["message"]


# ---- data augmentation ---------------------------------------------------------------------------

def test_augmentations_against_numpy_references():
    from compiler.training.augment import Augment, apply
    rng = np.random.default_rng(0)
    img = rng.standard_normal((400, 1, 5, 6)).astype(np.float32)
    batch = {"image": img, "y": np.arange(400)}
    noisy = apply([Augment("image", "noise", {"std": 0.3})], batch, seed=1, round_=7)["image"]
    d = (noisy - img).ravel()
    # 12000 N(0, 0.09) draws: the sample std is within 3% of 0.3 (its sd is ~0.65%)
    assert abs(d.std() - 0.3) < 0.03 * 0.3 and abs(d.mean()) < 0.01
    flipped = apply([Augment("image", "flip", {"axis": -1, "p": 0.5})], batch, 1, 7)["image"]
    same = np.array([np.array_equal(f, x) for f, x in zip(flipped, img)])
    mirrored = np.array([np.array_equal(f, x[..., ::-1]) for f, x in zip(flipped, img)])
    assert np.all(same ^ mirrored) and 150 < mirrored.sum() < 250  # Binomial(400, 0.5)
    cropped = apply([Augment("image", "crop", {"pad": 2})], batch, 1, 7)["image"]
    padded = np.pad(img, [(0, 0), (0, 0), (2, 2), (2, 2)])
    offsets = set()
    for i in range(400):  # each example is a 5x6 window of its zero-padded self
        hits = [(a, b) for a in range(5) for b in range(5)
                if np.array_equal(cropped[i], padded[i, :, a:a + 5, b:b + 6])]
        assert hits, i
        offsets.add(hits[0])
    assert len(offsets) > 20  # offsets spread over the 25 windows
    again = apply([Augment("image", "crop", {"pad": 2})], batch, 1, 7)["image"]
    np.testing.assert_array_equal(cropped, again)  # seeded by (seed, round)
    other = apply([Augment("image", "crop", {"pad": 2})], batch, 1, 8)["image"]
    assert not np.array_equal(cropped, other)
    np.testing.assert_array_equal(batch["image"], img)  # the batch is not modified


AUG = NET + """
train Net on moons(n = 256) {
  batch 32
  epochs 3
  optimizer adam(lr = 0.02)
  AUG
}
"""


def test_augmented_runs_are_reproducible_and_evaluate_clean_data(tmp_path, monkeypatch):
    from compiler.training import augment, datasets
    calls = []
    real = augment.apply
    monkeypatch.setattr(augment, "apply", lambda *a: calls.append(a[3]) or real(*a))
    text = AUG.replace("AUG", "augment x noise(std = 0.3)\n  augment x flip(axis = 1)")
    runs = [train_cli(_write(tmp_path, text, "a.dl"), tmp_path / f"a{i}") for i in range(2)]
    # once per training round (204 training rows: 7 batches x 3 epochs), never in evaluation
    assert calls == list(range(21)) * 2
    plain = train_cli(_write(tmp_path, AUG.replace("AUG", ""), "b.dl"), tmp_path / "b")
    pa, pb = (checkpoint.namespace(r[1], checkpoint.PARAMS) for r in (runs[0], plain))
    for k, v in pa.items():
        np.testing.assert_array_equal(v, checkpoint.namespace(runs[1][1], checkpoint.PARAMS)[k])
        assert not np.array_equal(v, pb[k])
    # the reported validation loss is that of the clean validation split
    m = api.load(_write(tmp_path, text, "a.dl"))
    _, val, _ = datasets.load("moons", n=256).split((0.8, 0.1, 0.1), seed=0)
    out = m.run({"x": val.fields["x"], "y": val.fields["y"]}, pa)
    np.testing.assert_allclose(runs[0][0]["val"]["ce"], out["ce"], rtol=1e-5)


@pytest.mark.parametrize("line, message", [
    ("augment z noise(std = 0.1)", "no input `z`"),
    ("augment y noise(std = 0.1)", "needs a float input"),
    ("augment x flip(axis = 0)", "axis 0 is the batch"),
    ("augment x crop(pad = 2)", "rank >= 3"),
    ("augment x blur(k = 3)", "unknown augmentation"),
    ("augment x noise(sd = 1)", "has no option `sd`"),
])
def test_bad_augmentations_are_located(tmp_path, line, message):
    rc, payload = cli_json("check", _write(tmp_path, NET + "train Net on moons {\n  " + line + "\n}\n"))
    assert rc == 1 and message in payload["message"] and payload["line"] == 10, payload


# ---- bagging: specs/bagging.dl -------------------------------------------------------------------

BAGGING = SPECS / "bagging.dl"


def test_bootstrap_counts_are_seeded_samples_with_replacement():
    from compiler.training.bagging import counts
    c = counts(600, 4, seed=3)
    assert c.shape == (600, 4) and np.all(c.sum(0) == 600)  # n draws per member
    # the fraction of distinct rows of a bootstrap sample is ~ 1 - 1/e = 0.632 (sd ~0.02)
    assert np.all(np.abs((c > 0).mean(0) - (1 - np.exp(-1))) < 0.06)
    assert len({tuple(col) for col in c.T}) == 4                # one sample per member
    np.testing.assert_array_equal(c, counts(600, 4, seed=3))
    assert not np.array_equal(c, counts(600, 4, seed=4))


def _bagging_run(tmp_path, seed, epochs=20):
    from compiler.training import datasets
    _, tensors, _ = train_cli(BAGGING, tmp_path / f"s{seed}", "--seed", seed, "--epochs", epochs)
    p = checkpoint.namespace(tensors, checkpoint.PARAMS)
    train, _, test = datasets.load("linreg", n=120, noise=0.5).split((0.5, 0.25, 0.25), seed=0)
    m = api.load(BAGGING)
    run = lambda part: m.run({"x": part.fields["x"], "y": part.fields["y"],  # noqa: E731
                              "bag": np.ones((part.n, 5), np.float32)}, p)
    return run(train), run(test), train, test


def test_bagging_members_see_their_own_bootstrap_sample(tmp_path):
    """Each member fits its own sample: its error on the rows of its sample is below
    its error on the rows it never saw (out of bag)."""
    from compiler.training.bagging import counts
    tr, _, train, _ = _bagging_run(tmp_path, 1)
    c = counts(train.n, 5, seed=1)
    err = (tr["members"] - train.fields["y"][None]) ** 2           # [K, n]
    ratios = []
    for k in range(5):
        in_bag, oob = err[k][c[:, k] > 0].mean(), err[k][c[:, k] == 0].mean()
        assert in_bag < oob, (k, in_bag, oob)
        ratios.append(in_bag / oob)
    # measured: in-bag / out-of-bag error 0.44, 0.73, 0.50, 0.54, 0.38 (mean 0.52)
    assert np.mean(ratios) < 0.7, ratios


def test_bagged_prediction_has_lower_variance_than_a_member(tmp_path):
    """Over 3 runs (seeds: other bootstrap samples and inits), the bagged prediction on
    each test point varies less than a single member's; and by convexity of the squared
    error the ensemble's test error is at most the members' mean error."""
    ens, mem = [], []
    for seed in (0, 1, 2):
        _, te, _, test = _bagging_run(tmp_path, seed)
        ens.append(te["yhat"])
        mem.append(te["members"])
        assert te["ensemble_mse"] <= te["mse"] + 1e-6
    ens, mem = np.array(ens), np.concatenate(mem)                  # [3, N], [15, N]
    var_ens, var_mem = ens.var(0).mean(), mem.var(0).mean()
    # measured: 0.0044 (bagged) vs 0.032 (one member), ratio 0.14 (a rough estimate from
    # 3 runs; 1/K = 0.2 would be the ratio for independent members)
    assert var_ens < 0.5 * var_mem, (var_ens, var_mem)


def test_top_level_constrain_reaches_the_player_that_trains_the_params(tmp_path):
    """`constrain critic clip(c)` outside the players is the same projection as inside
    the critic player: the same step results (a player's own parameters only)."""
    text = WGAN_CLIP.read_text()
    line = "    constrain critic clip(0.05)            # w <- clip(w, -c, c) after each critic step\n"
    assert line in text
    top = _write(tmp_path, text.replace(line, "").replace("  seed 0\n",
                                                          "  seed 0\n  constrain critic clip(0.05)\n"),
                 "top.dl")
    outs = []
    for path in (WGAN_CLIP, top):
        m = api.load(path, dims={"B": 8})
        cfg = parse_train(m)
        gen = next(g for g in cfg.groups if g.name == "generator")
        assert not any(c.params and set(c.params) & set(gen.params) for c in gen.constraints)
        critic = next(g for g in cfg.groups if g.name == "critic")
        params = {k: v.astype(np.float64) for k, v in m.init_params(2).items()}
        out, _ = _step_once(m, cfg, critic, params, {"x": np.ones((8, 2))})
        outs.append(out)
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)


def test_exported_onnx_train_step_applies_the_projection(tmp_path):
    """`dlc compile --to onnx --train-step`: onnxruntime running the exported critic
    step gives the NumPy step's clipped weights."""
    import onnxruntime as ort
    rc, payload = cli_json("compile", WGAN_CLIP, "--to", "onnx", "--train-step", "-o",
                       tmp_path / "step.onnx")
    assert rc == 0, payload
    m = api.load(WGAN_CLIP, dims={"B": 8})
    cfg = parse_train(m)
    critic = next(g for g in cfg.groups if g.name == "critic")
    params = dict(m.init_params(2))
    out, feeds = _step_once(m, cfg, critic, params,
                            {"x": np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)},
                            dtype="f32")
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"))
    names = [i.name for i in sess.get_inputs()]
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {k: np.asarray(feeds[k], np.float32) for k in names})))
    for k, v in out.items():
        if k.startswith("new:critic."):
            assert np.abs(got[k]).max() <= 0.05
            # float32, the same graph on two runtimes: rounding only
            np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_augmented_run_resumes_bit_exactly(tmp_path):
    text = AUG.replace("AUG", "augment x noise(std = 0.3)").replace("epochs 3", "epochs 2")
    path = _write(tmp_path, text)
    _, straight, _ = train_cli(path, tmp_path / "straight")
    train_cli(path, tmp_path / "split", "--epochs", 1)
    _, resumed, _ = train_cli(path, tmp_path / "split", "--epochs", 2, "--resume")
    for k, v in checkpoint.namespace(straight, checkpoint.TRAIN).items():
        np.testing.assert_array_equal(v, checkpoint.namespace(resumed, checkpoint.TRAIN)[k])


def test_a_general_projection_fn_is_applied_to_the_update(tmp_path):
    """`fn(w) -> EXPR` in the model's scope (a hyperparameter `r`): new:P == f(sgd(P))."""
    path = _write(tmp_path, NET.replace("hidden = 8", "hidden = 8, r = 0.7") + """
train Net on moons(n = 64) {
  optimizer sgd(lr = 0.5)
  constrain dense1.W fn(w) -> w * minimum(1.0, r / sqrt(sum(w * w)))   # Frobenius ball
  constrain dense0.b fn(b) -> b - mean(b)                              # zero-mean bias
}
""")
    out, sgd = _constrained_sgd_step(path)
    w = sgd["dense1.W"]
    assert np.linalg.norm(w) > 0.7  # the ball constraint is active
    np.testing.assert_allclose(out["new:dense1.W"], w * 0.7 / np.linalg.norm(w), rtol=1e-12)
    np.testing.assert_allclose(out["new:dense0.b"], sgd["dense0.b"] - sgd["dense0.b"].mean(),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["new:dense0.W"], sgd["dense0.W"], rtol=1e-12)


@pytest.mark.parametrize("proj, message", [
    ("fn(w) -> sum(w)", "must return a tensor like it"),
    ("fn(w, v) -> w", "takes one argument"),
])
def test_bad_projection_fns_are_located(tmp_path, proj, message):
    path = _write(tmp_path, NET + f"train Net on moons {{\n  constrain dense0.W {proj}\n}}\n")
    rc, payload = cli_json("train", path, "--out", tmp_path / "run", "--steps", 1)
    assert rc == 1 and message in payload["message"] and payload["line"] == 10, payload


@pytest.mark.parametrize("lines, message", [
    ("average checkpoints(n = 1)", "must be an integer >= 2"),
    ("average checkpoints(k = 3)", "has no option `k`"),
    ("average checkpoints(n = 3)\n  early_stop val.ce patience 2", "cannot be combined"),
])
def test_bad_checkpoint_averages_are_located(tmp_path, lines, message):
    rc, payload = cli_json("check", _write(tmp_path, NET + "train Net on moons {\n  " + lines + "\n}\n"))
    assert rc == 1 and message in payload["message"] and payload["line"] == 10, payload
