"""The committed LALR tables (`dsl/lalr_tables.json`) are current and equivalent.

If the grammar or the Lark version changed, regenerate them: `python -m dsl.build_tables`
(the parser still works without them, only slower to start)."""
from __future__ import annotations

import json
from pathlib import Path

from dsl import parser as P
from dsl import tables

ROOT = Path(__file__).resolve().parent.parent


def test_committed_tables_match_the_grammar():
    d = json.loads(tables.TABLES.read_text())
    assert d["key"] == tables.grammar_key(), "stale tables: run `python -m dsl.build_tables`"
    assert tables.load(P.NewlinePostLex()) is not None


def test_loaded_parser_parses_like_a_built_one():
    loaded = tables.load(P.NewlinePostLex())
    built = tables.build(P.NewlinePostLex())
    for f in sorted((ROOT / "specs").glob("*.dl"))[:6] + sorted((ROOT / "specs" / "std").glob("*.dl")):
        text = f.read_text() + "\n"
        assert loaded.parse(text) == built.parse(text), f.name


def test_stale_or_unreadable_tables_are_not_used(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"key": "0" * 64, "data": {}, "memo": {}}))
    assert tables.load(P.NewlinePostLex(), bad) is None
    bad.write_text("not json")
    assert tables.load(P.NewlinePostLex(), bad) is None
    assert tables.load(P.NewlinePostLex(), tmp_path / "missing.json") is None
