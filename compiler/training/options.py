"""Named, configurable things of a train block (optimizers, schedules): the lookup
by name and the option-name checks, with did-you-mean suggestions, in one place."""
from __future__ import annotations

import difflib

REQUIRED = object()  # an option with no default


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def signature(name: str, options: dict) -> str:
    """``adam(lr, beta1=0.9, ...)``: a name and its options with their defaults."""
    parts = [k if v is REQUIRED else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
             for k, v in options.items()]
    return f"{name}({', '.join(parts)})"


def lookup(kind: str, registry: dict, name: str):
    """`registry[name]`, or a ValueError naming the `kind` and the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} `{name}`{did_you_mean(name, registry)}; "
                         f"valid {kind}s: {', '.join(registry)}")
    return registry[name]


def check_names(kind: str, name: str, kwargs: dict, options: dict) -> str:
    """Reject options `name` does not have; return its signature for later messages."""
    sig = signature(name, options)
    for k in kwargs:
        if k not in options:
            raise ValueError(f"{kind} {name} has no option `{k}`{did_you_mean(k, options)}; "
                             f"valid options: {', '.join(options) or 'none'} ({sig})")
    return sig
