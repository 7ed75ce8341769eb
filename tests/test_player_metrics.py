"""Players' metrics (WGAN-GP's `wasserstein`, `grad_penalty`) reach metrics.csv and the
plot: the critic's step logs the metrics its loss already computes."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from compiler import api
from compiler.commands.train import run_training
from compiler.training.spec import model_for, parse_train
from compiler.training.step import build_step

ROOT = Path(__file__).resolve().parents[1]
WGAN = ROOT / "specs" / "wgan_gp.dl"


def test_metrics_are_logged_by_the_player_whose_loss_computes_them():
    m = api.load(str(WGAN))
    cfg = parse_train(m)
    tm = model_for(m, cfg)
    logged = {grp.name: set(build_step(tm, cfg, grp, 10).logged) for grp in cfg.groups}
    assert logged["critic"] - {"lr"} == {"loss", "wasserstein", "grad_penalty"}
    assert logged["generator"] - {"lr"} == {"loss"}  # it does not compute D(x): no wasserstein there


def test_tiny_wgan_run_writes_players_metrics(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure
    legends = []
    save = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, *a, **kw):  # what the plot shows, read before it is closed
        legends.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        return save(fig, *a, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    spec = tmp_path / "wgan.dl"
    text = WGAN.read_text()
    spec.write_text(text.replace("gaussians(n = 2048)", "gaussians(n = 64)").replace("batch 256", "batch 16")
                    .replace("steps 1000", "steps 8").replace("hidden = 64", "hidden = 8"))
    out = tmp_path / "run"
    args = SimpleNamespace(seed=0, out=str(out), quiet=True, json=True, backend="numpy",
                           device="cpu", resume=False, epochs=None, steps=None)
    code, payload = run_training(api.load(str(spec)), args)
    assert code == 0, payload
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows and {"train_wasserstein", "train_grad_penalty", "train_critic_loss"} <= set(rows[0])
    for r in rows:
        if not r.get("train_critic_loss"):
            continue  # the final test row, if any
        w, gp, loss = (float(r[k]) for k in ("train_wasserstein", "train_grad_penalty", "train_critic_loss"))
        # logged by the same critic steps as its loss: L_D = -W + lambda gp, exactly up to the
        # float32 rounding of the three means (lambda = 10)
        assert loss == pytest.approx(-w + 10.0 * gp, rel=1e-4, abs=1e-5)
        assert gp >= 0
    assert {"train_wasserstein", "train_grad_penalty"} <= set(legends)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
