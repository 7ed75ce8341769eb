"""`dlc train --tensorboard` (event file read back), plain progress off a terminal."""
import io
import json

from compiler.commands.cli import main
from compiler.training.reporting import PlainProgress, make_progress


def test_tensorboard_scalars_read_back(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert main(["train", "specs/mlp.dl", "--epochs", "2", "--out", str(out), "--json",
                 "--tensorboard"]) == 0
    payload = json.loads(capsys.readouterr().out)
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/ce", "train/acc", "val/ce", "val/acc", "lr/lr"} <= set(tags), tags
    val = acc.Scalars("val/acc")
    assert [e.step for e in val] == sorted(e.step for e in val) and len(val) == 2
    assert 0.5 < val[-1].value <= 1.0 and payload["test"]["acc"] > 0.5
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[-1].startswith("test,")


def test_plain_progress_when_not_a_terminal(tmp_path):
    stream = io.StringIO()
    assert isinstance(make_progress(stream), PlainProgress)
    from compiler import api
    from compiler.commands.train import run_training
    import argparse
    args = argparse.Namespace(epochs=1, steps=None, out=str(tmp_path / "r"), quiet=False,
                              json=False, seed=None, backend="numpy", device="cpu",
                              resume=False, tensorboard=False, no_color=False)
    import compiler.training.reporting as rep
    orig = rep.sys.stderr
    rep.sys.stderr = stream
    try:
        assert run_training(api.load("specs/mlp.dl"), args)[0] == 0
    finally:
        rep.sys.stderr = orig
    text = stream.getvalue()
    assert "epoch 1" in text and "steps/s" in text
    assert "\r" not in text and "\x1b" not in text
