"""A per-user cache of parsed files (the std library and the specs `dlc` is given), as
JSON keyed by content: a spec read again (`dlc check` then `dlc train`) needs no Lark.

Every `dlc` process used to re-parse `specs/std/*.dl` (~0.1 s). `parse_file_cached`
keeps the AST of a file as JSON under ``$XDG_CACHE_HOME/dlc/ast`` (default
``~/.cache/dlc/ast``), named by the SHA-256 of the file's text, of the parser's own
code (`ast.py`, `parser.py`, `grammar.lark`) and of a format version, so an edit to
either the file or the parser misses the cache instead of reading a stale AST.

Safety: the format is JSON (decoding builds only `dsl.ast` nodes, spans, lists
and plain values; it can run no code), and an entry is read only from a directory
and a file owned by this user and writable by no one else, not through a symlink.
Entries are written atomically (a temporary file renamed into place) with mode
0600. Any problem (unwritable home, a file that fails those checks, a decode
error) falls back to parsing; the cache never changes what a file means.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from . import ast as A
from .errors import Source, Span

FORMAT = "1"
_HERE = Path(__file__).parent
_CODE_KEY: list[str] = []


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlc" / "ast"


def _code_key() -> str:
    if not _CODE_KEY:
        h = hashlib.sha256(FORMAT.encode())
        for name in ("ast.py", "parser.py", "source.py", "grammar.lark", "astcache.py"):
            h.update((_HERE / name).read_bytes())
        _CODE_KEY.append(h.hexdigest())
    return _CODE_KEY[0]


def key(text: str) -> str:
    return hashlib.sha256((_code_key() + "\0" + text).encode()).hexdigest()


def _private(st: os.stat_result, kind) -> bool:
    """Owned by us, of the expected kind, and not writable by group or others."""
    return (kind(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _safe_dir(d: Path, create: bool) -> bool:
    try:
        if create:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _private(os.lstat(d), stat.S_ISDIR)
    except OSError:
        return False


# ---- encoding ------------------------------------------------------------------------

def encode(x):
    if isinstance(x, A.Node):
        d = {"_": type(x).__name__}
        for f in dataclasses.fields(x):
            d[f.name] = encode(getattr(x, f.name))
        return d
    if isinstance(x, Span):
        return {"@": [x.line, x.col, x.end_line, x.end_col]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, tuple):
        return {"()": [encode(v) for v in x]}
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            raise TypeError("a dict with non-string keys in the AST")
        return {"{}": [[k, encode(v)] for k, v in x.items()]}  # pairs: no inner object
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"cannot cache an AST holding {type(x).__name__}")


def decode(text: str, src: Source):
    classes = {}

    def hook(o: dict):
        if "_" in o:
            name = o.pop("_")
            cls = classes.get(name)
            if cls is None:
                cls = getattr(A, name, None)
                if not (isinstance(cls, type) and issubclass(cls, A.Node)):
                    raise ValueError(f"not an AST node: {name!r}")
                classes[name] = cls
            return cls(**o)
        if "@" in o:
            return Span(src, *o["@"])
        if "()" in o:
            return tuple(o["()"])
        if "{}" in o:
            return {k: v for k, v in o["{}"]}
        raise ValueError("unexpected object in a cached AST")

    return json.loads(text, object_hook=hook)


# ---- the cache ------------------------------------------------------------------------

def parse_file_cached(path) -> A.Module:
    """`dsl.parser.parse_file(path)`, read from / written to the per-user cache."""
    from .source import read_source  # the parser (and Lark) only on a miss
    src = read_source(path)
    d = cache_dir()
    entry = d / (key(src.text) + ".json")
    if _safe_dir(d, create=False):
        try:
            fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "r", encoding="utf-8") as fh:
                try:
                    if _private(os.fstat(fh.fileno()), stat.S_ISREG):
                        module = decode(fh.read(), src)
                        module.path = src.path  # the same text may live at two paths
                        return module
                except (ValueError, TypeError, KeyError):
                    pass  # a damaged entry: parse, and overwrite it below
    from .parser import parse_source
    module = parse_source(src)
    _store(d, entry, module)
    return module


def _store(d: Path, entry: Path, module) -> None:
    try:
        text = json.dumps(encode(module), separators=(",", ":"))
    except TypeError:
        return
    if not _safe_dir(d, create=True):
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, entry)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
