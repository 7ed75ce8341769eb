"""Text -> AST. Lark LALR over `grammar.lark`; every alias maps to one `ToAst` method.

Failures become `ParseError`/`InputError` with a span: unreadable files, bad
UTF-8, binary data, syntax errors (labelled from example bad inputs with Lark's
`match_examples`), and input nested too deeply to process safely.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken, VisitError)

from . import ast as A
from .errors import DslError, InputError, ParseError, Source, Span
from .source import MAX_BYTES, decode_source, read_source  # noqa: F401  (re-exported)

GRAMMAR = Path(__file__).with_name("grammar.lark")

# Parse trees deeper than this are refused: the AST passes recurse, and Python's
# stack would overflow on (say) 100,000 nested parentheses.
MAX_DEPTH = 200
# More operators than this in one operand of a bracket level (between commas) is
# refused while lexing, so a pathological chain fails at once instead of after a
# slow parse. No hand-written expression comes near it.
MAX_OPERATORS = 2000
# Files larger than this are not even read; specs (text) are limited to MAX_CHARS
# characters and MAX_LINE characters a line, so every input parses in seconds.
MAX_CHARS = 1_000_000
MAX_LINE = 10_000


class NewlinePostLex:
    """Drops newlines inside ( ) and [ ], keeps them at top level and inside { }."""

    always_accept = ("_NL",)
    _open = {"LPAR": "(", "LSQB": "[", "LBRACE": "{"}
    _close = {"RPAR", "RSQB", "RBRACE"}
    _match = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}

    def __init__(self):
        self.open_brackets: list[Token] = []  # inspected by error reporting

    _operators = {"ADD_OP", "UNARY_OP", "MUL_OP", "POW_OP", "COMP_OP", "NOT", "AND", "OR",
                  "_PIPE", "IF"}
    _resets = {"COMMA", "EQUAL", "SEMICOLON", "COLON", "_ARROW", "_LARROW", "TILDE"}

    def process(self, stream):
        stack: list[str] = []
        self.open_brackets = opened = []
        ops = 0                      # operators in the current operand run
        saved: list[int] = []        # the outer runs, one per open bracket
        for tok in stream:
            t = tok.type
            if t == "_NL":
                if not stack or stack[-1] == "{":
                    ops = 0
                    yield tok
                continue
            if t in self._open:
                stack.append(self._open[t])
                opened.append(tok)
                saved.append(ops)
                ops = 0
                if len(stack) > MAX_DEPTH:
                    raise ParseError(f"brackets nested more than {MAX_DEPTH} deep; split the "
                                     "expression into named steps", _tok_span(tok))
            elif t in self._close:
                if stack and stack[-1] == self._match[t]:
                    stack.pop()
                    opened.pop()
                    ops = saved.pop()
            elif t in self._operators:
                ops += 1
                if ops > MAX_OPERATORS:
                    raise ParseError(f"an expression with more than {MAX_OPERATORS} operators; "
                                     "split it into named steps", _tok_span(tok))
            elif t in self._resets:
                ops = 0
            yield tok


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    from . import tables  # the LALR tables computed at build time, when still current
    return tables.load(NewlinePostLex()) or tables.build(NewlinePostLex())


_CURRENT: list[Source] = []  # the source being transformed (spans point into it)


def _tok_span(tok: Token) -> Span:
    src = _CURRENT[-1] if _CURRENT else None
    end_line = tok.end_line if tok.end_line is not None else tok.line
    end_col = tok.end_column if tok.end_column is not None else tok.column + len(str(tok))
    return Span(src, tok.line or 1, tok.column or 1, end_line or 1, end_col or 1)


def _meta_span(meta) -> Span | None:
    if getattr(meta, "empty", True):
        return None
    return Span(_CURRENT[-1] if _CURRENT else None, meta.line, meta.column, meta.end_line,
                meta.end_column)


def _tok(x):
    return str(x) if isinstance(x, Token) else x


@v_args(meta=True)
class ToAst(Transformer):
    """One method per grammar rule/alias; each builds one AST node with its span."""

    # -- top level --
    def start(self, meta, items):
        return A.Module([i for i in items if i is not None], span=_meta_span(meta))

    def import_(self, meta, c):
        return A.Import(_unquote(c[0]), _tok(c[1]), span=_meta_span(meta))

    def const_def(self, meta, c):
        return A.ConstDef(str(c[0]), c[1], span=_meta_span(meta))

    def layer_def(self, meta, c):
        return A.LayerDef(str(c[0]), c[1] or [], c[2], span=_meta_span(meta))

    def fn_def(self, meta, c):
        return A.FnDef(str(c[0]), c[1] or [], c[2], span=_meta_span(meta))

    def model_def(self, meta, c):
        return A.ModelDef(str(c[0]), c[1] or [], c[2], span=_meta_span(meta))

    def hparams(self, meta, c):
        _check_unique(c, "parameter")
        return list(c)

    def hparam(self, meta, c):
        annot = str(c[1]) if isinstance(c[1], Token) else c[1]
        return A.HParam(str(c[0]), annot, c[2], span=_meta_span(meta))

    def body(self, meta, c):
        return A.Block(list(c), span=_meta_span(meta))

    # -- statements --
    def let(self, meta, c):
        return A.Let(c[0], c[1], span=_meta_span(meta))

    def targets(self, meta, c):
        return list(c)

    def target_name(self, meta, c):
        return A.SigParam(str(c[0]), None, span=_tok_span(c[0]))

    def target_tuple(self, meta, c):
        _check_defaults(c[0], top=False)
        return A.SigTuple(c[0], span=_meta_span(meta))

    def return_(self, meta, c):
        return A.Return(c[0], span=_meta_span(meta))

    def if_stmt(self, meta, c):
        return A.If(c[0], c[1], c[2] if len(c) > 2 else None, span=_meta_span(meta))

    def param_decl(self, meta, c):
        return A.ParamDecl(str(c[0]), c[1], c[2], span=_meta_span(meta))

    def state_decl(self, meta, c):
        return A.StateDecl(str(c[0]), c[1], c[2], span=_meta_span(meta))

    def input_decl(self, meta, c):
        return A.InputDecl(str(c[0]), c[1], c[2] if len(c) > 2 else None, span=_meta_span(meta))

    def result_decl(self, meta, c):
        return A.ResultDecl(c[0], str(c[1]), c[2], span=_meta_span(meta))

    def result_kind(self, meta, c):
        return str(c[0])

    def update(self, meta, c):
        return A.Update(c[0], c[1], span=_meta_span(meta))

    def dotted(self, meta, c):
        return [str(t) for t in c]

    def call_def(self, meta, c):
        _check_unique(c[0] or [], "input")
        _check_defaults(c[0] or [], top=True)
        return A.CallDef(c[0] or [], c[1], span=_meta_span(meta))

    def sig_params(self, meta, c):
        return list(c)

    def sig_name(self, meta, c):
        return A.SigParam(str(c[0]), c[1], c[2], span=_meta_span(meta))

    def sig_tuple(self, meta, c):
        return A.SigTuple(c[0], span=_meta_span(meta))

    # -- training --
    def train_def(self, meta, c):
        return A.TrainDef(c[0], c[1], c[2], span=_meta_span(meta))

    def train_body(self, meta, c):
        return list(c)

    def option(self, meta, c):
        return A.Option(c[0], list(c[1:]), span=_meta_span(meta))

    def option_name(self, meta, c):
        return str(c[0])

    def player(self, meta, c):
        return A.Player(str(c[0]), c[1], span=_meta_span(meta))

    # -- types --
    def type_expr(self, meta, c):
        return A.TypeExpr(_tok(c[0]), c[1] if c[1] is not None else [], span=_meta_span(meta))

    def dims(self, meta, c):
        return list(c)

    def dim_ellipsis(self, meta, c):
        return A.Ellipsis_(span=_meta_span(meta))

    # -- expressions --
    def pipe(self, meta, c):
        return A.Pipe(c[0], c[1], span=_meta_span(meta))

    def cond(self, meta, c):
        return A.Cond(c[0], c[1], c[2], span=_meta_span(meta))

    def or_(self, meta, c):
        return A.BoolOp("or", c[0], c[1], span=_meta_span(meta))

    def and_(self, meta, c):
        return A.BoolOp("and", c[0], c[1], span=_meta_span(meta))

    def not_(self, meta, c):
        return A.UnaryOp("not", c[0], span=_meta_span(meta))

    def compare(self, meta, c):
        return A.Compare(str(c[1]), c[0], c[2], span=_meta_span(meta))

    def binop(self, meta, c):
        return A.BinOp(str(c[1]), c[0], c[2], span=_meta_span(meta))

    def unary(self, meta, c):
        return A.UnaryOp(str(c[0]), c[1], span=_meta_span(meta))

    def call(self, meta, c):
        args = c[1] or []
        pos = [a for a in args if not isinstance(a, A.Kwarg)]
        kws = [a for a in args if isinstance(a, A.Kwarg)]
        return A.Call(c[0], pos, kws, span=_meta_span(meta))

    def index(self, meta, c):
        return A.Index(c[0], c[1], span=_meta_span(meta))

    def attr(self, meta, c):
        return A.Attr(c[0], str(c[1]), span=_meta_span(meta))

    def args(self, meta, c):
        return list(c)

    def kwarg(self, meta, c):
        return A.Kwarg(str(c[0]), c[1], span=_meta_span(meta))

    def subs(self, meta, c):
        return list(c)

    def slice(self, meta, c):
        return A.Slice(c[0], c[1], c[2], span=_meta_span(meta))

    def ellipsis(self, meta, c):
        return A.Ellipsis_(span=_meta_span(meta))

    def name(self, meta, c):
        return A.Name(str(c[0]), span=_tok_span(c[0]))

    def int_(self, meta, c):
        digits = str(c[0]).lstrip("0") or "0"
        if len(digits) > 19 or int(digits) >= 2 ** 63:
            raise ParseError("integer literal too large (at most 2**63 - 1)", _tok_span(c[0]))
        return A.Num(int(digits), span=_tok_span(c[0]))

    def float_(self, meta, c):
        value = float(c[0])
        if value in (float("inf"), float("-inf")):  # 1e999: not a number any backend can hold
            raise ParseError("float literal too large (at most about 1.8e308)", _tok_span(c[0]))
        return A.Num(value, span=_tok_span(c[0]))

    def string(self, meta, c):
        return A.Str(_unquote(c[0]), span=_tok_span(c[0]))

    def true(self, meta, c):
        return A.Bool(True, span=_meta_span(meta))

    def false(self, meta, c):
        return A.Bool(False, span=_meta_span(meta))

    def tuple_(self, meta, c):
        return A.Tuple([x for x in c if x is not None], span=_meta_span(meta))

    def list_(self, meta, c):
        return A.List([x for x in c if x is not None], span=_meta_span(meta))

    def lambda_(self, meta, c):
        _check_unique(c[0] or [], "argument")
        _check_defaults(c[0] or [], top=False)
        return A.Lambda(c[0] or [], c[1], span=_meta_span(meta))


def _unquote(tok) -> str:
    s = str(tok)[1:-1]
    if "\\" not in s:
        return s
    try:
        return s.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise ParseError(f"bad escape sequence in a string ({e.reason})", _tok_span(tok)) from None


def _check_defaults(params, *, top: bool) -> None:
    """Defaults (`keep = true`) are for the top-level inputs of a layer's call
    definition, and once one input has a default every later one needs one too."""
    seen_default = None
    for p in params:
        if isinstance(p, A.SigTuple):
            for q in p.items:
                _check_defaults([q], top=False)
            if seen_default is not None:
                raise ParseError("an input without a default cannot follow one with a default",
                                 p.span, notes=[("this input has a default", seen_default)])
            continue
        if p.default is not None:
            if not top:
                raise ParseError(f"`{p.name}` cannot have a default here: only the inputs of a "
                                 "layer's call definition `(x, mask = true) -> ...` can", p.span)
            seen_default = p.span
        elif seen_default is not None:
            raise ParseError(f"input `{p.name}` needs a default: it follows an input that has one",
                             p.span, notes=[("this input has a default", seen_default)])


def _check_unique(params, what: str) -> None:
    """Refuse `layer L(a, a)`, `fn(x, (y, x)) -> ...` and the like."""
    seen = {}

    def walk(items):
        for p in items:
            if isinstance(p, A.SigTuple):
                walk(p.items)
                continue
            if p.name in seen:
                raise ParseError(f"duplicate {what} `{p.name}`", p.span,
                                 notes=[("first declared here", seen[p.name])])
            seen[p.name] = p.span
    walk(params)


# ---- reading files -------------------------------------------------------------

# ---- parsing -------------------------------------------------------------------

def parse(text: str, path: str = "<string>") -> A.Module:
    return parse_source(Source(path, text))


def parse_file(path) -> A.Module:
    return parse_source(read_source(path))


def _check_size(src: Source) -> None:
    """Refuse absurdly long lines and files before parsing (located, and fast)."""
    text = src.text
    if len(text) <= MAX_LINE and len(text) <= MAX_CHARS:
        return
    offset = 0
    for i, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE:
            raise ParseError(f"line {i} is {len(line):,} characters long; lines are limited to "
                             f"{MAX_LINE:,}", Span(src, i, MAX_LINE + 1, i, MAX_LINE + 2))
        if offset + len(line) > MAX_CHARS:
            col = max(1, MAX_CHARS - offset + 1)
            raise ParseError(f"the spec is {len(text):,} characters long; specs are limited to "
                             f"{MAX_CHARS:,}", Span(src, i, col, i, col + 1))
        offset += len(line) + 1


def parse_source(src: Source) -> A.Module:
    _CURRENT.append(src)
    try:
        _check_size(src)
        try:
            tree = _lark().parse(src.text + "\n")
        except UnexpectedInput as e:
            raise _syntax_error(e, src) from None
        _check_depth(tree, src)
        try:
            module = ToAst().transform(tree)
        except VisitError as e:  # ToAst's own located errors, unwrapped
            if isinstance(e.orig_exc, DslError):
                raise e.orig_exc from None
            raise
        module.path = src.path
        return module
    finally:
        _CURRENT.pop()


def _check_depth(tree: Tree, src: Source) -> None:
    stack = [(tree, 1)]
    while stack:
        t, d = stack.pop()
        if d > MAX_DEPTH:
            span = _meta_span(t.meta) or Span(src, 1, 1, 1, 2)
            raise ParseError(f"expression nested more than {MAX_DEPTH} deep; split it into "
                             "named steps", span)
        stack.extend((c, d + 1) for c in t.children if isinstance(c, Tree))


# Example bad inputs, each labelled with the message a user should see.
_EXAMPLES = {
    "missing `}`: a block is not closed before the end of the file": [
        "model M() {\n input x: f32[B]\n",
        "layer L() {\n (x) -> x\n",
        "model M() {\n y = f(x)\n output y\n",
    ],
    "unbalanced parenthesis: a `(` is not closed": [
        "model M() {\n y = (x + 1\n}\n",
        "model M() {\n y = f(x\n}\n",
    ],
    "unbalanced bracket: a `[` is not closed": [
        "model M() {\n input x: f32[B, 3\n}\n",
    ],
    "expected an expression after `=`": [
        "model M() {\n y = \n}\n",
        "model M() {\n output y = \n}\n",
        "const c =\n",
    ],
    "a statement must be `name = expression`, a declaration, or `(args) -> body`": [
        "model M() {\n y x\n}\n",
        "model M() {\n 3 + 4\n}\n",
    ],
    "a top-level item must be `import`, `const`, `layer`, `fn`, `model` or `train`": [
        "x = 3\n",
        "models M() {}\n",
        "3\n",
        "\nx = 3\n",
        "\n3\n",
        "const c = 1\nx = 3\n",
    ],
    "a declaration needs a type, as in `input x: f32[B, 64]`": [
        "model M() {\n input x\n}\n",
        "model M() {\n param W\n}\n",
    ],
    "an arrow function used as an operand needs parentheses, as in `x |> (fn(a) -> a * 2)`": [
        "const c = x |> fn(a) -> a\n",
        "const c = 1 + fn(a) -> a\n",
        "const c = x |> fn() -> a\n",
        "const c = x |> fn(a, b) -> a\n",
    ],
    "`output`, `loss` and `metric` start declarations (`loss ce = ...`); they cannot be "
    "assigned to": [
        "model M() {\n loss = 3\n}\n",
        "model M() {\n output = 3\n}\n",
        "model M() {\n metric = 3\n}\n",
        "model M() {\n loss, b = 3\n}\n",
    ],
    "unexpected `}`: there is no open block to close": [
        "model M() {\n}\n}\n",
    ],
}


def _error_key(e: UnexpectedInput):
    """Where the parser failed: its LALR state and the offending token's type.
    (Lark's own `match_examples` also compares stack depths, so an example stops
    matching as soon as the same mistake sits one block deeper.)"""
    state, tok = getattr(e, "state", None), getattr(e, "token", None)
    try:
        return (state.position, tok.type)
    except AttributeError:
        return None


@functools.lru_cache(maxsize=1)
def _example_labels() -> dict:
    labels = {}
    for label, examples in _EXAMPLES.items():
        for example in examples:
            try:
                _lark().parse(example)
            except UnexpectedInput as ut:
                key = _error_key(ut)
                if key is not None:
                    labels.setdefault(key, label)
            except DslError:
                pass
    return labels


_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`",
    "SEMICOLON": "`;`", "DOT": "`.`", "TILDE": "`~`", "$END": "end of file",
    "COMP_OP": "a comparison", "ADD_OP": "`+` or `-`", "MUL_OP": "`*`, `/`, `@` or `%`",
    "POW_OP": "`**`", "UNARY_OP": "`-`",
}


def _pretty(term: str) -> str:
    if term in _TOKEN_NAMES:
        return _TOKEN_NAMES[term]
    try:
        pat = _lark().get_terminal(term).pattern
        if pat.type == "str":
            return f"`{pat.value}`"
    except KeyError:
        pass
    return term.lower()


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "the end of the line"
    text = str(tok)
    return f"`{text[:40]}{'...' if len(text) > 40 else ''}`"


def _expected(e: UnexpectedInput) -> set:
    """The terminals the parser could take here. `accepts` is exact; `expected` also
    lists the newline the postlexer may always pass."""
    accepts = getattr(e, "accepts", None)
    return set(accepts if accepts else (e.expected or ()))


def _syntax_error(e: UnexpectedInput, src: Source) -> ParseError:
    opened = list(_lark().options.postlex.open_brackets)  # before re-parsing examples
    label = _example_labels().get(_error_key(e))
    line, col = getattr(e, "line", 1), getattr(e, "column", 1)
    if not isinstance(line, int) or line < 1:
        lines = src.text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(src, line, col, line, col + 1)
    if isinstance(e, UnexpectedCharacters):
        ch = src.text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(src.text) else "?"
        msg = f"unexpected character `{ch}`"
    elif isinstance(e, (UnexpectedToken, UnexpectedEOF)):
        tok = getattr(e, "token", None)
        expected = sorted({_pretty(t) for t in _expected(e) if not t.startswith("__")})
        found = _describe_token(tok) if tok is not None else "the end of the file"
        if tok is not None and tok.type not in ("$END",) and tok.line:
            span = _tok_span(tok) if tok.type != "_NL" else Span(src, tok.line, tok.column,
                                                               tok.line, tok.column + 1)
        shown = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
        msg = f"unexpected {found}" + (f"; expected {shown}" if expected else "")
    else:
        msg = "syntax error"
    if label:
        msg = f"{label} ({msg})"
    notes = []
    if isinstance(e, (UnexpectedToken, UnexpectedEOF)) and opened:
        tok = getattr(e, "token", None)
        closing = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}
        top = opened[-1]
        expected = _expected(e)
        if tok is None or tok.type == "$END" or (tok.type in closing and str(top) != closing[tok.type]):
            notes.append((f"this `{top}` is not closed", _tok_span(top)))
        elif (str(top) in "([" and tok.line and tok.line > top.line
              and not src.line(tok.line)[: max(tok.column - 1, 0)].strip()
              and ({"RPAR", "RSQB"} & expected)):
            # the newline ending the statement was swallowed by an open `(` or `[`
            notes.append((f"this `{top}` is not closed", _tok_span(top)))
            close = "`)`" if str(top) == "(" else "`]`"
            msg = f"unexpected {_describe_token(tok)}; expected {close}" + \
                (", `,`" if "COMMA" in expected else "")
    return ParseError(msg, span, notes=notes)
