"""Runtime helpers for generated PyTorch code.

`cg.helper(name)` copies one of these functions (with the helpers, imports and
simple constants it uses) into the generated module. Every
``backends/torch/prelude*.py`` module is searched; names must be unique. Keep them
traceable by ``torch.compile`` (no data-dependent Python control flow).
"""
from __future__ import annotations

import torch


def param_or_feed(feeds, name, value):
    """A module parameter/buffer, unless ``feeds`` overrides it by name."""
    v = feeds.get(name)
    if v is None:
        return value
    return torch.as_tensor(v, dtype=value.dtype, device=value.device)


def device_of(v):
    """The device of a fed value (host memory for arrays)."""
    return v.device if isinstance(v, torch.Tensor) else torch.device("cpu")

