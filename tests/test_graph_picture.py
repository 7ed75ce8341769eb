"""`dlc graph`: one Graphviz cluster per layer instance; the SVG renders when `dot` exists."""
import json
import shutil

import pytest

from compiler.commands.cli import main


def test_dot_has_one_cluster_per_layer(tmp_path, capsys):
    out = tmp_path / "cnn.dot"
    assert main(["graph", "specs/cnn.dl", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = out.read_text()
    assert info["layers"] == sorted(["convblock0", "convblock0.conv", "convblock1",
                                     "convblock1.conv", "dense0", "dense1"])
    assert text.count("subgraph cluster_") == 6
    assert "[B, 16, 8, 8]" in text  # shapes on the edges


def test_grad_adds_nodes(tmp_path):
    a, b = tmp_path / "f.dot", tmp_path / "g.dot"
    assert main(["graph", "specs/mlp.dl", "-o", str(a)]) == 0
    assert main(["graph", "specs/mlp.dl", "-o", str(b), "--grad"]) == 0
    assert b.read_text().count("->") > a.read_text().count("->")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_svg_opens(tmp_path):
    import xml.etree.ElementTree as ET
    out = tmp_path / "mlp.svg"
    assert main(["graph", "specs/mlp.dl", "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    clusters = [e for e in root.iter() if e.get("class") == "cluster"]
    assert len(clusters) == 3


def test_train_step_draws_forward_gradients_and_optimizer_update(tmp_path, capsys):
    out = tmp_path / "step.dot"
    assert main(["graph", "specs/mlp.dl", "--train-step", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = out.read_text()
    # one cluster per layer (as the forward picture), plus the optimizer's update
    assert info["layers"] == ["dense0", "dense1", "dense2"]
    assert text.count("subgraph cluster_") == 4 and 'label="update (adam)"' in text
    assert all(info["nodes"][k] > 0 for k in ("forward", "gradient", "update"))
    # what the step returns: every new param and Adam slot, and the learning rate
    for name in ("new:dense0.W", "new:opt.dense0.W.m", "new:opt.dense2.b.v"):
        assert f'label="{name}"' in text
    assert "label=lr," in text
    assert 'out_new:"' not in text  # no DOT ports made of result names
    assert "fillcolor=lightcyan" in text and "fillcolor=mistyrose" in text
    # more than the gradients picture, which has no update
    grad = tmp_path / "grad.dot"
    assert main(["graph", "specs/mlp.dl", "--grad", "-o", str(grad)]) == 0
    assert "update" not in grad.read_text()
    assert text.count("->") > grad.read_text().count("->")


def test_train_step_of_players_has_a_cluster_per_player(tmp_path, capsys):
    out = tmp_path / "gan.dot"
    assert main(["graph", "specs/wgan_gp.dl", "--train-step", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = out.read_text()
    assert "player critic" in text and "player generator" in text
    assert {"critic.dense0", "gen.dense0"} <= set(info["layers"])
    assert text.count('label="update (adam)"') == 2
