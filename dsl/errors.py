"""Source spans and the one error type users ever see.

Every mistake a user can make in a spec is a `DslError` carrying a `Span`; the
command line renders it Elm/Rust style (``file:line:col: error: ...``, the user's
own line, a caret under the span) and exits 1. Nothing else may escape to a user.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A spec's text and where it came from (for rendering lines under errors)."""

    path: str
    text: str

    def line(self, lineno: int) -> str:
        lines = self.text.split("\n")
        return lines[lineno - 1] if 1 <= lineno <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A half-open region of a source: 1-based line/column of start and end."""

    source: Source | None
    line: int
    col: int
    end_line: int
    end_col: int

    @property
    def path(self) -> str:
        return self.source.path if self.source else "<unknown>"

    def __repr__(self) -> str:  # keep AST reprs short
        return f"Span({self.line}:{self.col})"


# Lines longer than this are cut around the caret so a 10 MB line renders sanely.
_MAX_SHOWN = 120


class DslError(Exception):
    """A located, user-facing error. Subclasses say which phase found it."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, *, hint: str | None = None,
                 notes: list[tuple[str, Span | None]] | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = notes or []

    def with_span(self, span: Span | None) -> "DslError":
        if self.span is None:
            self.span = span
        return self

    def render(self) -> str:
        out = [_header(self.span, f"{self.kind}: {self.message}")]
        out += _excerpt(self.span)
        for text, span in self.notes:
            out.append(_header(span, f"note: {text}") if span else f"  note: {text}")
            out += _excerpt(span)
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict:
        # `NameError_` is named so only to not shadow Python's builtin
        d = {"error": type(self).__name__.rstrip("_"), "message": self.message}
        if self.span is not None:
            d.update(file=self.span.path, line=self.span.line, col=self.span.col)
        if self.hint:
            d["hint"] = self.hint
        return d

    def __str__(self) -> str:
        return self.render()


class ParseError(DslError):
    """Syntax: the text is not a spec."""


class NameError_(DslError):
    """An unknown or duplicate name."""


class ShapeError(DslError):
    """Shapes or dtypes that do not fit a primitive or a declaration."""


class SpecError(DslError):
    """Anything else a spec can get wrong: arity, recursion, bad hyperparameters."""


class InputError(DslError):
    """The file itself cannot be read as a spec (missing, binary, not UTF-8)."""


def _header(span: Span | None, text: str) -> str:
    if span is None:
        return text
    return f"{span.path}:{span.line}:{span.col}: {text}"


def _excerpt(span: Span | None) -> list[str]:
    if span is None or span.source is None:
        return []
    line = span.source.line(span.line).rstrip("\r")
    col = max(span.col, 1)
    width = (span.end_col - span.col) if span.end_line == span.line else len(line) - col + 1
    width = max(1, min(width, _MAX_SHOWN))
    shift = 0
    if len(line) > _MAX_SHOWN:
        shift = max(0, col - 1 - _MAX_SHOWN // 2)
        line = ("..." if shift else "") + line[shift:shift + _MAX_SHOWN] + "..."
        shift -= 3 if shift else 0
    gutter = f"{span.line:>4} | "
    pad = " " * (len(gutter) + col - 1 - shift)
    return [gutter + line.replace("\t", " "), pad + "^" * width]
