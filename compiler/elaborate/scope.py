"""Scopes (names to values, nested) and frames (the graph being built; a scan body
is a frame nested in its parent's)."""
from __future__ import annotations

import difflib

from compiler.core.ir import Graph
from dsl.errors import NameError_


class Scope:
    def __init__(self, parent: "Scope | None" = None, kind: str = "block"):
        self.vars: dict = {}
        self.spans: dict = {}
        self.parent = parent
        self.kind = kind

    def lookup(self, name: str):
        s = self
        while s is not None:
            if name in s.vars:
                return s.vars[name]
            s = s.parent
        raise KeyError(name)

    def has(self, name: str) -> bool:
        try:
            self.lookup(name)
            return True
        except KeyError:
            return False

    def define(self, name: str, value, span=None, *, unique: bool = False, what: str = "name"):
        if unique and name in self.vars:
            prev = self.spans.get(name)
            raise NameError_(f"duplicate definition of {what} `{name}`", span,
                             notes=[("first defined here", prev)] if prev else None)
        self.vars[name] = value
        if span is not None:
            self.spans.setdefault(name, span)

    def names(self) -> set:
        out, s = set(), self
        while s is not None:
            out |= set(s.vars)
            s = s.parent
        return out


def unknown_name(name: str, scope: Scope, span, what: str = "name") -> NameError_:
    close = difflib.get_close_matches(name, sorted(scope.names()), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else None
    return NameError_(f"unknown {what} `{name}`", span, hint=hint)


# ---- frames: the graph being built (nested for scan bodies) -----------------------------

class Frame:
    def __init__(self, graph: Graph, parent: "Frame | None" = None, *, length=None, axis=0):
        self.graph = graph
        self.parent = parent
        self.length = length
        self.axis = axis
        self.captures: dict = {}       # parent node id -> body input node id
        self.capture_list: list = []   # parent node ids, in capture order
        self.extra_xs: list = []       # (parent Tensor, body input node): hoisted noise

    @property
    def root(self) -> "Frame":
        f = self
        while f.parent is not None:
            f = f.parent
        return f
