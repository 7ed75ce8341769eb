"""`dlc summary`: per-layer parameters and MACs against counts worked out by hand
(torchinfo's conventions: a Dense(n_in -> n_out) on a batch B does B*n_in*n_out MACs;
a conv does prod(output) * C_in * kh * kw; FLOPs = 2 * MACs). Exact integers."""
import json

from compiler import api
from compiler.commands.cli import main
from compiler.commands.layers import layer_table

B = 64


def _rows(info):
    return {r["layer"]: r for r in info["rows"]}


def test_mlp_counts_by_hand():
    info = layer_table(api.load("specs/mlp.dl"), {"B": B})
    r = _rows(info)
    # 64 -> 128 -> 128 -> 10 (the model's default hidden=128)
    assert [r[k]["params"] for k in ("dense0", "dense1", "dense2")] == [
        64 * 128 + 128, 128 * 128 + 128, 128 * 10 + 10]
    assert [r[k]["macs"] for k in ("dense0", "dense1", "dense2")] == [
        B * 64 * 128, B * 128 * 128, B * 128 * 10]
    assert r["dense2"]["output_shape"] == ["B", 10]
    assert info["total_params"] == 26122
    assert info["total_macs"] == B * (64 * 128 + 128 * 128 + 128 * 10)
    assert info["total_flops"] == 2 * info["total_macs"]
    assert info["param_bytes"] == 4 * 26122


def test_cnn_counts_by_hand_and_nesting():
    info = layer_table(api.load("specs/cnn.dl"), {"B": B}, dtype="f64")
    r = _rows(info)
    assert r["convblock0.conv"]["depth"] == 1 and r["convblock0"]["depth"] == 0
    assert r["convblock0"]["params"] == 16 * 1 * 9 + 16
    assert r["convblock1"]["params"] == 32 * 16 * 9 + 32
    assert r["convblock0.conv"]["macs"] == (B * 16 * 8 * 8) * (1 * 9)
    assert r["convblock1.conv"]["macs"] == (B * 32 * 4 * 4) * (16 * 9)
    assert r["dense0"]["macs"] == B * 128 * 64 and r["dense1"]["macs"] == B * 64 * 10
    assert r["convblock0.conv"]["output_shape"] == ["B", 16, 8, 8]
    assert info["total_params"] == 13706 and info["param_bytes"] == 8 * 13706


def test_repeat_is_nested_and_cli_json(capsys):
    assert main(["summary", "specs/transformer.dl", "--dims", "B=2", "--dims", "T=10",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    r = _rows(info)
    assert r["encoder"]["params"] == r["encoder.0"]["params"] + r["encoder.1"]["params"]
    assert r["encoder.0.self_attn.q_proj"]["depth"] == 3
    assert r["encoder.0.self_attn.q_proj"]["macs"] == 2 * 10 * 32 * 32


def test_text_table_and_check(capsys):
    assert main(["summary", "specs/mlp.dl", "--dims", "B=64"]) == 0
    out = capsys.readouterr().out
    assert "dense1" in out and "[B, 128]" in out and "1,654,784" in out and "B=64" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert main(["check", "specs/mlp.dl"]) == 0
    assert "dense2" in capsys.readouterr().out
    assert main(["summary", "specs/mlp.dl", "--dims", "B"]) == 2
