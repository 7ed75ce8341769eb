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
