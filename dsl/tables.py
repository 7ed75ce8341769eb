"""The parser's LALR tables, computed once at build time instead of at every start.

Building the Lark LALR parser from `grammar.lark` takes ~0.1-0.2 s, which every
`dlc` process used to pay. `python -m dsl.build_tables` serialises the built parser
(Lark's own `memo_serialize`: plain dicts, lists, tuples, strings and ints) as JSON
into `dsl/lalr_tables.json` (tuples and int-keyed dicts tagged), keyed by the
SHA-256 of the grammar text and the Lark version. At start-up `load` reads it
(~10 ms) and rebuilds the parser from it, if and only if the key matches;
otherwise the caller builds the tables as before. JSON, not pickle or a Python
module: reading it can run no code, and it does not depend on a bytecode cache
(which this environment may disable). No cache file is written at run time, so
there is nothing another user could plant. `tests/test_parser_tables.py` fails when the committed tables
are stale (regenerate them with `python -m dsl.build_tables`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

GRAMMAR = Path(__file__).with_name("grammar.lark")
TABLES = Path(__file__).with_name("lalr_tables.json")

# The options `dsl.parser` builds its Lark with (postlex is passed separately: it is
# an object, not data).
OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True,
               maybe_placeholders=True)


def grammar_key(text: str | None = None) -> str:
    import lark
    text = GRAMMAR.read_text() if text is None else text
    return hashlib.sha256((text + "\0lark " + lark.__version__).encode()).hexdigest()


def build(postlex):
    """The parser built from the grammar (computes the LALR tables)."""
    from lark import Lark
    return Lark(GRAMMAR.read_text(), postlex=postlex, **OPTIONS)


def load(postlex, path: Path = TABLES):
    """The parser from the committed tables, or None when they are missing or stale."""
    import json
    try:
        d = json.loads(path.read_text(), object_hook=_untag)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("key") != grammar_key():
        return None
    from lark import Lark
    inst = Lark.__new__(Lark)
    try:
        return inst._load({"data": d["data"], "memo": d["memo"]}, postlex=postlex)
    except Exception:  # noqa: BLE001 - tables of another Lark: build instead
        return None


def _tag(x):
    """JSON-ready: tuples and dicts with non-string keys become tagged objects."""
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {k: _tag(v) for k, v in x.items()}
        return {"__items__": [[_tag(k), _tag(v)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"__tuple__": [_tag(v) for v in x]}
    if isinstance(x, list):
        return [_tag(v) for v in x]
    return x


def _untag(o: dict):
    if len(o) == 1:
        if "__tuple__" in o:
            return tuple(o["__tuple__"])
        if "__items__" in o:
            return {(tuple(k) if isinstance(k, list) else k): v for k, v in o["__items__"]}
    return o


def serialise(parser) -> dict:
    from lark.grammar import Rule
    from lark.lexer import TerminalDef
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k != "postlex"}
    return {"data": data, "memo": memo}


def write(postlex, path: Path = TABLES) -> Path:
    """Serialise the parser built with `postlex` (the parser's own, see
    `dsl.build_tables`, which runs this) to `path`."""
    import json
    d = serialise(build(postlex))
    path.write_text(json.dumps(_tag({"key": grammar_key(), **d}), separators=(",", ":")) + "\n")
    return path

