"""Programs: a spec file and its imports loaded into scopes (over the builtins and
the standard library in specs/std), and `elaborate`, which builds one model's graph."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from compiler.core.ir import Graph
from compiler.core.values import Closure, Instance, LayerDef, ModuleRef, Sequential
from compiler.elaborate.checks import describe
from compiler.elaborate.evaluator import Evaluator
from compiler.elaborate.scope import Frame, Scope
from dsl import ast as A
from dsl.astcache import parse_file_cached  # no Lark import unless a file misses the cache
from dsl.errors import DslError, Source, Span, SpecError

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
STD_DIR = SPECS_DIR / "std"



# ---- programs (a file and its imports) ------------------------------------------------

@dataclass
class Program:
    """A loaded spec: its global scope, models and train blocks, in file order."""

    path: str
    scope: Scope
    models: dict = field(default_factory=dict)   # name -> LayerDef(is_model=True)
    trains: list = field(default_factory=list)   # [A.TrainDef]
    module: A.Module | None = None


_STD_CACHE: dict = {}


def builtin_scope() -> Scope:
    """Builtins plus the standard library written in the language (specs/std)."""
    if "scope" not in _STD_CACHE:
        from compiler.elaborate.builtins import BUILTINS
        base = Scope(kind="builtins")
        for name, b in BUILTINS.items():
            base.define(name, b)
        std = Scope(base, kind="std")
        from dsl.astcache import parse_file_cached  # the std AST, cached by content
        for f in sorted(STD_DIR.glob("*.dl")):
            _load_into(parse_file_cached(f), std, str(f), set())
        _STD_CACHE["scope"] = std
    return _STD_CACHE["scope"]


def load_program(path=None, *, text: str | None = None) -> Program:
    """Parse a spec (and its imports) and collect its definitions."""
    if text is not None:
        from dsl.parser import parse_source
        module = parse_source(Source(str(path or "<string>"), text))
    else:  # cached by content like the std library: an unchanged spec needs no parser
        module = parse_file_cached(path)
    scope = Scope(builtin_scope(), kind="global")
    prog = Program(str(path or "<string>"), scope, module=module)
    _load_into(module, scope, prog.path, {str(Path(prog.path).resolve())}, prog)
    return prog


def _load_into(module: A.Module, scope: Scope, path: str, seen: set, prog: Program | None = None):
    base = Path(path).resolve().parent
    for item in module.items:
        if isinstance(item, A.Import):
            target = _resolve_import(item, base)
            key = str(target.resolve())
            if key in seen:
                raise SpecError(f"import cycle: `{item.path}` is already being imported", item.span)
            sub = Scope(builtin_scope(), kind="global")
            _load_into(parse_file_cached(target), sub, str(target), seen | {key})
            if item.alias:
                scope.define(item.alias, ModuleRef(str(target), sub), item.span, unique=True,
                             what="import alias")
            else:
                for name, v in sub.vars.items():
                    scope.define(name, v, sub.spans.get(name))
        elif isinstance(item, A.ConstDef):
            try:
                value = Evaluator(None).eval(item.value, scope)
            except DslError as e:
                raise e.with_span(item.span)
            if isinstance(value, (Instance, Sequential)):
                raise SpecError(f"a const cannot hold {describe(value)}: create layer instances "
                                "inside the model that uses them", item.span)
            scope.define(item.name, value, item.span, unique=True, what="constant")
        elif isinstance(item, A.LayerDef):
            scope.define(item.name, LayerDef(item, scope), item.span, unique=True, what="layer")
        elif isinstance(item, A.FnDef):
            scope.define(item.name, Closure(item.name, item.hparams, item.body, scope, item.span),
                         item.span, unique=True, what="function")
        elif isinstance(item, A.ModelDef):
            d = LayerDef(item, scope, is_model=True)
            scope.define(item.name, d, item.span, unique=True, what="model")
            if prog is not None:
                prog.models[item.name] = d
        elif isinstance(item, A.TrainDef):
            if prog is not None:
                prog.trains.append(item)


def _resolve_import(item: A.Import, base: Path) -> Path:
    for cand in (base / item.path, SPECS_DIR / item.path):
        if cand.is_file():
            return cand
    raise SpecError(f"cannot find the imported file `{item.path}`", item.span,
                    hint=f"paths are relative to {base} or to the bundled specs/ folder")



# ---- the entry point ------------------------------------------------------------------------

def elaborate(prog: Program, model: str | None = None, hparams: dict | None = None, *,
              training: bool = False, dims: dict | None = None, extra: list | None = None,
              span=None) -> Graph:
    """Build the typed graph of one model of a program.

    `hparams` override the model's hyperparameters; `dims` fix symbolic dims to
    integers (``{"B": 32}``), which then appear as static dims everywhere.
    `extra` statements (a train block's update rules `w <- ...`) run last, in the
    model's scope.
    """
    d = pick_model(prog, model)
    g = Graph(d.name)
    ev = Evaluator(Frame(g), training=training)
    scope = Scope(d.scope, kind="model")
    for k, v in ev.bind_hparams(f"model `{d.name}`", d.node.hparams, [], hparams or {},
                                span or d.node.span, d.scope).items():
        scope.define(k, v)
    for k, v in (dims or {}).items():
        scope.define(k, int(v))
    with ev.entering(d.name, d.node.span):
        ev.exec_stmts(d.node.body.stmts, scope, mode="model")
        ev.exec_stmts(list(extra or []), scope, mode="model")
    if not g.outputs:
        raise SpecError(f"model `{d.name}` declares no output, loss or metric", d.node.span)
    g.meta["hparams"] = {k: v for k, v in scope.vars.items()
                         if k in {h.name for h in d.node.hparams}}
    g.meta["training"] = training
    # False: the other mode's graph is this one (a copy with the flag flipped serves it)
    g.meta["reads_training"] = ev.read_training
    g.meta["instances"] = ev
    g.meta["scope"] = scope  # the model's scope: a train block's projections `fn(w) -> ...`
    return g


def pick_model(prog: Program, model: str | None) -> LayerDef:
    if model is None:
        if len(prog.models) == 1:
            return next(iter(prog.models.values()))
        trained = {_train_model_name(t) for t in prog.trains} - {None}
        if len(trained) == 1 and next(iter(trained)) in prog.models:
            return prog.models[next(iter(trained))]  # the model the file's train block trains
        if not prog.models:
            raise SpecError(f"{prog.path} defines no model", file_span(prog))
        raise SpecError(f"{prog.path} defines {len(prog.models)} models "
                        f"({', '.join(prog.models)}); choose one with --model", file_span(prog))
    if model not in prog.models:
        close = difflib.get_close_matches(model, list(prog.models), n=1)
        raise SpecError(f"no model `{model}` in {prog.path}", file_span(prog),
                        hint=f"did you mean `{close[0]}`?" if close else
                        f"models: {', '.join(prog.models) or 'none'}")
    return prog.models[model]


def _train_model_name(t: A.TrainDef):
    m = t.model.func if isinstance(t.model, A.Call) else t.model
    return m.id if isinstance(m, A.Name) else None


def file_span(prog: Program):
    src = prog.module.span.source if prog.module is not None and prog.module.span else None
    return Span(src, 1, 1, 1, 2) if src else None
