"""Reading a spec file into a `Source`, without the parser (so a cached AST needs no
Lark import: `dsl.astcache`). Every way a file can be unreadable is an InputError."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError, Source, Span

# Files larger than this are not even read (dsl.parser limits the text further).
MAX_BYTES = 64 * 1024 * 1024


def read_source(path: str | os.PathLike) -> Source:
    """Read a spec file, turning every way a file can be unreadable into InputError."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise InputError(f"no such file: {name}")
    if p.is_dir():
        raise InputError(f"{name} is a directory, not a .dl file")
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{name} is {size} bytes; specs are limited to {MAX_BYTES} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror or e}") from None
    return decode_source(data, name)


def decode_source(data: bytes, name: str) -> Source:
    if b"\x00" in data:
        i = data.index(b"\x00")
        line = data[:i].count(b"\n") + 1
        start = data.rfind(b"\n", 0, i) + 1
        col = len(data[start:i].decode("utf-8", errors="replace")) + 1
        shown = data[: i + 200].decode("utf-8", errors="replace")
        shown = "".join(c if c.isprintable() or c in "\t\n" else "\ufffd" for c in shown)
        raise InputError(f"{name} looks like a binary file (a NUL byte), not a .dl spec",
                         Span(Source(name, shown), line, col, line, col + 1))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        src = Source(name, data.decode("utf-8", errors="replace"))
        raise InputError(f"invalid UTF-8 (byte 0x{data[e.start]:02x})",
                         Span(src, line, col, line, col + 1)) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return Source(name, text)
