"""The builtin table and the argument handling every builtin shares."""
from __future__ import annotations

from compiler.core.values import Builtin, SymDim, Tensor
from dsl.errors import ShapeError, SpecError

BUILTINS: dict[str, Builtin] = {}
INIT_SCOPE: dict[str, Builtin] = {}


def builtin(name=None, *, table=None, lazy=False):
    def deco(fn):
        n = name or fn.__name__.rstrip("_")
        (table if table is not None else BUILTINS)[n] = Builtin(n, fn, (fn.__doc__ or "").strip(),
                                                                lazy=lazy)
        return fn
    return deco


# ---- argument handling ------------------------------------------------------------------

def _bind(name, args, kwargs, span, params: list[str], defaults: dict):
    """Bind positional/keyword args to `params`; missing ones take `defaults`."""
    if len(args) > len(params):
        raise SpecError(f"`{name}` takes at most {len(params)} arguments ({', '.join(params)}), "
                        f"got {len(args)}", span)
    out = dict(zip(params, args))
    for k, v in kwargs.items():
        if k not in params:
            raise SpecError(f"`{name}` has no argument `{k}`", span,
                            hint=f"its arguments are: {', '.join(params)}")
        if k in out:
            raise SpecError(f"`{name}`: `{k}` given twice", span)
        out[k] = v
    for p in params:
        if p not in out:
            if p not in defaults:
                raise SpecError(f"`{name}` needs `{p}`", span)
            out[p] = defaults[p]
    return out


def _tensor(ev, v, span, what="argument"):
    if isinstance(v, Tensor):
        return v
    if isinstance(v, bool):  # a bool scalar (a mask's `true` default): a 0-d bool tensor
        return ev.to_tensor(v, span)
    if isinstance(v, (int, float)) and not isinstance(v, SymDim):
        return ev.to_tensor(float(v) if isinstance(v, float) else v, span)
    raise SpecError(f"{what} must be a tensor, found {_describe(v)}", span)


def _int(v, span, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{what} must be an integer, found {_describe(v)}", span)
    return v


def _bool(v, span, what):
    """A compile-time boolean flag (keepdims, reverse): `true` or `false`, nothing truthy."""
    if not isinstance(v, bool):
        raise SpecError(f"{what} must be true or false, found {_describe(v)}", span)
    return v


def _ints(v, span, what, n=None):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * (n or 1)
    if isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        if n is not None and len(v) != n:
            raise SpecError(f"{what} needs {n} integers, found {len(v)}", span)
        return v
    raise SpecError(f"{what} must be an integer or a tuple of integers, found {_describe(v)}", span)


def _axis_arg(v, span):
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, tuple):
        return tuple(_int(a, span, "axis") for a in v)
    raise SpecError(f"axis must be an integer or a tuple of integers, found {_describe(v)}", span)


def _dims(v, span, what="shape", negative_ok=False):
    if isinstance(v, (int, str)) and not isinstance(v, bool):
        v = (v,)
    if not isinstance(v, tuple) or not all(isinstance(d, (int, str)) and not isinstance(d, bool)
                                           for d in v):
        raise SpecError(f"{what} must be a list of dims, found {_describe(v)}", span)
    if not negative_ok and any(isinstance(d, int) and d < 0 for d in v):
        raise ShapeError(f"{what} {list(v)} has a negative dim", span)
    return tuple(str(d) if isinstance(d, SymDim) else d for d in v)


def _describe(v):
    from compiler.elaborate.checks import describe
    return describe(v)


def _dtype(v, span):
    if not isinstance(v, str) or v not in ("f32", "f64", "f16", "i64", "i32", "bool"):
        shown = f'"{v}"' if isinstance(v, str) else _describe(v)
        raise SpecError(f"unknown dtype {shown}; use one of \"f32\", \"f64\", \"i64\", \"i32\", "
                        "\"bool\"", span)
    return v


