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


def test_tensorboard_graph_has_one_node_per_graph_node(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from compiler import api
    out = tmp_path / "run"
    assert main(["train", "specs/mlp.dl", "--steps", "2", "--out", str(out), "--json",
                 "--tensorboard"]) == 0
    capsys.readouterr()
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    gd = acc.Graph()  # the GraphDef read back from the event file
    from compiler.training.spec import model_for, parse_train
    m = api.load("specs/mlp.dl")
    g = model_for(m, parse_train(m)).graph  # the model the train block trains (hidden = 256)
    ir = g.topo_order(list(g.outputs.values()))
    nodes = {n.name: n for n in gd.node}
    assert len(gd.node) == len(ir) + len(g.outputs)  # one per IR node, one per output
    assert {"x", "y", "dense0/W", "dense2/b", "losss/ce", "metrics/acc"} <= set(nodes)
    # every layer instance is a name scope (TensorBoard's boxes); ops and edges are the IR's
    assert {n.split("/")[0] for n in nodes if "/" in n} >= {"dense0", "dense1", "dense2"}
    matmuls = [n for n in gd.node if n.op == "matmul"]
    assert len(matmuls) == sum(1 for n in ir if g.node(n).op == "matmul") and matmuls
    assert any(n.name.startswith("dense0/") and "x" in n.input for n in matmuls)
    w = nodes["dense0/W"].attr["_output_shapes"].list.shape[0]
    assert [d.size for d in w.dim] == list(g.type(g.by_name("param")["dense0.W"]).shape)
    x = nodes["x"].attr["_output_shapes"].list.shape[0]
    assert [d.size for d in x.dim] == [-1, 64] and x.dim[0].name == "B"  # B is symbolic
