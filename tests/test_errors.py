"""Every error a user can cause, as the user sees it: `file:line:col: error: ...`, the
user's own line, a caret under the culprit (right column, right width), notes and hints.

`tests/specs_bad/*.dl` is a catalogue of bad specs. Each starts with
``# expect: <part of the message> @ <line>:<col>`` (and optionally ``# args: ...``);
`test_catalogue` runs `dlc check` on each.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from compiler.commands.cli import main
from dsl.errors import DslError, ParseError, Source, Span
from dsl.parser import parse

BAD = Path(__file__).resolve().parent / "specs_bad"
CATALOGUE = sorted(BAD.glob("*.dl"))


def _header(path: Path):
    lines = path.read_text().split("\n")
    m = re.match(r"# expect: (.*) @ (\d+):(\d+)\s*$", lines[0])
    assert m, f"{path.name}: first line must be `# expect: <message> @ <line>:<col>`"
    args = lines[1][len("# args:"):].split() if lines[1].startswith("# args:") else []
    return m.group(1), int(m.group(2)), int(m.group(3)), args


def run_check(capsys, path, *args):
    rc = main(["check", str(path), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def check_text(tmp_path, capsys, text, *args, name="spec.dl"):
    p = tmp_path / name
    p.write_text(text)
    return (*run_check(capsys, p, *args), p)


def caret(err: str, lineno: int) -> tuple[int, int]:
    """(column, width) of the caret under the excerpt of `lineno` in a rendered error."""
    lines = err.split("\n")
    for i, line in enumerate(lines):
        if re.match(rf"\s*{lineno} \| ", line):
            gutter = line.index("| ") + 2
            marks = lines[i + 1]
            start = marks.index("^")
            width = len(marks) - start
            assert set(marks[start:]) == {"^"}
            return start - gutter + 1, width
    raise AssertionError(f"no excerpt of line {lineno} in:\n{err}")


# ---- the catalogue ----------------------------------------------------------------------

def test_catalogue_is_large():
    assert len(CATALOGUE) >= 40


@pytest.mark.parametrize("path", CATALOGUE, ids=[p.stem for p in CATALOGUE])
def test_catalogue(path, capsys):
    message, line, col, args = _header(path)
    rc, out, err = run_check(capsys, path, *args)
    assert rc == 1, err
    assert "Traceback" not in out + err
    first = err.split("\n")[0]
    assert first.startswith(f"{path}:{line}:{col}: error: "), first
    assert message in first
    # the user's line is shown under the header, with a caret in the header's column
    shown = path.read_text().split("\n")[line - 1]
    assert f"{line:>4} | {shown}".rstrip() in err
    assert caret(err, line)[0] == col


# ---- syntax ---------------------------------------------------------------------------------

def test_unclosed_paren_points_at_the_paren(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n"
        "  input x: f32[B, 64]\n"
        "  y = relu((x @ x)\n"
        "  output y\n"
        "}\n"))
    assert rc == 1
    assert err == (
        f"{p}:4:3: error: unexpected `output`; expected `)`, `,`\n"
        "   4 |   output y\n"
        "         ^^^^^^\n"
        f"{p}:3:11: note: this `(` is not closed\n"
        "   3 |   y = relu((x @ x)\n"
        "                 ^\n")


def test_unclosed_brace_at_end_of_file(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "layer L() {\n  (x) -> x\n")
    assert rc == 1
    first = err.split("\n")[0]
    assert first.startswith(f"{p}:2:11: error: missing `}}`: a block is not closed")
    assert "unexpected the end of the file" in first
    assert f"{p}:1:11: note: this `{{` is not closed" in err
    assert caret(err, 1) == (11, 1)


def test_unclosed_bracket_in_a_type(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "model M() {\n  input x: f32[B, 3\n}\n")
    assert rc == 1
    assert err.startswith(f"{p}:3:1: error: unbalanced bracket: a `[` is not closed "
                          "(unexpected `}`; expected `,`, `]`)")
    assert f"{p}:2:15: note: this `[` is not closed" in err


def test_a_closing_bracket_that_does_not_match(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys,
                               "model M() {\n  input x: f32[B, 3]\n  output y = sum(x]\n}\n")
    assert rc == 1
    assert err.startswith(f"{p}:3:19: error: unexpected `]`")
    assert f"{p}:3:17: note: this `(` is not closed" in err


def test_stray_closing_brace(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "model M() {\n}\n}\n")
    assert err.startswith(f"{p}:3:1: error: unexpected `}}`: there is no open block to close")


def test_unexpected_character(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "const a = 1 ? 2\n")
    assert rc == 1
    assert err.split("\n")[0] == f"{p}:1:13: error: unexpected character `?`"
    assert caret(err, 1) == (13, 1)


def test_syntax_error_lists_what_was_expected(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "model M() {\n  input x: f32[B, 3]\n  y x\n}\n")
    first = err.split("\n")[0]
    assert first.startswith(f"{p}:3:5: error: a statement must be")
    assert "unexpected `x`; expected" in first and "`=`" in first


def test_duplicate_parameter_in_a_signature(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "const f = fn(a, (b, a)) -> a\n")
    assert rc == 1
    assert err == (f"{p}:1:21: error: duplicate argument `a`\n"
                   "   1 | const f = fn(a, (b, a)) -> a\n"
                   "                           ^\n"
                   f"{p}:1:14: note: first declared here\n"
                   "   1 | const f = fn(a, (b, a)) -> a\n"
                   "                    ^\n")


def test_duplicate_hyperparameter(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "fn f(a, b, a = 1) = a\n")
    assert err.startswith(f"{p}:1:12: error: duplicate parameter `a`")
    assert caret(err, 1) == (12, 5)


# ---- names ------------------------------------------------------------------------------------

def test_unknown_name_with_did_you_mean(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n"
        "  input x: f32[B, 64]\n"
        "  output y = rleu(x)\n"
        "}\n"))
    assert rc == 1
    assert err == (f"{p}:3:14: error: unknown name `rleu`\n"
                   "   3 |   output y = rleu(x)\n"
                   "                    ^^^^\n"
                   "  hint: did you mean `relu`?\n")


def test_unknown_name_without_a_close_match_has_no_hint(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys,
                               "model M() {\n  input x: f32[B]\n  output y = qqqqqq(x)\n}\n")
    assert "unknown name `qqqqqq`" in err and "hint" not in err


def test_unknown_local_suggests_a_local(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B]\n  hidden = relu(x)\n  output y = hiden * 2\n}\n"))
    assert "unknown name `hiden`" in err and "did you mean `hidden`?" in err
    assert caret(err, 4) == (14, 5)


def test_duplicate_top_level_definition_has_a_note(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "fn f(x) = x\nconst c = 1\nfn f(x) = 2 * x\n")
    assert rc == 1
    assert err.startswith(f"{p}:3:1: error: duplicate definition of function `f`")
    assert f"{p}:1:1: note: first defined here" in err


@pytest.mark.parametrize("decl, what", [("param W: [3]", "param"), ("state W: [3]", "state"),
                                        ("input W: f32[3]", "input")])
def test_duplicate_declarations(tmp_path, capsys, decl, what):
    rc, _, err, p = check_text(tmp_path, capsys, (
        f"model M() {{\n  input x: f32[3]\n  W = x\n  {decl}\n  output y = x\n}}\n"))
    assert rc == 1
    assert err.startswith(f"{p}:4:3: error: duplicate definition of {what} `W`")
    assert f"{p}:3:3: note: first defined here" in err


def test_duplicate_output(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[3]\n  loss y = sum(x)\n  metric y = mean(x)\n}\n"))
    assert err.startswith(f"{p}:4:3: error: duplicate result `y`")


# ---- arity -------------------------------------------------------------------------------------

MODEL = "model M() {{\n  input x: f32[B, 8]\n  output y = {}\n}}\n"


@pytest.mark.parametrize("expr, message", [
    ("Dense(4, relu, true, 1)(x)", "`Dense` takes at most 3 arguments (out, act, bias), got 4"),
    ("Dense()(x)", "`Dense` needs a value for `out`"),
    ("Dense(4, width = 2)(x)", "`Dense` has no parameter `width`"),
    ("Dense(4, out = 2)(x)", "`Dense`: `out` given both by position and by keyword"),
    ("Dense(4)(x, x)", "`Dense` takes 1 input, got 2"),
    ("Dense(4)()", "`Dense` takes 1 input, got 0"),
    ("Dense(4)(z = x)", "`Dense` has no input `z`"),
    ("Dense(4)(x, x = x)", "`Dense`: input `x` given twice"),
    ("mse(x)", "`mse` needs a value for `target`"),
    ("mse(x, x, x)", "`mse` takes at most 2 arguments (pred, target), got 3"),
    ("(fn(a, b) -> a)(x)", "this function takes 2 arguments, got 1"),
    ("sum(x, 0, true, 1)", "`sum` takes at most 3 arguments (x, axis, keepdims), got 4"),
    ("sum(x, axes = 0)", "`sum` has no argument `axes`"),
    ("sum()", "`sum` needs `x`"),
    ("sum(x, axis = 0, axis = 1)", "keyword argument `axis` given twice"),
    ("Dense(\"wide\")(x)", "`Dense`: `out` must be int, found the string \"wide\""),
])
def test_arity(tmp_path, capsys, expr, message):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format(expr))
    assert rc == 1
    first = err.split("\n")[0]
    assert first.startswith(f"{p}:3:") and message in first, first
    assert "Traceback" not in err


def test_arity_of_a_layer_from_the_standard_library_points_at_the_call(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format("x |> Dense(4, relu, true, 1)"))
    assert err.startswith(f"{p}:3:19: error: `Dense` takes at most 3 arguments")
    assert caret(err, 3) == (19, len("Dense(4, relu, true, 1)"))


# ---- recursion ------------------------------------------------------------------------------------

def test_recursion_between_layers(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "layer A() {\n  (x) -> B()(x)\n}\n"
        "layer B() {\n  (x) -> A()(x)\n}\n"
        "model M() {\n  input x: f32[N, 4]\n  output y = A()(x)\n}\n"))
    assert rc == 1
    first = err.split("\n")[0]
    assert first.startswith(f"{p}:5:10: error: recursion is not allowed: A -> B -> A")
    assert caret(err, 5) == (10, len("A()(x)"))


def test_self_recursive_function(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys,
                               "fn f(x) = f(x) + 1\nmodel M() {\n  input x: f32[3]\n"
                               "  output y = f(x)\n}\n")
    assert "recursion is not allowed: f -> f" in err
    assert err.startswith(f"{p}:1:11: error:")


def test_recursion_with_a_compile_time_base_case_is_fine(tmp_path, capsys):
    rc, out, err, p = check_text(tmp_path, capsys, (
        "fn power(x, n: int) = x if n == 1 else x * power(x, n - 1)\n"
        "layer Stack(n: int) {\n  (x) -> x if n == 0 else Stack(n - 1)(Dense(3)(x))\n}\n"
        "model M() {\n  input x: f32[B, 3]\n  output y = power(Stack(3)(x), 4)\n}\n"))
    assert rc == 0, err
    assert "parameters: 36" in out


def test_higher_order_nesting_is_not_recursion(tmp_path, capsys):
    rc, out, err, p = check_text(tmp_path, capsys, (
        "layer Twice(f) {\n  (x) -> f(f(x))\n}\n"
        "model M() {\n  input x: f32[B, 3]\n  output y = Twice(Twice(Dense(3)))(x)\n}\n"))
    assert rc == 0, err


# ---- shapes and dtypes ------------------------------------------------------------------------------

def test_matmul_inner_dims(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n"
        "  input x: f32[B, 64]\n"
        "  param W: [32, 10] ~ glorot\n"
        "  output y = x @ W\n"
        "}\n"))
    assert rc == 1
    assert err == (f"{p}:4:14: error: `matmul`: inner dims differ: 64 vs 32 "
                   "(left is f32[B, 64], right is f32[32, 10])\n"
                   "   4 |   output y = x @ W\n"
                   "                    ^^^^^\n")


def test_broadcasting_names_both_shapes(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B, 64]\n  input b: f32[3]\n  output y = x * b\n}\n"))
    assert "`mul`: cannot broadcast [B, 64] with [3]: dim -1 is 64 vs 3" in err
    assert caret(err, 4) == (14, 5)


def test_symbolic_dims_do_not_broadcast_against_each_other(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B, 4]\n  input z: f32[C, 4]\n  output y = x - z\n}\n"))
    assert "cannot broadcast [B, 4] with [C, 4]: dim -2 is B vs C" in err


def test_layer_input_pattern_mismatch_shows_the_call(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "layer Proj(out: int) {\n"
        "  param W: [d, out] ~ glorot\n"
        "  (x: [n, d]) -> x @ W\n"
        "}\n"
        "model M() {\n"
        "  input x: f32[B, T, 8]\n"
        "  output y = Proj(4)(x)\n"
        "}\n"))
    assert rc == 1
    assert err.split("\n")[0] == (f"{p}:3:4: error: expected a rank-2 tensor [n, d], "
                                  "found f32[B, T, 8]")
    assert f"{p}:7:14: note: `Proj` is called here" in err


def test_error_inside_the_standard_library_is_reported_at_the_call(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format("x |> Conv2d(4, 3)"))
    first = err.split("\n")[0]
    assert first == f"{p}:3:14: error: expected a rank-4 tensor [n, c, h, w], found f32[B, 8]"
    assert re.search(r"specs/std/layers\.dl:\d+:\d+: note: inside `Conv2d`, here", err)


def test_dtype_mismatch(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B]\n  input z: f64[B]\n  output y = x + z\n}\n"))
    assert rc == 1
    assert err.split("\n")[0] == f"{p}:4:14: error: `add`: dtypes differ: f32 vs f64"


def test_bool_does_not_mix_with_floats(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format("(x > 0) * x"))
    assert "cannot mix bool with f32" in err


def test_declared_dtype_of_a_function_argument(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "fn pick(t, ids: i64[n]) = take(t, ids)\n"
        "model M() {\n  input x: f32[B, 8]\n  output y = pick(x, x[:, 0])\n}\n"))
    assert err.split("\n")[0] == f"{p}:1:12: error: expected dtype i64, found f32"
    assert f"{p}:4:14: note: `pick` is called here" in err


def test_loss_not_scalar(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B, 8]\n  loss l = x * x\n}\n"))
    assert err == (f"{p}:3:3: error: loss `l` must be a scalar, found f32[B, 8] "
                   "(reduce it with mean or sum)\n"
                   "   3 |   loss l = x * x\n"
                   "         ^^^^^^^^^^^^^^\n")


def test_unknown_dtype(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, "model M() {\n  input x: f8[B]\n  output y = x\n}\n")
    assert err.split("\n")[0] == f"{p}:2:12: error: unknown dtype `f8`"
    assert caret(err, 2) == (12, len("f8[B]"))


def test_unknown_dtype_string(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format('cast(x, "float")'))
    assert 'unknown dtype "float"; use one of "f32", "f64", "i64", "i32", "bool"' in err


@pytest.mark.parametrize("init, message", [
    ("relu", "`~` needs an initializer (zeros, ones, normal(std), uniform(lo, hi), glorot, he, "
             "orthogonal, or a number), found the builtin `relu`"),
    ("glorious", "unknown name `glorious`"),
    ('normal(0, "wide")', "initializer `normal`: `std` must be a number, found the string \"wide\""),
    ("normal(0, 1, 2)", "`normal` takes at most 2 arguments (mean, std), got 3"),
    ("true", "`~` needs an initializer"),
])
def test_bad_initializer(tmp_path, capsys, init, message):
    rc, _, err, p = check_text(tmp_path, capsys, (
        f"model M() {{\n  input x: f32[B, 3]\n  param W: [3, 3] ~ {init}\n  output y = x @ W\n}}\n"))
    assert rc == 1
    first = err.split("\n")[0]
    assert first.startswith(f"{p}:3:21: error: ") and message in first, first


def test_if_on_a_tensor(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B]\n  if mean(x) > 0 {\n    y = x\n  } else {\n    y = -x\n  }\n"
        "  output y\n}\n"))
    assert err == (f"{p}:3:6: error: `if` needs a compile-time condition (a hyperparameter or "
                   "`training`); for tensors use `where(cond, a, b)`\n"
                   "   3 |   if mean(x) > 0 {\n"
                   "            ^^^^^^^^^^^\n")


def test_grad_of_a_non_scalar(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, MODEL.format("grad(x * x, x)"))
    assert "grad needs a float scalar to differentiate, found a tensor f32[B, 8]" in err


def test_static_shape_of_a_param(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, (
        "model M() {\n  input x: f32[B, 3]\n  param W: [B, 3]\n  output y = x * W\n}\n"))
    assert "param `W` must have a static shape, found [B, 3]" in err


# ---- models and files ---------------------------------------------------------------------------------

TWO = ("model Encoder() {\n  input x: f32[B, 4]\n  output mu = x\n}\n"
       "model Decoder() {\n  input z: f32[B, 4]\n  output x = z\n}\n")


def test_unknown_model_with_did_you_mean(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, TWO, "--model", "Encodr")
    assert rc == 1
    assert err.split("\n")[0] == f"{p}:1:1: error: no model `Encodr` in {p}"
    assert "hint: did you mean `Encoder`?" in err


def test_unknown_model_lists_the_models(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, TWO, "--model", "Zzz")
    assert "no model `Zzz`" in err and "hint: models: Encoder, Decoder" in err


def test_several_models_without_model_option(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, TWO)
    assert rc == 1
    assert err.split("\n")[0] == (f"{p}:1:1: error: {p} defines 2 models (Encoder, Decoder); "
                                  "choose one with --model")


def test_model_option_selects(tmp_path, capsys):
    rc, out, err, p = check_text(tmp_path, capsys, TWO, "--model", "Decoder")
    assert rc == 0 and out.startswith(f"model Decoder ({p})")


def test_missing_file(tmp_path, capsys):
    rc, out, err = run_check(capsys, tmp_path / "nope.dl")
    assert rc == 2  # bad usage, as the README says
    assert err == f"no such file: {tmp_path / 'nope.dl'}\n"


def test_missing_file_json(tmp_path, capsys):
    rc, out, err = run_check(capsys, tmp_path / "nope.dl", "--json")
    assert rc == 2 and err == ""
    assert json.loads(out) == {"error": "UsageError", "message": f"no such file: {tmp_path / 'nope.dl'}"}


def test_error_as_json(tmp_path, capsys):
    rc, out, err, p = check_text(tmp_path, capsys, MODEL.format("rleu(x)"), "--json")
    assert rc == 1
    assert json.loads(out) == {"error": "NameError", "message": "unknown name `rleu`", "file": str(p),
                               "line": 3, "col": 14, "hint": "did you mean `relu`?"}


def test_missing_import(tmp_path, capsys):
    rc, _, err, p = check_text(tmp_path, capsys, 'import "helpers.dl"\n' + MODEL.format("x"))
    assert err.startswith(f"{p}:1:1: error: cannot find the imported file `helpers.dl`")
    assert "hint: paths are relative to" in err


def test_error_inside_an_imported_file_is_located_there(tmp_path, capsys):
    (tmp_path / "helpers.dl").write_text("fn double(x) = 2 * x\nfn broken(x) = x +\n")
    rc, _, err, p = check_text(tmp_path, capsys, 'import "helpers.dl"\n' + MODEL.format("double(x)"))
    assert rc == 1
    assert err.startswith(f"{tmp_path / 'helpers.dl'}:2:")


def test_import_cycle(tmp_path, capsys):
    (tmp_path / "a.dl").write_text('import "b.dl"\n')
    (tmp_path / "b.dl").write_text('import "a.dl"\n')
    rc, _, err, p = check_text(tmp_path, capsys, 'import "a.dl"\n' + MODEL.format("x"))
    assert rc == 1 and "import cycle" in err


# ---- rendering details ----------------------------------------------------------------------------------

def test_caret_is_placed_under_tabs_and_wide_spans():
    src = Source("t.dl", "model M() {\n\toutput y = foo(x)\n}\n")
    e = DslError("boom", Span(src, 2, 13, 2, 19))
    assert e.render() == ("t.dl:2:13: error: boom\n"
                          "   2 |  output y = foo(x)\n"
                          "                   ^^^^^^")


def test_span_over_several_lines_underlines_to_the_end_of_the_first():
    src = Source("t.dl", "a = f(1,\n      2)\n")
    e = DslError("boom", Span(src, 1, 5, 2, 9))
    assert e.render().split("\n")[2] == "           ^^^^"


def test_long_lines_are_cut_around_the_caret():
    line = "y = " + " + ".join(f"x{i}" for i in range(200))
    col = line.index("x150") + 1
    src = Source("t.dl", line + "\n")
    lines = DslError("here", Span(src, 1, col, 1, col + 4)).render().split("\n")
    assert len(lines[1]) < 140 and lines[1].startswith("   1 | ...")
    assert lines[1].endswith("...")
    start = lines[2].index("^")
    assert lines[1][start:start + 4] == "x150" and lines[2].count("^") == 4


def test_error_without_a_span_renders_plainly():
    assert DslError("no file").render() == "error: no file"
    assert ParseError("x", None, hint="try y").render() == "error: x\n  hint: try y"


def test_parse_error_is_a_dsl_error_with_a_span():
    with pytest.raises(ParseError) as info:
        parse("model M() {\n  y = (1 +\n}\n", "inline.dl")
    e = info.value
    assert isinstance(e, DslError) and e.span.path == "inline.dl"
    assert (e.span.line, e.span.col) == (3, 1)
