"""The per-user AST cache of the std library: same AST, keyed by content, and only
files this user owns and no one else can write are ever read."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from dsl import ast as A
from dsl import astcache as C
from dsl import parser as P

ROOT = Path(__file__).resolve().parent.parent
STD = sorted((ROOT / "specs" / "std").glob("*.dl"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "dlc" / "ast"


def _spans(x, out):
    if isinstance(x, A.Node):
        s = x.span
        out.append(s and (s.source.path, s.line, s.col, s.end_line, s.end_col))
        for f in dataclasses.fields(x):
            _spans(getattr(x, f.name), out)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _spans(v, out)
    return out


@pytest.mark.parametrize("f", STD + [ROOT / "specs" / "transformer.dl"], ids=lambda f: f.name)
def test_cached_ast_equals_a_fresh_parse(cache, f):
    fresh = P.parse_file(f)
    first = C.parse_file_cached(f)   # a miss: parses and stores
    assert len(list(cache.glob("*.json"))) == 1
    second = C.parse_file_cached(f)  # a hit: decoded from JSON
    assert fresh == first == second
    assert _spans(fresh, []) == _spans(second, [])  # spans (not compared by ==) too


def test_private_modes_and_content_key(cache, tmp_path):
    f = tmp_path / "m.dl"
    f.write_text("fn double(x) { return x + x }\n")
    C.parse_file_cached(f)
    (entry,) = cache.glob("*.json")
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    assert oct(os.stat(entry).st_mode & 0o777) == "0o600"
    f.write_text("fn triple(x) { return x + x + x }\n")  # new content, new entry
    assert C.parse_file_cached(f).items[0].name == "triple"
    assert len(list(cache.glob("*.json"))) == 2


def test_an_entry_others_can_write_is_never_read(cache, tmp_path):
    f = tmp_path / "m.dl"
    f.write_text("fn double(x) { return x + x }\n")
    C.parse_file_cached(f)
    (entry,) = cache.glob("*.json")
    # plant a different (valid) AST under the right key, writable by others
    planted = C.encode(P.parse("fn planted(x) { return x }\n"))
    import json
    entry.write_text(json.dumps(planted))
    os.chmod(entry, 0o666)
    assert C.parse_file_cached(f).items[0].name == "double"
    # a symlink in place of the entry is not followed either
    entry.unlink()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(planted))
    os.chmod(target, 0o600)
    entry.symlink_to(target)
    assert C.parse_file_cached(f).items[0].name == "double"
    # nor is a cache directory that others can write
    os.chmod(cache, 0o777)
    assert C.parse_file_cached(f).items[0].name == "double"


def test_a_damaged_entry_falls_back_to_parsing(cache, tmp_path):
    f = tmp_path / "m.dl"
    f.write_text("fn double(x) { return x + x }\n")
    C.parse_file_cached(f)
    (entry,) = cache.glob("*.json")
    entry.write_text('{"_": "NotANode"}')
    assert C.parse_file_cached(f).items[0].name == "double"
