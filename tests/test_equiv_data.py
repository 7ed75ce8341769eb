"""`dlc equiv` feeds batches of the train block's data set by default (as gradcheck does),
random inputs with --random-inputs, --dims or without a data set; its tables go through
rich, coloured only when asked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compiler import api
from compiler.commands.cli import main
from compiler.commands.equiv import phases
from compiler.commands.equiv.data import JITTER, RANDOM, data_source
from compiler.commands.equiv.report import render
from compiler.commands.equiv.run import equiv
from compiler.training import datasets

ROOT = Path(__file__).resolve().parents[1]
LINREG = str(ROOT / "specs" / "linear_regression.dl")


def test_batches_are_rows_of_the_data_set():
    m = api.load(str(ROOT / "specs" / "mlp.dl"))
    src = data_source(m)
    assert src.name == "digits"
    ds = datasets.load("digits")
    b0 = phases._sample_data(m, 0, 8, source=src)
    b1 = phases._sample_data(m, 0, 8, stream=1, source=src)
    for b in (b0, b1):
        assert b["x"].shape == (8, 64) and b["x"].dtype == np.float32 and b["y"].dtype == np.int64
        # each row is a digit of the data set (its label with it), up to the jitter
        d = np.abs(b["x"][:, None, :] - ds.x[None, :, :]).max(-1)
        nearest = d.argmin(1)
        assert np.all(d.min(1) < 6 * JITTER)
        np.testing.assert_array_equal(b["y"], ds.y[nearest])
    assert not np.array_equal(b0["x"], b1["x"])  # rounds see different batches
    # random inputs would be N(0, 1): unlike pixels in [0, 1]
    rnd = phases._sample_data(m, 0, 8, source=RANDOM)
    assert rnd["x"].min() < -0.5 and b0["x"].min() > -0.1


def test_no_data_set_means_random():
    m = api.load(text="model M() {\n  input x: f32[B, 3]\n  output y = relu(x)\n}\n")
    assert data_source(m) is RANDOM
    assert equiv(m, steps=0, autograd=False, data=True).data == "random"


def test_cli_uses_the_data_set_by_default(capsys):
    code = main(["equiv", LINREG, "--steps", "1", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["data"] == "linreg"
    code = main(["equiv", LINREG, "--steps", "1", "--json", "--random-inputs"])
    assert code == 0 and json.loads(capsys.readouterr().out)["data"] == "random"
    code = main(["equiv", LINREG, "--steps", "0", "--json", "--dims", "B=5"])
    assert code == 0 and json.loads(capsys.readouterr().out)["data"] == "random"


def test_tables_plain_when_piped_coloured_when_asked(capsys, monkeypatch):
    m = api.load(LINREG)
    r = equiv(m, steps=1, data=True)
    for verbose in (False, True):
        plain = render(r, verbose=verbose)
        assert "\x1b[" not in plain and "all backends agree" in plain and "backend pair" in plain
        coloured = render(r, verbose=verbose, color=True)
        assert "\x1b[" in coloured
    assert "\x1b[32mok" in render(r, verbose=True, color=True)  # verdicts in green
    # the command: capsys is not a terminal, so no colour; NO_COLOR is honoured on one
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["equiv", LINREG, "--steps", "0"]) == 0
    assert "\x1b[" not in capsys.readouterr().out
    monkeypatch.delenv("NO_COLOR")
    assert main(["equiv", LINREG, "--steps", "0"]) == 0
    assert "\x1b[" in capsys.readouterr().out  # a terminal: colour
    assert main(["equiv", LINREG, "--steps", "0", "--no-color"]) == 0
    assert "\x1b[" not in capsys.readouterr().out
