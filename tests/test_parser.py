"""The parser: every construct of the language parses to the expected AST, with spans
(1-based line and column) pointing at the text it came from."""
from __future__ import annotations

import pytest

from dsl import ast as A
from dsl.errors import ParseError
from dsl.parser import parse


def items(src):
    return parse(src, "t.dl").items


def body(src):
    """Statements of the first item's body (a model/layer block)."""
    return items(src)[0].body.stmts


def expr(src):
    """The expression `src` as the value of a constant."""
    return items(f"const c = {src}\n")[0].value


def at(node):
    return (node.span.line, node.span.col)


def end(node):
    return (node.span.end_line, node.span.end_col)


# ---- files, comments, separators -----------------------------------------------------------

@pytest.mark.parametrize("src", ["", "\n\n", "   ", "# only a comment", "# a\n\n# b\n", ";;\n;"])
def test_empty_files(src):
    m = parse(src, "t.dl")
    assert m.items == [] and m.path == "t.dl"


def test_comments_blank_lines_and_semicolons():
    its = items("# header\n\nconst a = 1  # trailing\n\n\nconst b = 2; const c = 3\n")
    assert [i.name for i in its] == ["a", "b", "c"]
    assert [at(i) for i in its] == [(3, 1), (6, 1), (6, 14)]


def test_newlines_inside_brackets_do_not_end_statements():
    e = expr("f(1,\n  2,\n\n  3\n)")
    assert isinstance(e, A.Call) and [a.value for a in e.args] == [1, 2, 3]
    e = expr("[1,\n 2]")
    assert isinstance(e, A.List) and len(e.items) == 2


def test_backslash_continues_a_line():
    e = expr("1 + \\\n 2")
    assert isinstance(e, A.BinOp) and e.right.value == 2


def test_windows_line_endings():
    its = items("const a = 1\r\nconst b = 2\r\n")
    assert [i.name for i in its] == ["a", "b"]


def test_statements_inside_braces_are_separated_by_newlines_or_semicolons():
    stmts = body("model M() { a = 1; b = 2\n  c = 3 }")
    assert [s.targets[0].name for s in stmts] == ["a", "b", "c"]


# ---- top-level items ----------------------------------------------------------------------------

def test_import():
    i, j = items('import "std/layers.dl"\nimport "nets/vae.dl" as vae\n')
    assert isinstance(i, A.Import) and i.path == "std/layers.dl" and i.alias is None
    assert j.path == "nets/vae.dl" and j.alias == "vae"
    assert at(i) == (1, 1) and at(j) == (2, 1)


def test_const():
    c = items("const hidden = 2 * 64\n")[0]
    assert isinstance(c, A.ConstDef) and c.name == "hidden"
    assert isinstance(c.value, A.BinOp) and c.value.op == "*"
    assert at(c) == (1, 1) and at(c.value) == (1, 16) and end(c.value) == (1, 22)


def test_layer_definition():
    src = ("layer Dense(out: int, act = identity, bias: bool = true) {\n"
           "  param W: [in, out] ~ glorot\n"
           "  param b: [out] ~ zeros\n"
           "  (x: [..., in]) -> act(x @ W + b)\n"
           "}\n")
    d = items(src)[0]
    assert isinstance(d, A.LayerDef) and d.name == "Dense"
    out, act, bias = d.hparams
    assert (out.name, out.annot, out.default) == ("out", "int", None)
    assert act.annot is None and act.default == A.Name("identity")
    assert bias.annot == "bool" and bias.default == A.Bool(True)
    W, b, call = d.body.stmts
    assert isinstance(W, A.ParamDecl) and W.name == "W"
    assert W.type == A.TypeExpr(None, [A.Name("in"), A.Name("out")]) and W.init == A.Name("glorot")
    assert at(W) == (2, 3) and at(W.type) == (2, 12) and at(W.init) == (2, 24)
    assert isinstance(call, A.CallDef) and at(call) == (4, 3)
    (x,) = call.params
    assert x.name == "x" and x.type.dims == [A.Ellipsis_(), A.Name("in")]
    assert isinstance(call.body, A.Call) and call.body.func == A.Name("act")


def test_layer_call_definition_with_a_block_and_tuple_inputs():
    d = items("layer Cell() {\n  ((h, c), x) -> {\n    y = h + x\n    return (y, c)\n  }\n}\n")[0]
    (call,) = d.body.stmts
    (hc, x) = call.params
    assert isinstance(hc, A.SigTuple) and [p.name for p in hc.items] == ["h", "c"]
    assert isinstance(call.body, A.Block)
    let, ret = call.body.stmts
    assert isinstance(ret, A.Return) and isinstance(ret.value, A.Tuple) and at(ret) == (4, 5)


def test_initializers_with_arguments_and_numbers():
    stmts = body("layer L() {\n  param a: [3] ~ normal(0, 0.02)\n  param b: [3] ~ 0.5\n"
                 "  param c: [3]\n  state s: i64[2] ~ zeros\n  (x) -> x\n}\n")
    a, b, c, s, _ = stmts
    assert a.init == A.Call(A.Name("normal"), [A.Num(0), A.Num(0.02)], [])
    assert b.init == A.Num(0.5) and c.init is None
    assert isinstance(s, A.StateDecl) and s.type.dtype == "i64"


def test_hyperparameter_with_a_tensor_type_annotation():
    d = items("fn f(x: f32[B, 3], k: float = 1.0) = k * x\n")[0]
    x, k = d.hparams
    assert isinstance(x.annot, A.TypeExpr) and x.annot.dtype == "f32"
    assert k.annot == "float" and k.default == A.Num(1.0)


def test_fn_with_an_expression_body_and_a_block_body():
    f, g = items("fn sq(x) = x * x\nfn h(x) {\n  y = x + 1\n  return y * y\n}\n")
    assert isinstance(f, A.FnDef) and isinstance(f.body, A.BinOp)
    assert isinstance(g.body, A.Block) and isinstance(g.body.stmts[-1], A.Return)
    assert at(g.body) == (2, 9)


def test_model_definition():
    src = ("model Classifier(hidden = 128, classes = 10) {\n"
           "  input x: f32[B, 64]\n"
           "  input y: i64[B]\n"
           "  logits = x |> Dense(hidden, relu) |> Dense(classes)\n"
           "  output probs = softmax(logits)\n"
           "  loss ce = cross_entropy(logits, y)\n"
           "  metric acc = accuracy(logits, y)\n"
           "  output logits\n"
           "}\n")
    m = items(src)[0]
    assert isinstance(m, A.ModelDef) and [h.name for h in m.hparams] == ["hidden", "classes"]
    x, y, logits, probs, ce, acc, pub = m.body.stmts
    assert isinstance(x, A.InputDecl) and x.type == A.TypeExpr("f32", [A.Name("B"), A.Num(64)])
    assert at(x) == (2, 3) and end(x) == (2, 22)
    assert y.type.dtype == "i64"
    assert isinstance(logits.value, A.Pipe) and isinstance(logits.value.value, A.Pipe)
    assert [(r.kind, r.name) for r in (probs, ce, acc, pub)] == [
        ("output", "probs"), ("loss", "ce"), ("metric", "acc"), ("output", "logits")]
    assert pub.value is None and at(ce) == (6, 3)


def test_state_and_updates():
    stmts = body("model M() {\n  state n: [] ~ 0\n  n <- n + 1\n  bn.running_mean <- 0\n}\n")
    _, upd, dotted = stmts
    assert isinstance(upd, A.Update) and upd.target == ["n"] and at(upd) == (3, 3)
    assert dotted.target == ["bn", "running_mean"]


def test_if_else_if_else():
    (s,) = body("model M() {\n  if training {\n    a = 1\n  } else if deep {\n    a = 2\n"
                "  } else {\n    a = 3\n  }\n}\n")
    assert isinstance(s, A.If) and s.test == A.Name("training") and at(s) == (2, 3)
    assert isinstance(s.orelse, A.If) and s.orelse.test == A.Name("deep")
    assert isinstance(s.orelse.orelse, A.Block) and at(s.orelse) == (4, 10)


def test_if_without_else():
    (s,) = body("model M() {\n  if training { a = 1 }\n}\n")
    assert s.orelse is None


def test_destructuring_targets():
    a, b = body("model M() {\n  (h, c), ys = scan(f, xs, init = (h0, c0))\n  u, v = (1, 2)\n}\n")
    hc, ys = a.targets
    assert isinstance(hc, A.SigTuple) and [t.name for t in hc.items] == ["h", "c"]
    assert ys.name == "ys" and at(ys) == (2, 11)
    assert [t.name for t in b.targets] == ["u", "v"]


def test_train_block():
    src = ("train MLP on digits {\n"
           "  split 0.8 0.1 0.1\n"
           "  batch 64; epochs 30\n"
           "  optimizer adam(lr = 2e-3, betas = (0.9, 0.999))\n"
           "  early_stop val.acc patience 8 max\n"
           "  loss ce\n"
           "  average polyak(0.99)\n"
           "  player critic {\n    params critic\n    loss wd\n    steps 5\n  }\n"
           "  w <- w + 0.1 * x\n"
           "}\n")
    t = items(src)[0]
    assert isinstance(t, A.TrainDef) and t.model == A.Name("MLP") and t.data == A.Name("digits")
    split, batch, epochs, opt, es, loss, avg, player, upd = t.body
    assert split == A.Option("split", [A.Num(0.8), A.Num(0.1), A.Num(0.1)])
    assert (batch.name, epochs.name) == ("batch", "epochs") and at(epochs) == (3, 13)
    assert opt.args[0].func == A.Name("adam") and [k.name for k in opt.args[0].kwargs] == ["lr", "betas"]
    assert es.args == [A.Attr(A.Name("val"), "acc"), A.Name("patience"), A.Num(8), A.Name("max")]
    assert loss == A.Option("loss", [A.Name("ce")])   # `loss` is a keyword in models only
    assert avg.args == [A.Call(A.Name("polyak"), [A.Num(0.99)], [])]
    assert isinstance(player, A.Player) and player.name == "critic"
    assert [o.name for o in player.body] == ["params", "loss", "steps"]
    assert isinstance(upd, A.Update) and upd.target == ["w"]


def test_train_block_with_hyperparameters_and_a_string_data_set():
    t = items('train MLP(hidden = 32) on "linreg" { steps 10 }\n')[0]
    assert isinstance(t.model, A.Call) and t.model.kwargs[0].name == "hidden"
    assert t.data == A.Str("linreg")


def test_several_models_in_one_file():
    its = items("model A() {}\nmodel B() {}\n")
    assert [i.name for i in its] == ["A", "B"]


# ---- types ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("src, dtype, dims", [
    ("f32[B, 64]", "f32", [A.Name("B"), A.Num(64)]),
    ("i64[]", "i64", []),
    ("[3]", None, [A.Num(3)]),
    ("bool[B, T,]", "bool", [A.Name("B"), A.Name("T")]),
    ("[..., d]", None, [A.Ellipsis_(), A.Name("d")]),
    ("[c / groups, k]", None, [A.BinOp("/", A.Name("c"), A.Name("groups")), A.Name("k")]),
    ("f64[2 * B]", "f64", [A.BinOp("*", A.Num(2), A.Name("B"))]),
])
def test_type_expressions(src, dtype, dims):
    (s,) = body(f"model M() {{\n  input x: {src}\n}}\n")
    assert s.type == A.TypeExpr(dtype, dims)
    assert at(s.type) == (2, 12)


# ---- expressions ---------------------------------------------------------------------------------

def test_literals():
    assert expr("42") == A.Num(42) and isinstance(expr("42").value, int)
    for text, value in [("1.5", 1.5), ("2.", 2.0), (".25", 0.25), ("1e-3", 1e-3), ("3E2", 300.0),
                        ("1.5e+2", 150.0)]:
        v = expr(text)
        assert v == A.Num(value) and isinstance(v.value, float), text
    assert expr("true") == A.Bool(True) and expr("false") == A.Bool(False)
    assert expr('"f32"') == A.Str("f32")
    assert expr(r'"a\tb\"c\\"') == A.Str('a\tb"c\\')


def test_tuples_and_lists():
    assert expr("()") == A.Tuple([])
    assert expr("(1,)") == A.Tuple([A.Num(1)])
    assert expr("(1)") == A.Num(1)
    assert expr("(1, 2, )") == A.Tuple([A.Num(1), A.Num(2)])
    assert expr("[]") == A.List([]) and expr("[1, 2]") == A.List([A.Num(1), A.Num(2)])


def _shape(e):
    """A compact rendering of an expression tree, to check grouping."""
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Num):
        return str(e.value)
    if isinstance(e, A.BinOp):
        return f"({_shape(e.left)} {e.op} {_shape(e.right)})"
    if isinstance(e, A.Compare):
        return f"({_shape(e.left)} {e.op} {_shape(e.right)})"
    if isinstance(e, A.BoolOp):
        return f"({_shape(e.left)} {e.op} {_shape(e.right)})"
    if isinstance(e, A.UnaryOp):
        return f"({e.op} {_shape(e.operand)})"
    if isinstance(e, A.Pipe):
        return f"({_shape(e.value)} |> {_shape(e.func)})"
    if isinstance(e, A.Cond):
        return f"({_shape(e.then)} if {_shape(e.test)} else {_shape(e.orelse)})"
    if isinstance(e, A.Call):
        return f"{_shape(e.func)}({', '.join(_shape(a) for a in e.args)})"
    if isinstance(e, A.Attr):
        return f"{_shape(e.value)}.{e.name}"
    if isinstance(e, A.Index):
        return f"{_shape(e.value)}[...]"
    raise AssertionError(type(e))


@pytest.mark.parametrize("src, grouped", [
    ("a + b * c", "(a + (b * c))"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b / c", "((a / b) / c)"),
    ("a @ b + c", "((a @ b) + c)"),
    ("a % b * c", "((a % b) * c)"),
    ("a ** b ** c", "(a ** (b ** c))"),
    ("-a ** 2", "(- (a ** 2))"),
    ("a ** -b", "(a ** (- b))"),
    ("- - a", "(- (- a))"),
    ("+a", "(+ a)"),
    ("-a * b", "((- a) * b)"),
    ("a * -b", "(a * (- b))"),
    ("a < b + c", "(a < (b + c))"),
    ("a == b and c != d", "((a == b) and (c != d))"),
    ("not a and b", "((not a) and b)"),
    ("not a == b", "(not (a == b))"),
    ("a or b and c", "(a or (b and c))"),
    ("a and b or c", "((a and b) or c)"),
    ("a if c else b", "(a if c else b)"),
    ("a if c else b if d else e", "(a if c else (b if d else e))"),
    ("a + 1 if c or d else b", "((a + 1) if (c or d) else b)"),
    ("x |> f |> g", "((x |> f) |> g)"),
    ("x + 1 |> f", "((x + 1) |> f)"),
    ("x |> f if c else g", "(x |> (f if c else g))"),
    ("f(x).y.z", "f(x).y.z"),
    ("-x.T", "(- x.T)"),
    ("x[0] ** 2", "(x[...] ** 2)"),
    ("f(a)(b)", "f(a)(b)"),
])
def test_precedence_and_associativity(src, grouped):
    assert _shape(expr(src)) == grouped


def test_comparisons_do_not_chain():
    with pytest.raises(ParseError):
        parse("const c = a < b < c\n")


def test_calls_with_keyword_arguments():
    e = expr("sum(x, axis = -1, keepdims = true,)")
    assert e.func == A.Name("sum") and e.args == [A.Name("x")]
    assert [(k.name, k.value) for k in e.kwargs] == [
        ("axis", A.UnaryOp("-", A.Num(1))), ("keepdims", A.Bool(True))]
    assert at(e) == (1, 11) and end(e) == (1, 46)
    assert at(e.kwargs[0]) == (1, 18)


def test_keyword_and_positional_arguments_may_interleave():
    e = expr("f(a, k = 1, b)")
    assert e.args == [A.Name("a"), A.Name("b")] and e.kwargs[0].name == "k"


@pytest.mark.parametrize("src, subs", [
    ("x[0]", [A.Num(0)]),
    ("x[-1]", [A.UnaryOp("-", A.Num(1))]),
    ("x[:, 1:]", [A.Slice(None, None, None), A.Slice(A.Num(1), None, None)]),
    ("x[..., :2]", [A.Ellipsis_(), A.Slice(None, A.Num(2), None)]),
    ("x[::2]", [A.Slice(None, None, A.Num(2))]),
    ("x[1:-1:2]", [A.Slice(A.Num(1), A.UnaryOp("-", A.Num(1)), A.Num(2))]),
    ("x[:]", [A.Slice(None, None, None)]),
    ("x[ids]", [A.Name("ids")]),
    ("x[0, ...]", [A.Num(0), A.Ellipsis_()]),
])
def test_indexing_and_slicing(src, subs):
    e = expr(src)
    assert isinstance(e, A.Index) and e.value == A.Name("x") and e.subs == subs


def test_attributes():
    e = expr("enc(x).mu.T")
    assert isinstance(e, A.Attr) and e.name == "T" and e.value.name == "mu"
    assert at(e) == (1, 11) and end(e) == (1, 22)


def test_lambdas():
    e = expr("fn(a, (b, c)) -> a + b")
    assert isinstance(e, A.Lambda) and isinstance(e.body, A.BinOp)
    a, bc = e.params
    assert a.name == "a" and isinstance(bc, A.SigTuple)
    e = expr("fn() { return 1 }")
    assert e.params == [] and isinstance(e.body, A.Block)
    e = expr("fn(h, x: [3]) -> (h, x)")
    assert e.params[1].type == A.TypeExpr(None, [A.Num(3)])


def test_lambda_body_extends_as_far_as_possible():
    e = expr("fn(a) -> a + 1 |> g")
    assert isinstance(e, A.Lambda) and isinstance(e.body, A.Pipe)


def test_arrow_lambda_is_not_an_operand_unless_parenthesized():
    with pytest.raises(ParseError):
        parse("const c = x |> fn(a) -> a * 2\n")
    e = expr("x |> (fn(a) -> a * 2)")
    assert isinstance(e, A.Pipe) and isinstance(e.func, A.Lambda)
    e = expr("x |> fn(a) { return a * 2 }")      # a block body ends at its brace
    assert isinstance(e, A.Pipe) and isinstance(e.func, A.Lambda)
    e = expr("(fn(a) -> a)(3)")
    assert isinstance(e, A.Call) and isinstance(e.func, A.Lambda)


def test_option_arguments_are_juxtaposed_values():
    (t,) = items("train M on d {\n  optimizer sgd (lr = 0.1)\n  split 0.8 0.2\n}\n")
    opt, split = t.body
    assert len(opt.args) == 1 and isinstance(opt.args[0], A.Call)   # a call, not two args
    with pytest.raises(ParseError):
        parse("train M on d {\n  split (0.8, 0.2)\n}\n")


def test_names_spans():
    e = expr("alpha + beta")
    assert at(e.left) == (1, 11) and end(e.left) == (1, 16)
    assert at(e.right) == (1, 19) and end(e.right) == (1, 23)
    assert at(e) == (1, 11) and end(e) == (1, 23)


def test_spans_across_lines():
    c = items("const c = f(1,\n    2)\n")[0]
    assert at(c.value) == (1, 11) and end(c.value) == (2, 7)


def test_keywords_are_names_in_other_contexts():
    # `loss`, `output` and friends are keywords at the start of a model statement only
    e = expr("f(loss = 1)")
    assert e.kwargs[0].name == "loss"
    t = items("train M on d {\n  loss total\n}\n")[0]
    assert t.body[0].name == "loss"


def test_the_parse_tree_holds_the_source_for_error_rendering():
    m = parse("const c = 1\n", "where.dl")
    assert m.items[0].span.source.path == "where.dl"
    assert m.items[0].span.source.line(1) == "const c = 1"


# ---- the grammar itself -----------------------------------------------------------------------------

def test_grammar_is_lalr_without_conflicts():
    """Lark resolves shift/reduce conflicts silently (it shifts); strict analysis refuses
    them, so every parse of the grammar is the only one."""
    from lark import Lark
    from lark.common import ParserConf
    from lark.parsers.lalr_analysis import LALR_Analyzer
    from dsl.parser import GRAMMAR
    lark = Lark(GRAMMAR.read_text(), parser="lalr")
    _, rules, _ = lark.grammar.compile(lark.options.start, ())
    LALR_Analyzer(ParserConf(rules, None, lark.options.start), strict=True).compute_lalr()


def test_every_alias_has_a_transformer_method():
    import re
    from dsl.parser import GRAMMAR, ToAst
    text = re.sub(r"//[^\n]*", "", GRAMMAR.read_text())
    aliases = set(re.findall(r"->\s*([a-z_]+)", text))
    rules = set(re.findall(r"^[!?]?([a-z_]+):", text, re.M))
    inlined = {r for r in re.findall(r"^\?([a-z_]+):", text, re.M)}
    needed = aliases | (rules - inlined - {r for r in rules if r.startswith("_")})
    missing = sorted(n for n in needed if not hasattr(ToAst, n))
    assert missing == []
