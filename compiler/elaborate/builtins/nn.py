"""Builtins for convolution, pooling and host noise (`normal`, `uniform`)."""
from __future__ import annotations

from compiler.elaborate.builtins.base import _bind, _dims, _int, _ints, _tensor, builtin

# ---- convolution and pooling -------------------------------------------------------------------

def _conv(nd):
    def fn(ev, args, kwargs, span):
        b = _bind(f"conv{nd}d", args, kwargs, span, ["x", "w", "stride", "padding", "dilation", "groups"],
                  {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        x, w = _tensor(ev, b["x"], span), _tensor(ev, b["w"], span)
        return ev.add("conv", [x, w], span, stride=_ints(b["stride"], span, "stride", nd),
                      padding=_ints(b["padding"], span, "padding", nd),
                      dilation=_ints(b["dilation"], span, "dilation", nd),
                      groups=_int(b["groups"], span, "groups"))
    fn.__doc__ = f"conv{nd}d(x, w, stride=1, padding=0, dilation=1, groups=1): x [B, C, ...], w [O, C/groups, ...]"
    return fn


def _pool(op, nd):
    def fn(ev, args, kwargs, span):
        b = _bind(f"{op}{nd}d", args, kwargs, span, ["x", "kernel", "stride", "padding"],
                  {"stride": None, "padding": 0})
        x = _tensor(ev, b["x"], span)
        k = _ints(b["kernel"], span, "kernel", nd)
        s = k if b["stride"] is None else _ints(b["stride"], span, "stride", nd)
        return ev.add(op, [x], span, kernel=k, stride=s, padding=_ints(b["padding"], span, "padding", nd))
    fn.__doc__ = f"{op}{nd}d(x, kernel, stride=kernel, padding=0)"
    return fn


for _nd in (1, 2):
    builtin(f"conv{_nd}d")(_conv(_nd))
    builtin(f"max_pool{_nd}d")(_pool("max_pool", _nd))
    builtin(f"avg_pool{_nd}d")(_pool("avg_pool", _nd))


# ---- randomness ---------------------------------------------------------------------------------

@builtin()
def normal(ev, args, kwargs, span):
    """normal(shape, mean=0, std=1): seeded Gaussian noise, fresh each step"""
    b = _bind("normal", args, kwargs, span, ["shape", "mean", "std"], {"mean": 0.0, "std": 1.0})
    z = ev.make_noise("normal", _dims(b["shape"], span), span)
    return _affine(ev, z, b["mean"], b["std"], span)


@builtin()
def uniform(ev, args, kwargs, span):
    """uniform(shape, low=0, high=1): seeded uniform noise, fresh each step"""
    b = _bind("uniform", args, kwargs, span, ["shape", "low", "high"], {"low": 0.0, "high": 1.0})
    u = ev.make_noise("uniform", _dims(b["shape"], span), span)
    scale = ev.binary("-", b["high"], b["low"], _Fake(span))
    return _affine(ev, u, b["low"], scale, span)


def _affine(ev, z, shift, scale, span):
    if not (isinstance(scale, (int, float)) and scale == 1):
        z = ev.binary("*", z, scale, _Fake(span))
    if not (isinstance(shift, (int, float)) and shift == 0):
        z = ev.binary("+", z, shift, _Fake(span))
    return z


class _Fake:
    """Stands in for a BinOp node when builtins reuse the evaluator's arithmetic."""

    def __init__(self, span):
        self.span = span
        self.left = self.right = self


