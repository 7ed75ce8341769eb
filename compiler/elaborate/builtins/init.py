"""Initializers: the scope of `param W: [...] ~ init(...)`."""
from __future__ import annotations

from compiler.core.values import InitSpec
from compiler.elaborate.builtins.base import INIT_SCOPE, _bind, _describe, builtin
from dsl.errors import SpecError

# ---- initializers (the scope of `param W: [...] ~ init`) -------------------------------------------

def _init(kind, params, defaults):
    def fn(ev, args, kwargs, span):
        b = _bind(kind, args, kwargs, span, params, defaults)
        vals = []
        for p in params:
            v = b[p]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"initializer `{kind}`: `{p}` must be a number, found {_describe(v)}",
                                span)
            vals.append(float(v))
        return InitSpec(kind, tuple(vals))
    return fn


for _name, _params, _defaults in [
        ("zeros", [], {}), ("ones", [], {}),
        ("normal", ["mean", "std"], {"mean": 0.0, "std": 1.0}),
        ("uniform", ["low", "high"], {"low": -0.05, "high": 0.05}),
        ("glorot", ["gain"], {"gain": 1.0}), ("glorot_normal", ["gain"], {"gain": 1.0}),
        ("he", ["gain"], {"gain": 1.0}), ("he_uniform", ["gain"], {"gain": 1.0}),
        ("orthogonal", ["gain"], {"gain": 1.0}), ("const", ["value"], {}),
        ("lecun", ["gain"], {"gain": 1.0})]:
    builtin(_name, table=INIT_SCOPE)(_init(_name, _params, _defaults))
INIT_SCOPE["xavier"] = INIT_SCOPE["glorot"]
INIT_SCOPE["kaiming"] = INIT_SCOPE["he"]
