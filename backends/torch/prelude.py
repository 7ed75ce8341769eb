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



def hold(root, kind, name, shape, dtype, device):
    """Register a zero ``param`` (nn.Parameter) or ``state`` (buffer) on ``root``
    under dotted ``name``, creating nested sub-modules for the dots, so that
    ``state_dict()`` keys are exactly the dlc names."""
    *path, leaf = name.split(".")
    owner = root
    for part in path:
        child = owner._modules.get(part)
        if child is None:
            if hasattr(owner, part):
                raise ValueError(f"cannot hold {name!r}: {part!r} is taken")
            child = torch.nn.Module()
            owner.add_module(part, child)
        owner = child
    value = torch.zeros(shape, dtype=dtype, device=device)
    try:
        if kind == "param":
            owner.register_parameter(
                leaf, torch.nn.Parameter(value, requires_grad=value.is_floating_point()))
        else:
            owner.register_buffer(leaf, value)
    except KeyError as e:
        raise ValueError(f"cannot hold {kind} {name!r}: {e}") from None
