"""Data that cannot index the model is a located error before the first step
(compiler/training/data_check.py); before, `dlc train` died with NumPy's IndexError."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.commands.cli import main
from compiler.training.data_check import index_limits

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER = str(ROOT / "specs" / "transformer.dl")


def test_token_ids_past_the_vocabulary_are_a_located_error(tmp_path, capsys):
    rc = main(["train", TRANSFORMER, "--set", "symbols=2", "--steps", "2",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "IndexError" not in err
    assert "data field `x` holds values in [0, 9]" in err and "table of 4 rows" in err
    assert "transformer.dl:37" in err and "^" in err  # at the train block's data line


def test_the_limit_is_found_through_layout_ops_and_fitting_data_passes(tmp_path, capsys):
    src = ("model M(v = 5) {\n  input ids: i64[B, T]\n  input y: i64[B]\n"
           "  h = reshape(ids, [-1]) |> Embedding(v, 3)\n"
           "  loss l = mean(h)\n}\n")
    m = api.load(text=src)
    rows, span = index_limits(m.graph)["ids"]
    assert rows == 5 and span is not None
    npz = tmp_path / "d.npz"
    np.savez(npz, ids=np.array([[0, 4], [1, 2]] * 8), y=np.zeros(16, np.int64))
    spec = tmp_path / "m.dl"
    spec.write_text(src + f'\ntrain M on "{npz}" {{\n  split 1 0\n  batch 4\n  steps 2\n'
                          f'  optimizer sgd(lr = 0.1)\n}}\n')
    assert main(["train", str(spec), "--out", str(tmp_path / "ok"), "--quiet"]) == 0
    np.savez(npz, ids=np.array([[0, -1], [1, 2]] * 8), y=np.zeros(16, np.int64))
    capsys.readouterr()
    assert main(["train", str(spec), "--out", str(tmp_path / "bad"), "--quiet"]) == 1
    assert "data field `ids` holds values in [-1, 2]" in capsys.readouterr().err  # NumPy would wrap -1


def test_api_feeds_past_the_table_are_a_feed_error_naming_the_input():
    # the same limits guard `Model.run`: NumPy would raise a bare IndexError, and wrap -1
    m = api.load(text="model M() {\n  input ids: i64[B]\n  output h = ids |> Embedding(4, 2)\n}\n")
    p = m.init_params()
    assert m.run({"ids": np.array([0, 3])}, p)["h"].shape == (2, 2)
    for bad in ([0, 4], [-1, 2]):
        with pytest.raises(api.FeedError, match=r"input `ids` holds values in .* table of 4 rows"):
            m.run({"ids": np.array(bad)}, p)
