"""Free each temporary of a generated function after its last use.

A generated `run`/`forward` binds every node to a local, and a local lives until the
function returns: a train step held every intermediate of its forward and backward at
once (the transformer's step peaked at 4x eager PyTorch's memory, where autograd frees
a cotangent once it is consumed). This pass reads the function body back with `ast`
and inserts ``del a, b`` right after the statement that reads a local for the last
time, so a tensor is released as soon as nothing later needs it.

Conservative by construction: only names bound by a plain top-level assignment are
freed (a name bound inside a loop or a branch may never have been bound); a name a
nested function reads (a scan body's closure) is never freed, since it is read when
the function is called, not where it is defined; results are read by the final
`return` and so never freed before it.
"""
from __future__ import annotations

import ast


def free_dead_locals(body: list[str]) -> list[str]:
    """``body``: the lines of a function body (unindented, one statement or a nested
    block each); the same lines with ``del`` statements after last uses."""
    src = "\n".join(body)
    try:
        tree = ast.parse(src)
    except SyntaxError:  # not ours to judge: leave the code as it is
        return body
    stmts = tree.body
    bound = set()
    for st in stmts:
        if isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = st.targets if isinstance(st, ast.Assign) else [st.target]
            for t in targets:
                bound |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    closure = set()
    for st in stmts:
        for f in ast.walk(st):
            if isinstance(f, (ast.FunctionDef, ast.Lambda)):
                closure |= {n.id for n in ast.walk(f) if isinstance(n, ast.Name)}
    last: dict[str, int] = {}
    for i, st in enumerate(stmts):
        for n in ast.walk(st):
            if isinstance(n, ast.Name) and n.id in bound:
                last[n.id] = i
    dels: dict[int, list[str]] = {}
    final = len(stmts) - 1
    for name, i in last.items():
        if name not in closure and i < final:
            dels.setdefault(i, []).append(name)
    if not dels:
        return body
    if any(a.end_lineno >= b.lineno for a, b in zip(stmts, stmts[1:])):
        return body  # two statements on one line: no place between them
    lines = src.split("\n")
    out: list[str] = []
    done = 0  # lines copied so far (comments between statements go with the next)
    for i, st in enumerate(stmts):
        out.extend(lines[done:st.end_lineno])
        done = st.end_lineno
        if i in dels:
            out.append("del " + ", ".join(sorted(dels[i])))
    return out + lines[done:]
