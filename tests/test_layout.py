"""The house rules: imports point one way (no cycles, layers in order) and rooms
stay small.  The import graph is read from the source with `ast`, so an import
inside a function counts as much as one at the top: a lazy import still ties
two modules together."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dsl", "compiler", "backends")

# Lower layers may not import higher ones.  A module's layer is the longest
# prefix of its dotted name listed here.
LAYERS = {
    "dsl": 0,
    "compiler.core": 1,
    "compiler.primitives": 1,
    "compiler.elaborate": 3,
    "compiler.transform": 2,
    "backends": 3,
    "compiler.training": 4,
    "compiler.api": 5,
    "compiler.commands": 6,
    "compiler.__main__": 7,
}
MAX_LINES = 600          # "about 600": the primitive table is exempt
EXEMPT = ("compiler/primitives/",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(p)] = p
    return out


def resolve(mod: str, path: Path, node: ast.AST, known: set[str]) -> list[str]:
    """The project modules an import statement names (a `from pkg import sub`
    names the submodule when there is one)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = mod.split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # `from pkg import sub` names the submodule where there is one
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target
                 for a in node.names]
    out = []
    for n in names:
        # the longest known prefix
        parts = n.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.append(".".join(parts))
    return out


def import_graph() -> nx.DiGraph:
    mods = modules()
    known = set(mods)
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for tgt in resolve(mod, path, node, known):
                    if tgt != mod:
                        g.add_edge(mod, tgt, line=node.lineno)
    return g


def layer(mod: str) -> int | None:
    best = None
    for prefix, lv in LAYERS.items():
        if mod == prefix or mod.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, lv)
    return best[1] if best else None


def test_no_import_cycles():
    g = import_graph()
    cycles = [c for c in nx.simple_cycles(g)]
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(c + [c[0]]) for c in sorted(cycles, key=len)[:20])


def test_imports_point_down_the_layers():
    g = import_graph()
    bad = []
    for a, b, data in g.edges(data=True):
        la, lb = layer(a), layer(b)
        if la is not None and lb is not None and lb > la:
            bad.append(f"{a} (layer {la}) imports {b} (layer {lb}) at line {data['line']}")
    assert not bad, "imports that point up:\n" + "\n".join(sorted(bad))


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer(m) is None and m not in PACKAGES and m != "compiler"]
    assert not missing, f"modules outside the layer map: {missing}"


def test_backends_only_through_the_registry():
    g = import_graph()
    bad = [f"{a} imports {b}" for a, b in g.edges()
           if a.startswith("compiler.") and b.startswith("backends")
           and a != "compiler.core.backend_registry"]
    assert not bad, "\n".join(bad)


def test_rooms_of_one_job():
    big = []
    for mod, path in modules().items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(EXEMPT):
            continue
        n = len(path.read_text().splitlines())
        if n > MAX_LINES + 50:
            big.append(f"{rel}: {n} lines")
    assert not big, "modules over about 600 lines:\n" + "\n".join(big)


def test_the_cycle_finder_sees_a_cycle(tmp_path):
    """The guard itself can fail: a two-module circle is reported by name."""
    g = nx.DiGraph([("a", "b"), ("b", "a")])
    assert [sorted(c) for c in nx.simple_cycles(g)] == [["a", "b"]]
