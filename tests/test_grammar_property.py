"""Property: nothing but a located `DslError` ever escapes the front end.

Programs are generated from the grammar itself (`hypothesis.extra.lark.from_lark`),
with terminals drawn from pools of meaningful names and numbers so that many of them
get past the parser into elaboration; plus raw bytes, raw text and token soup thrown
at the parser. Any other exception (a Python error from deep inside) fails the test.
"""
from __future__ import annotations

import os
import random
import signal
from contextlib import contextmanager

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra.lark import from_lark  # noqa: E402
from lark import Lark  # noqa: E402

from compiler.elaborate import elaborate, load_program
from dsl.errors import DslError  # noqa: E402
from dsl.parser import GRAMMAR, decode_source, parse, parse_source  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

# DLC_FUZZ_SCALE=20 runs a 20x longer, randomized campaign; the default is quick and
# derandomized (the same examples every run).
_SCALE = int(os.environ.get("DLC_FUZZ_SCALE", "1"))
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
           HealthCheck.large_base_example]


def fuzz(n: int):
    return settings(max_examples=n * _SCALE, deadline=None, database=None,
                    derandomize=_SCALE == 1, suppress_health_check=_HEALTH)

# Names a spec can meaningfully use: builtins, std layers/functions, common locals and dims.
NAMES = ["x", "y", "k", "h", "W", "b", "B", "T", "D", "n", "f", "g", "a", "c", "t", "M", "L",
         "relu", "tanh", "sigmoid", "exp", "log", "sum", "mean", "max", "softmax", "log_softmax",
         "matmul", "where", "reshape", "transpose", "concat", "stack", "split", "take", "one_hot",
         "zeros", "ones", "normal", "uniform", "grad", "stop_gradient", "scan", "repeat", "dim",
         "len", "cast", "float", "identity", "arange", "flatten", "pad", "conv2d", "max_pool2d",
         "Dense", "MLP", "LayerNorm", "BatchNorm", "Dropout", "Embedding", "Residual", "Conv2d",
         "cross_entropy", "mse", "accuracy", "dropout", "gelu", "kl_normal", "training",
         "glorot", "he", "orthogonal", "f32", "f64", "i64", "bool", "int", "float", "axis",
         "keepdims", "init", "length", "reverse", "shape", "out", "act"]


def _grammar() -> Lark:
    # No postlexer: from_lark only reads the grammar's rules and terminals.
    return Lark(GRAMMAR.read_text(), parser="lalr", lexer="contextual")


def _explicit(lark: Lark, start: str) -> dict:
    """One strategy per terminal, padded with spaces so that tokens stay apart."""
    terminals, rules, ignore = lark.grammar.compile([start], ())
    used = {t.name for t in terminals} | set(ignore)
    out = {}
    for t in terminals:
        if t.pattern.type == "str":
            out[t.name] = st.just(f" {t.pattern.value} ")
    out.update({
        "NAME": st.sampled_from(NAMES).map(lambda s: f" {s} "),
        "INT": st.sampled_from(["0", "1", "2", "3", "4", "8", "64", "007"]).map(lambda s: f" {s} "),
        "FLOAT": st.sampled_from(["0.5", "1.0", "1e-3", ".25", "2.", "3e2"]).map(lambda s: f" {s} "),
        "STRING": st.sampled_from(['"std/layers.dl"', '"f32"', '"x"', r'"\x"'])
        .map(lambda s: f" {s} "),
        "_NL": st.sampled_from(["\n", "\n  ", "\r\n", "\n\n"]),
        "COMMENT": st.just(" "),  # a comment would swallow the rest of its line
        "COMP_OP": st.sampled_from(["==", "!=", "<", "<=", ">", ">="]).map(lambda s: f" {s} "),
        "ADD_OP": st.sampled_from(["+", "-"]).map(lambda s: f" {s} "),
        "MUL_OP": st.sampled_from(["*", "/", "@", "%"]).map(lambda s: f" {s} "),
        "UNARY_OP": st.sampled_from(["-", "+"]).map(lambda s: f" {s} "),
        "POW_OP": st.just(" ** "),
    })
    for name in ignore:
        out.setdefault(name, st.sampled_from([" ", "\t"]))
    return {k: v for k, v in out.items() if k in used}


_LARK = _grammar()


def _strategy(start: str):
    return from_lark(_LARK, start=start, explicit=_explicit(_LARK, start))


programs = _strategy("start")



class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: int):
    """A generated program must not hang the front end either."""
    def handler(*_):
        raise _Timeout(f"the front end ran for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _front_end(text: str) -> None:
    """Parse and elaborate every model (eval and training mode); only DslError may escape,
    and every DslError must be located and renderable."""
    with _time_limit(20):
        try:
            prog = load_program(text=text)
            for name in list(prog.models):
                for training in (False, True):
                    elaborate(prog, name, training=training)
        except DslError as e:
            assert e.span is not None, f"unlocated error: {e.message}"
            rendered = e.render()
            assert f":{e.span.line}:{e.span.col}: " in rendered


@fuzz(80)
@given(programs)
def test_generated_programs_raise_only_dsl_errors(text):
    _front_end(text)


# ---- generated models: a compact recursive strategy for expressions ----------------------
# from_lark's expressions descend through every precedence level and are mostly too
# large; this strategy builds well-formed expressions over the names a model has.

ATOMS = ["x", "k", "hidden", "B", "training", "0", "1", "2", "-1", "0.5", "1e-3", "true",
         '"f32"', '"i64"', "(1, 2)", "()", "[3]", "x.shape", "dim(x, 0)", "Dense(3)",
         "fn(a) -> a", "relu", "nothing"]
CALLEES = ["relu", "sum", "mean", "max", "softmax", "exp", "log", "sqrt", "tanh", "where",
           "reshape", "transpose", "concat", "stack", "split", "take", "one_hot", "zeros",
           "ones", "normal", "uniform", "grad", "stop_gradient", "scan", "repeat", "dim", "len",
           "cast", "float", "flatten", "pad", "cumsum", "argmax", "maximum", "expand_dims",
           "squeeze", "matmul", "logsumexp", "Dense(3)", "Dense(hidden, relu)", "LayerNorm()",
           "BatchNorm()", "Dropout(0.5)", "Embedding(10, 3)", "Residual()", "MLP(4, 2)",
           "repeat(2, Dense(3))", "cross_entropy", "mse", "accuracy", "dropout", "gelu",
           "kl_normal", "identity", "fn(c, t) -> (c + t, t)", "fn(a, (b, c)) -> a * b"]
KWARGS = ["axis", "keepdims", "init", "length", "reverse", "dtype", "std", "low", "p", "x"]
BINOPS = ["+", "-", "*", "/", "@", "%", "**", "==", "<", ">=", "and", "or", "|>"]


def _extend(sub):
    return st.one_of(
        st.tuples(sub, st.sampled_from(BINOPS), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "not "]), sub).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(st.sampled_from(CALLEES), st.lists(sub, max_size=3),
                  st.lists(st.tuples(st.sampled_from(KWARGS), sub), max_size=2, unique_by=lambda kv: kv[0]))
        .map(lambda t: f"{t[0]}({', '.join(t[1] + [f'{k} = {v}' for k, v in t[2]])})"),
        st.tuples(sub, st.lists(st.sampled_from(["0", "-1", ":", "1:", "::2", "...", "k", "0:1"]),
                                min_size=1, max_size=3))
        .map(lambda t: f"{t[0]}[{', '.join(t[1])}]"),
        st.tuples(sub, st.sampled_from(["T", "shape", "mu", "W"])).map(lambda t: f"{t[0]}.{t[1]}"),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: f"({', '.join(xs)})"),
        st.tuples(sub, sub, sub).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        sub.map(lambda e: f"(fn(a) -> {e})(x)"),
    )


# mostly tensors, so that many expressions elaborate and the deeper code runs
exprs = st.recursive(st.one_of(st.sampled_from(["x", "x", "x", "float(k)", "k"]),
                               st.sampled_from(ATOMS)), _extend, max_leaves=8)

STMTS = st.one_of(
    exprs.map(lambda e: f"z = {e}"),
    exprs.map(lambda e: f"u, v = {e}"),
    exprs.map(lambda e: f"(u, v), w = {e}"),
    exprs.map(lambda e: f"if training {{ z = {e} }} else {{ z = x }}"),
    exprs.map(lambda e: f"if {e} {{ z = x }}"),
    exprs.map(lambda e: f"param P: [3] ~ {e}"),
    exprs.map(lambda e: f"param P: [{e}]"),
    exprs.map(lambda e: f"state S: [3]\n  S <- {e}"),
    exprs.map(lambda e: f"metric m = {e}"),
    exprs.map(lambda e: f"input q: f32[{e}]"),
)

MODEL = """model M(hidden = 4) {{
  input x: f32[B, 3]
  input k: i64[B]
  h = {e1}
  {stmt}
  output o = {e2}
  loss l = mean({e3})
}}
"""


@fuzz(200)
@given(exprs, exprs, exprs, STMTS)
def test_generated_models_raise_only_dsl_errors(e1, e2, e3, stmt):
    _front_end(MODEL.format(e1=e1, e2=e2, e3=e3, stmt=stmt))


LAYER = """layer L(n: int = 3) {{
  {stmt}
  (x: [..., d]) -> {e1}
}}
model M(hidden = 2) {{
  input x: f32[B, 3]
  input k: i64[B]
  h = L()(x)
  output o = {e2}
}}
"""


@fuzz(100)
@given(exprs, exprs, STMTS)
def test_generated_layers_raise_only_dsl_errors(e1, e2, stmt):
    _front_end(LAYER.format(e1=e1, e2=e2, stmt=stmt))


# ---- garbage --------------------------------------------------------------------------

def _parse_only(text: str) -> None:
    with _time_limit(20):
        try:
            parse(text)
        except DslError as e:
            assert e.span is not None, f"unlocated error: {e.message}"
            e.render()


@fuzz(150)
@given(st.binary(max_size=400))
def test_random_bytes(data):
    with _time_limit(20):
        try:
            parse_source(decode_source(data, "fuzz.dl"))
        except DslError as e:
            e.render()


@fuzz(150)
@given(st.text(max_size=300))
def test_random_text(text):
    _parse_only(text)


TOKENS = sorted({
    "model", "layer", "fn", "const", "import", "train", "on", "player", "input", "param",
    "state", "output", "loss", "metric", "return", "if", "else", "and", "or", "not", "true",
    "false", "as", "{", "}", "(", ")", "[", "]", ",", ";", ":", ".", "~", "=", "<-", "->",
    "|>", "...", "+", "-", "*", "/", "@", "%", "**", "<", "<=", "==", "!=", ">", ">=", "\n",
    "x", "W", "B", "Dense", "relu", "f32", "i64", "3", "0.5", '"s"', "# c\n", "\\\n", "$",
    "'", '"', "?", "!", "|"})


@fuzz(200)
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup(tokens):
    _parse_only(" ".join(tokens))


@fuzz(100)
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.integers(0, 2 ** 32 - 1))
def test_mutated_specs(tokens, seed):
    """A real spec with a few tokens inserted at random places."""
    from pathlib import Path
    specs = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.dl"))
    rng = random.Random(seed)
    text = rng.choice(specs).read_text()
    for tok in tokens[:6]:
        i = rng.randrange(len(text) + 1)
        text = text[:i] + tok + text[i:]
    _front_end(text)
