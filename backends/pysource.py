"""Python code generation shared by the NumPy and PyTorch backends.

Both backends turn a graph into the source of a small Python module: one function
(``run(feeds)`` for NumPy, ``forward(self, feeds)`` for PyTorch) that reads the
sources it needs, binds the symbolic dims, computes one node a line in topological
order, and returns a dict of results. What differs between the two (how a source is
read, dtype objects, filled tensors, stacking, the module header) lives in a small
subclass of `PyModuleGen` in ``backends/<b>/codegen.py``; everything else is here:

* naming: a node's variable comes from its user-facing name (``dense0.W`` ->
  ``dense0_W``) or from its op and id (``matmul12``); internal names start with
  ``_`` (``_d_B`` for dims, ``_scan5_body``) so they never meet user names;
* dims: ``cg.dim("2*B*T")`` -> ``(2 * _d_B * _d_T)``, each symbol bound once at the
  top of the function from ``graph.dim_sources`` (``_d_B = x.shape[0]``);
* lowering rules from the primitive table (templates or ``fn(cg, node, *srcs)``);
* helpers: ``cg.helper(name)`` copies a function from the backend's
  ``prelude*.py`` modules (with the helpers and imports it uses) into the module;
* nested functions for ``scan`` bodies and the loop around them (`lower_scan`).

The object handed to lowering rules as ``cg`` is a `Scope` (one per generated
function); its contract API is ``dim shape dtype full helper``. Structural rules
such as scan also use ``emit`` (a statement before the node's line), ``fresh``
(a new local name) and ``function`` (a nested function computing a sub-graph).
"""
from __future__ import annotations

import builtins
import dis
import importlib
import inspect
import json
import keyword
import linecache
import math
import pkgutil
import re
import textwrap
import types
from typing import Any, Callable

from compiler.core.ir import SOURCE_OPS, Graph
from compiler.primitives import get_primitive, render_template
from compiler.core.types import FLOAT_DTYPES, TensorType, check_run_dtype, parse_dim

from .liveness import free_dead_locals

# Names generated code must never assign: modules, builtins, the function's own
# parameters. Internal names start with "_" and node names never do (see sanitize).
_RESERVED = (set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
             | {"np", "torch", "F", "math", "feeds", "self", "run", "forward", "nn"})

_NON_IDENT = re.compile(r"[^0-9A-Za-z_]")


def sanitize(name: str) -> str:
    """A user-facing name as a Python identifier that does not start with ``_``."""
    s = _NON_IDENT.sub("_", name).strip("_")
    if not s:
        s = "v"
    if s[0].isdigit():
        s = "v" + s
    return s


def quote(s: str) -> str:
    """A string literal for generated code (double-quoted, escaped)."""
    return json.dumps(s)


def literal(v: Any) -> str:
    """Source of a Python scalar (inf and nan included)."""
    if hasattr(v, "item") and not isinstance(v, (bool, int, float)):
        v = v.item()  # numpy scalar
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '-float("inf")'
        return repr(v)
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(literal(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise TypeError(f"cannot write {v!r} as a literal")


def type_comment(t: Any) -> str:
    if isinstance(t, TensorType):
        return str(t)
    if isinstance(t, tuple):
        return "(" + ", ".join(type_comment(x) for x in t) + ")"
    return str(t)


def register_source(filename: str, source: str) -> None:
    """Make generated code show in tracebacks (and for inspect)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


# ---- the runtime preludes -----------------------------------------------------

_PRELUDES: dict[str, dict[str, tuple[types.ModuleType, Callable]]] = {}


def prelude_index(package: str) -> dict[str, tuple[types.ModuleType, Callable]]:
    """Every function defined in ``<package>/prelude*.py``: name -> (module, fn)."""
    if package in _PRELUDES:
        return _PRELUDES[package]
    pkg = importlib.import_module(package)
    index: dict[str, tuple[types.ModuleType, Callable]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("prelude"):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        for name, obj in vars(mod).items():
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                if name in index and index[name][1] is not obj:
                    raise ValueError(f"helper {name!r} is defined in both "
                                     f"{index[name][0].__name__} and {mod.__name__}")
                index[name] = (mod, obj)
    _PRELUDES[package] = index
    return index


def global_names(code: types.CodeType) -> set[str]:
    """Globals a function reads (nested functions and comprehensions included)."""
    names = {i.argval for i in dis.get_instructions(code)
             if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= global_names(c)
    return names


# ---- the module generator -------------------------------------------------------

class PyModuleGen:
    """Module-level state of one generated module; subclassed per backend.

    Subclasses set `backend` and `prelude_package` and implement `dtype`, `full`,
    `stack`, `read_source`, `feed_dim`, `prologue`, `header` and `signature`.
    """

    backend = ""
    prelude_package = ""
    # Import lines every generated module starts with.
    imports: tuple[str, ...] = ()
    # The class of each generated function's body (a backend may plan more in it).
    scope_class: type = None  # Scope, set below its definition
    # Run dtypes this backend computes in, and why others are missing.
    run_dtypes: tuple[str, ...] = FLOAT_DTYPES
    no_dtype_why = ""

    def __init__(self, run_dtype: str = "f32"):
        check_run_dtype(run_dtype, self.run_dtypes, self.backend, self.no_dtype_why)
        self.run_dtype = run_dtype
        self.helpers: dict[str, str] = {}          # name -> source, in inclusion order
        self.extra_imports: list[str] = []
        self.dims: dict[str, str] = {}             # symbol -> local variable
        self.prelude = prelude_index(self.prelude_package)
        self.reserved = set(_RESERVED) | set(self.prelude)
        self.graph: Graph | None = None

    # ---- the contract API (reached through Scope) -----------------------------
    def dim(self, d) -> str:
        """Source of a dim: an int, or an expression over the bound symbols."""
        if isinstance(d, bool):
            raise TypeError(f"not a dim: {d!r}")
        if isinstance(d, int):
            return str(d)
        if not isinstance(d, str):
            raise TypeError(f"not a dim: {d!r}")
        coef, syms, off = parse_dim(d.replace(" ", ""))
        terms = ([str(coef)] if coef != 1 or not syms else []) + [self.symbol(s) for s in syms]
        expr = " * ".join(terms)
        if off:
            expr += f" {'+' if off > 0 else '-'} {abs(off)}"
        return expr if (len(terms) == 1 and not off) else f"({expr})"

    def shape(self, dims) -> str:
        parts = [self.dim(d) for d in dims]
        if len(parts) == 1:
            return f"({parts[0]},)"
        return "(" + ", ".join(parts) + ")"

    def symbol(self, s: str) -> str:
        """The local variable holding symbolic dim ``s`` (bound in the prologue)."""
        if s not in self.dims:
            self.dims[s] = "_d_" + _NON_IDENT.sub("_", s)
        return self.dims[s]

    def helper(self, name: str) -> str:
        """Copy prelude function ``name`` (and what it uses) into the module."""
        if name in self.helpers:
            return name
        if name not in self.prelude:
            raise KeyError(f"no helper {name!r} in {self.prelude_package}.prelude*")
        mod, fn = self.prelude[name]
        self.helpers[name] = ""  # placeholder: guards recursion, keeps order
        for ref in sorted(global_names(fn.__code__)):
            obj = getattr(mod, ref, None)
            if ref == name or obj is None:
                continue
            if inspect.isfunction(obj) and ref in self.prelude and self.prelude[ref][1] is obj:
                self.helper(ref)
            elif isinstance(obj, types.ModuleType):
                self._need_import(ref, obj)
            elif isinstance(obj, (int, float, str, bool, tuple)) and not hasattr(builtins, ref):
                self._need_const(ref, obj)
        self.helpers[name] = textwrap.dedent(inspect.getsource(fn)).rstrip() + "\n"
        return name

    def _need_import(self, alias: str, mod: types.ModuleType) -> None:
        name = mod.__name__
        line = f"import {name}" if alias == name else f"import {name} as {alias}"
        if line not in self.imports and line not in self.extra_imports:
            self.extra_imports.append(line)

    def _need_const(self, name: str, value) -> None:
        key = f"_CONST_{name}"
        if key not in self.helpers:
            self.helpers[key] = f"{name} = {literal(value) if not isinstance(value, str) else quote(value)}\n"

    # ---- backend hooks -----------------------------------------------------------
    def dtype(self, dtype: str) -> str:
        raise NotImplementedError

    def full(self, shape, value, dtype: str) -> str:
        raise NotImplementedError

    def stack(self, items: str, axis: int) -> str:
        """Source stacking the list ``items`` along ``axis``."""
        raise NotImplementedError

    def read_source(self, node, var: str) -> str:
        """Expression reading source ``node`` (input/param/state/noise) from feeds."""
        raise NotImplementedError

    def feed_dim(self, name: str, axis: int) -> str:
        """Expression for ``feeds[name].shape[axis]`` (a source read only for a dim)."""
        raise NotImplementedError

    def prologue(self, scope: "Scope", sources: list[int]) -> list[str]:
        """Lines before the sources are read (the torch backend binds ``_dev``)."""
        return []

    def signature(self) -> str:
        raise NotImplementedError

    def header(self, graph: Graph, results: dict[str, int]) -> str:
        return ""

    def footer(self) -> str:
        """Module-level code after the function (may call `helper`)."""
        return ""

    def is_float(self, dtype: str) -> bool:
        return dtype in FLOAT_DTYPES

    # ---- building the whole module --------------------------------------------------
    def generate(self, graph: Graph, results: dict[str, int]) -> "Generated":
        """The module source computing ``results`` (name -> node id) of ``graph``."""
        self.graph = graph
        roots = list(dict.fromkeys(results.values()))
        for r in roots:
            if r not in graph:
                raise KeyError(f"result node {r} is not in graph {graph.name!r}")
        order = self.schedule(graph, graph.topo_order(roots), results)
        self.lowering = (graph, frozenset(order))  # what this module computes
        scope = self.scope_class(self)
        scope.plan(graph, order, set(roots))
        sources = [n for n in order if graph.data(n)["op"] in SOURCE_OPS]
        source_lines = []
        for n in sources:
            node = graph.node(n)
            var = scope.bind(n, scope.fresh(node_hint(node)))
            source_lines.append(f"{var} = {self.read_source(node, var)}")
        for n in order:
            if n not in scope.env:
                self.lower_top(scope, graph, n)
        # Dims were registered while lowering; bind them now, after the sources.
        dim_lines, dim_feeds = self._bind_dims(graph, scope)
        body = self.prologue(scope, sources) + source_lines + dim_lines + scope.lines
        ret = ", ".join(f"{quote(k)}: {scope.env[v]}" for k, v in results.items())
        body.append(f"return {{{ret}}}")
        body = free_dead_locals(body)
        feeds = [graph.node(n).attrs["name"] for n in sources]
        feeds += [f for f in dim_feeds if f not in feeds]
        head = self.header(graph, results).strip()
        foot = self.footer().strip()  # before the helpers are written: it may use some
        imports = "\n".join(list(self.imports) + self.extra_imports)
        blocks = [f"{head}\n{imports}" if head else imports]
        blocks += [src.strip() for src in self.helpers.values()]
        blocks.append(self.signature() + "\n" + "\n".join("    " + l for l in body))
        if foot:
            blocks.append(foot)
        source = "\n\n\n".join(blocks) + "\n"
        return Generated(source, feeds, sources)

    # ---- hooks for a backend that lowers several nodes in one statement -------------
    def schedule(self, graph: Graph, order: list[int], results: dict[str, int]) -> list[int]:
        """The order the top-level nodes are lowered in (any topological order)."""
        return order

    def lower_top(self, scope: "Scope", graph: Graph, n: int) -> None:
        """Lower top-level node ``n`` (a backend may bind several nodes at once)."""
        scope.lower_node(graph, n)

    def _bind_dims(self, graph: Graph, scope: "Scope") -> tuple[list[str], list[str]]:
        lines, feeds = [], []
        for sym, var in self.dims.items():
            where = graph.dim_sources.get(sym) or _find_dim(graph, sym)
            if where is None:
                raise ValueError(f"symbolic dim {sym!r} has no source in graph {graph.name!r} "
                                 "(graph.dim_sources lacks it and no source has it in its shape)")
            n, axis = where
            if n in scope.env:
                lines.append(f"{var} = {scope.env[n]}.shape[{axis}]")
            else:
                name = graph.node(n).attrs["name"]
                feeds.append(name)
                lines.append(f"{var} = {self.feed_dim(name, axis)}")
        return lines, feeds


class Generated:
    """A generated module: its source, the feeds it reads, and its source nodes."""

    def __init__(self, source: str, feeds: list[str], sources: list[int]):
        self.source, self.feeds, self.sources = source, feeds, sources


def _find_dim(graph: Graph, sym: str):
    """A source whose shape holds ``sym`` exactly (fallback when dim_sources lacks it)."""
    for kind in (graph.inputs, graph.noises, graph.states, graph.params):
        for n in kind:
            t = graph.type(n)
            if isinstance(t, TensorType) and sym in t.shape:
                return n, list(t.shape).index(sym)
    return None


def node_hint(node) -> str:
    """Variable name base for a node: its user-facing name, else op and id."""
    if node.op in SOURCE_OPS and node.attrs.get("name"):
        return sanitize(node.attrs["name"])
    if node.name:
        return sanitize(node.name)
    return sanitize(f"{node.op}{node.id}")


# ---- one generated function -------------------------------------------------------

class Scope:
    """The body of one generated function; the ``cg`` lowering rules receive."""

    def __init__(self, mod: PyModuleGen, tag: str = ""):
        self.mod = mod
        # Prefix of internal names made here ("scan4_" in the body of scan %4), so
        # nested functions and loops read as nested.
        self.tag = tag
        self.lines: list[str] = []
        self.names: set[str] = set()
        self._suffix: dict[str, int] = {}  # next suffix to try per base name
        self.env: dict[int, str] = {}
        self.graph: Graph | None = None  # the graph of the node being lowered
        # what lowering rules bound here beyond a node's value, for a later rule to
        # read (a layer norm's saved statistics for its fused backward; `shared`'s)
        self.memo: dict = {}

    # ---- the lowering contract ------------------------------------------------
    def dim(self, d) -> str:
        return self.mod.dim(d)

    def shape(self, dims) -> str:
        return self.mod.shape(dims)

    def dtype(self, dtype: str) -> str:
        return self.mod.dtype(dtype)

    def full(self, shape, value, dtype: str) -> str:
        return self.mod.full(shape, value, dtype)

    def helper(self, name: str) -> str:
        return self.mod.helper(name)

    @property
    def backend(self) -> str:
        return self.mod.backend

    @property
    def run_dtype(self) -> str:
        return self.mod.run_dtype

    # ---- for structural lowerings (scan) ---------------------------------------
    def emit(self, line: str) -> None:
        """Add a statement (before the line of the node being lowered)."""
        self.lines.append(line)

    def fresh(self, hint: str) -> str:
        """A local name not used in this function, nor reserved."""
        base = hint if hint.isidentifier() else sanitize(hint)
        name, k = base, self._suffix.get(base, 1)
        while name in self.names or name in self.mod.reserved or keyword.iskeyword(name):
            name = f"{base}_{k}"
            k += 1
        self._suffix[base] = k
        self.names.add(name)
        return name

    def plan(self, graph: Graph, order: list[int], keep: set[int]) -> None:
        """Told before lowering: this function computes ``order`` of ``graph`` and
        returns ``keep`` (a backend's scope may plan in-place writes from it)."""

    def shared(self, key, expr: str, hint: str) -> str:
        """A variable holding ``expr``, emitted the first time ``key`` is asked for in this
        function and reused after: two lowerings that need the same intermediate (a loss
        and its VJP, both reading the softmax of the same logits) compute it once. The
        body is straight-line code, so the first emission runs before every later use.
        ``key`` names the argument variables; the value must not be written in place."""
        key = ("shared",) + tuple(key)
        if key not in self.memo:
            var = self.fresh(hint)
            self.emit(f"{var} = {expr}")
            self.memo[key] = var
        return self.memo[key]

    def bind(self, n: int, var: str) -> str:
        self.env[n] = var
        return var

    def function(self, graph: Graph, params: list[int], results: list[int], hint: str) -> str:
        """Emit ``def <name>(params): ...; return (results,)`` computing a sub-graph.

        ``params`` are the graph's source nodes in argument order. The function reads
        the enclosing function's dims (``_d_*``) and helpers as closures.
        """
        name = self.fresh(hint)
        sub = type(self)(self.mod, tag=hint.strip("_").removesuffix("body"))
        args = [sub.bind(p, sub.fresh(node_hint(graph.node(p)))) for p in params]
        order = graph.topo_order(list(dict.fromkeys(results)))
        sub.plan(graph, order, set(results))
        for n in order:
            if n in sub.env:
                continue
            node = graph.node(n)
            if node.op in SOURCE_OPS:
                raise ValueError(f"{hint}: the body reads source {node.attrs.get('name')!r} "
                                 f"({node.op}) that is not one of its inputs")
            sub.lower_node(graph, n)
        rets = [sub.env[r] for r in results]
        ret = rets[0] + "," if len(rets) == 1 else ", ".join(rets)
        self.emit(f"def {name}({', '.join(args)}):")
        for line in sub.lines:
            self.emit("    " + line)
        self.emit(f"    return ({ret})")
        return name

    def lower_node(self, graph: Graph, n: int) -> str:
        node = graph.node(n)
        prim = get_primitive(node.op)
        if prim.decomposition is not None and not prim.native(self.mod.backend):
            return self.bind(n, self.inline(prim, graph, node))
        rule = prim.lowering(self.mod.backend)
        args = [self.env[a] for a in node.args]
        outer, self.graph = self.graph, graph
        try:
            expr = rule(self, node, *args) if callable(rule) else render_template(rule, args, node.attrs)
        except Exception as e:  # say which node failed
            e.add_note(f"while lowering node %{n} ({node.op}) to {self.mod.backend}")
            raise
        finally:
            self.graph = outer
        var = self.bind(n, self.fresh(node_hint(node)))
        self.emit(f"{var} = {expr}  # {type_comment(node.type)}")
        return var


    def inline(self, prim, graph: Graph, node) -> str:
        """A composite without a native rule: its decomposition's lines, in place."""
        from compiler.transform.decompose import expand
        sub, ins, out = expand(prim, [graph.type(a) for a in node.args], node.attrs)
        outer = self.env
        self.env = {i: outer[a] for i, a in zip(ins, node.args)}
        try:
            for m in sub.meta["order"]:
                if m not in self.env:
                    self.lower_node(sub, m)
            return self.env[out]
        finally:
            self.env = outer


PyModuleGen.scope_class = Scope


# ---- scan: a nested body function and a Python loop ---------------------------------

def lower_scan(cg: Scope, node, *srcs: str) -> str:
    """Lowering of ``scan`` shared by the NumPy and PyTorch backends.

    Emits the body as a nested function and a loop calling it; the node's value is
    the tuple (final carries..., stacked ys...). With ``reverse`` the steps run from
    the last slice to the first and ``ys[t]`` is still the step that read ``xs[t]``.
    """
    a = node.attrs
    body: Graph = a["body"]
    nc, nx_, nk = a["n_carry"], a["n_x"], a["n_const"]
    axis, reverse = a.get("axis", 0), a.get("reverse", False)
    results = list(body.meta["results"])
    ny = len(results) - nc
    if len(srcs) != nc + nx_ + nk or len(body.inputs) != nc + nx_ + nk:
        raise ValueError(f"scan %{node.id}: {len(srcs)} arguments and {len(body.inputs)} body "
                         f"inputs for n_carry={nc}, n_x={nx_}, n_const={nk}")
    carries, xs, consts = srcs[:nc], srcs[nc:nc + nx_], srcs[nc + nx_:]
    base = f"{cg.tag}scan{node.id}"
    fn = cg.function(body, list(body.inputs), results, f"_{base}_body")
    cvars = [cg.fresh(f"_{base}_c{i}") for i in range(nc)]
    yvars = [cg.fresh(f"_{base}_y{i}") for i in range(ny)]
    ylists = [cg.fresh(f"_{base}_ys{i}") for i in range(ny)]
    t = cg.fresh(f"_{base}_t")
    length = f"{xs[0]}.shape[{axis}]" if xs else cg.dim(a["length"])
    for c, s in zip(cvars, carries):
        cg.emit(f"{c} = {s}")
    for ys in ylists:
        cg.emit(f"{ys} = []")
    rng = f"range({length} - 1, -1, -1)" if reverse else f"range({length})"
    cg.emit(f"for {t} in {rng}:")
    slices = [f"{x}[{':, ' * axis}{t}]" for x in xs]
    targets = cvars + yvars
    lhs = targets[0] + "," if len(targets) == 1 else ", ".join(targets)
    cg.emit(f"    {lhs} = {fn}({', '.join(list(cvars) + slices + list(consts))})")
    for y, ys in zip(yvars, ylists):
        cg.emit(f"    {ys}.append({y})")
    outs = list(cvars) + [cg.mod.stack(f"{ys}[::-1]" if reverse else ys, axis) for ys in ylists]
    return "(" + (outs[0] + "," if len(outs) == 1 else ", ".join(outs)) + ")"


def register_scan(backend: str) -> None:
    """Attach the Python-loop scan lowering to the primitive table for `backend`
    (scan nests a graph, so the code generator lowers it itself)."""
    from compiler.primitives import get_primitive
    get_primitive("scan").lowerings.setdefault(backend, lower_scan)
