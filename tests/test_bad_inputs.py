"""Garbage in: every kind of unusable input ends in a located error and exit code 1,
quickly, with no Python traceback. Bad command-line usage exits 2."""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.commands.cli import main

ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$", re.M)


def check(capsys, path, *args):
    t0 = time.perf_counter()
    rc = main(["check", str(path), *args])
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err, elapsed


def located(err: str, path) -> tuple[int, int, str]:
    m = HEADER.match(err.split("\n")[0])
    assert m, f"no file:line:col header in:\n{err[:500]}"
    assert m["file"] == str(path)
    return int(m["line"]), int(m["col"]), m["msg"]


def write(tmp_path, data, name="bad.dl"):
    p = tmp_path / name
    (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return p


def test_empty_file(tmp_path, capsys):
    p = write(tmp_path, "")
    rc, err, _ = check(capsys, p)
    assert rc == 1
    assert located(err, p) == (1, 1, f"{p} defines no model")


def test_whitespace_and_comments_only(tmp_path, capsys):
    p = write(tmp_path, "  \n\t\n# only a comment\n\n")
    rc, err, _ = check(capsys, p)
    assert rc == 1
    assert located(err, p)[2] == f"{p} defines no model"


def test_binary_file(tmp_path, capsys):
    rng = random.Random(0)
    data = bytes(rng.randrange(256) for _ in range(4096)) + b"\x00" * 16
    p = write(tmp_path, b"model M() {\n  x = 1" + data)
    rc, err, _ = check(capsys, p)
    assert rc == 1
    line, col, msg = located(err, p)
    assert "looks like a binary file" in msg
    first_nul = (b"model M() {\n  x = 1" + data).index(b"\x00")
    assert line == (b"model M() {\n  x = 1" + data)[:first_nul].count(b"\n") + 1
    assert "\x00" not in err


def test_nul_byte_in_an_otherwise_good_spec(tmp_path, capsys):
    p = write(tmp_path, b"model M() {\n  input x: f32[3]\x00\n  output y = x\n}\n")
    rc, err, _ = check(capsys, p)
    assert rc == 1 and located(err, p)[:2] == (2, 18)


def test_invalid_utf8(tmp_path, capsys):
    p = write(tmp_path, b"model M() {\n  input x: f32[3]\n  output y = x \xff\xfe\n}\n")
    rc, err, _ = check(capsys, p)
    assert rc == 1
    assert located(err, p) == (3, 16, "invalid UTF-8 (byte 0xff)")


def test_utf8_bom_is_accepted(tmp_path, capsys):
    p = write(tmp_path, "\ufeffmodel M() {\n  input x: f32[3]\n  output y = x\n}\n".encode("utf-8"))
    rc, err, _ = check(capsys, p)
    assert rc == 0, err


def test_windows_line_endings_are_accepted(tmp_path, capsys):
    p = write(tmp_path, b"model M() {\r\n  input x: f32[3]\r\n  output y = x\r\n}\r\n")
    rc, err, _ = check(capsys, p)
    assert rc == 0, err


def test_missing_file(tmp_path, capsys):
    p = tmp_path / "missing.dl"
    rc, err, _ = check(capsys, p)
    assert rc == 2  # bad usage
    assert err.strip() == f"no such file: {p}"


def test_directory(tmp_path, capsys):
    rc, err, _ = check(capsys, tmp_path)
    assert rc == 1
    assert err.strip() == f"error: {tmp_path} is a directory, not a .dl file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path, capsys):
    p = write(tmp_path, "model M() {}\n")
    p.chmod(0)
    rc, err, _ = check(capsys, p)
    assert rc == 1 and "cannot read" in err


def test_ten_megabyte_line(tmp_path, capsys):
    text = "model M() {\n  input x: f32[3]\n  y = " + "x + " * 2_500_000 + "x\n  output y\n}\n"
    assert len(text) > 10_000_000
    p = write(tmp_path, text)
    rc, err, elapsed = check(capsys, p)
    assert rc == 1
    line, col, msg = located(err, p)
    assert (line, col) == (3, 10_001)
    assert "lines are limited to 10,000" in msg
    assert elapsed < 5
    assert max(len(x) for x in err.split("\n")) < 200   # the excerpt is cut, not 10 MB


def test_many_lines_beyond_the_size_limit(tmp_path, capsys):
    text = "model M() {\n" + "  # a comment line of filler text\n" * 40_000 + "}\n"
    p = write(tmp_path, text)
    rc, err, elapsed = check(capsys, p)
    assert rc == 1
    line, col, msg = located(err, p)
    assert "specs are limited to 1,000,000" in msg
    assert 1 < line < 40_000 and elapsed < 5


DEEP = 100_000
PRE = "model M() {\n  input x: f32[3]\n  y = "
POST = "\n  output y\n}\n"


@pytest.mark.parametrize("kind, body", [
    ("parens", "(" * DEEP + "x" + ")" * DEEP),
    ("minus", "-" * DEEP + "x"),
    ("plus chain", "x + " * DEEP + "x"),
    ("brackets", "[" * DEEP + "x" + "]" * DEEP),
    ("power", "x ** " * DEEP + "x"),
], ids=lambda v: v if len(v) < 20 else "")
def test_deep_nesting_on_one_line(tmp_path, capsys, kind, body):
    p = write(tmp_path, PRE + body + POST)
    rc, err, elapsed = check(capsys, p)
    assert rc == 1
    line, col, _ = located(err, p)
    assert line == 3
    assert elapsed < 5


@pytest.mark.parametrize("kind, body, message", [
    ("parens", "(\n" * DEEP + "x" + ")\n" * DEEP, "brackets nested more than 200 deep"),
    ("brackets", "[\n" * DEEP + "x" + "]\n" * DEEP, "brackets nested more than 200 deep"),
    ("minus", "(" + "-\n" * DEEP + "x)", "more than 2000 operators"),
    ("not", "(" + "not\n" * DEEP + "x)", "more than 2000 operators"),
    ("plus chain", "(x" + " +\n x" * DEEP + ")", "more than 2000 operators"),
    ("pipe chain", "(x" + " |>\n relu" * DEEP + ")", "more than 2000 operators"),
    ("calls", "(" + "relu(\n" * DEEP + "x" + ")\n" * DEEP + ")", "brackets nested more than 200 deep"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_deep_nesting_over_many_lines(tmp_path, capsys, kind, body, message):
    """Newlines inside brackets are not statement ends, so these are single expressions
    with short lines: the depth and operator limits must catch them, fast."""
    p = write(tmp_path, PRE + body + POST)
    rc, err, elapsed = check(capsys, p)
    assert rc == 1
    line, col, msg = located(err, p)
    assert message in msg
    assert 3 < line < 3000
    assert elapsed < 5


@pytest.mark.parametrize("depth, ok", [(150, True), (250, False)])
def test_nesting_limit_is_about_200(tmp_path, capsys, depth, ok):
    p = write(tmp_path, PRE + "-" * depth + "x" + "\n  loss l = sum(y)\n}\n")
    rc, err, _ = check(capsys, p)
    assert rc == (0 if ok else 1), err
    if not ok:
        assert "nested more than 200 deep" in located(err, p)[2]


def test_long_but_reasonable_expression_is_fine(tmp_path, capsys):
    terms = " + ".join(f"x[{i % 3}]" for i in range(150))
    p = write(tmp_path, PRE + terms + POST)
    rc, err, _ = check(capsys, p)
    assert rc == 0, err


def test_many_small_statements_are_fine(tmp_path, capsys):
    body = "".join(f"  h{i} = h{i - 1} * 0.5 + x\n" for i in range(1, 400))
    p = write(tmp_path, "model M() {\n  input x: f32[3]\n  h0 = x\n" + body + "  output y = h399\n}\n")
    rc, err, _ = check(capsys, p)
    assert rc == 0, err


# ---- a real process: what a user at a shell sees --------------------------------------------

def _dlc(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_subprocess_binary_file(tmp_path):
    p = write(tmp_path, bytes(range(256)) * 8)
    r = _dlc("check", str(p))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert located(r.stderr, p)[2].endswith("looks like a binary file (a NUL byte), not a .dl spec")


def test_subprocess_deep_nesting(tmp_path):
    p = write(tmp_path, PRE + "(\n" * DEEP + "x" + ")\n" * DEEP + POST)
    r = _dlc("check", str(p))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "brackets nested more than 200 deep" in located(r.stderr, p)[2]


def test_subprocess_json_error_is_one_object(tmp_path):
    import json
    p = write(tmp_path, "model M() {\n  output y = q\n}\n")
    r = _dlc("check", str(p), "--json")
    assert r.returncode == 1 and r.stderr == ""
    assert json.loads(r.stdout)["message"] == "unknown name `q`"


# ---- bad usage: exit code 2 -------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["frobnicate", "specs/mlp.dl"],
    [],
    ["check"],
    ["compile", "specs/mlp.dl", "-o", "out.onnx"],          # no --to
    ["compile", "specs/mlp.dl", "--to", "tensorflow", "-o", "x"],
    ["check", "specs/mlp.dl", "--no-such-flag"],
    ["gradcheck", "specs/mlp.dl", "--seed", "zero"],
])
def test_bad_usage_exits_2(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    assert err.strip()


def test_bad_usage_in_a_real_process():
    r = _dlc("compile", "specs/mlp.dl", "-o", "x.onnx")
    assert r.returncode == 2
    assert "--to" in r.stderr and "Traceback" not in r.stderr
