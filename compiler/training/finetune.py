"""Fine-tuning: `init_from CHECKPOINT [PREFIX ...]` and `freeze PREFIX ...` in a train block.

    init_from "runs/pre/checkpoint.safetensors" encoder   # encoder.* from a pretrained run
    freeze encoder                                       # ... and keep it fixed

`init_from` starts the named parameters (all the checkpoint's params of the model when
no prefix is given) from the ``params/`` namespace of a dlc checkpoint (a safetensors
file, data only: nothing is unpickled), or of a run directory; the path is relative to
the spec's folder, then to the working directory. Shapes must match the model's. Several
`init_from` lines may read several checkpoints, in order. `freeze` removes parameters
from every optimizer group: they get no update and no optimizer slots. A resumed run
(`--resume`) continues from its own checkpoint instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsl import ast as A
from dsl.errors import SpecError, Span


@dataclass
class InitFrom:
    path: str
    prefixes: list
    params: list              # model params it sets ([] before resolution: all)
    span: Span | None = None
    extra: dict = field(default_factory=dict)

    def key(self):
        return [self.path, list(self.params)]


def parse_init_from(prog, model, opts, param_group) -> list:
    out = []
    for opt in opts:
        if not opt.args or not isinstance(opt.args[0], A.Str):
            raise SpecError("`init_from` expects a quoted checkpoint path, then optional "
                            "parameter prefixes", opt.span,
                            hint='e.g. `init_from "runs/pre/checkpoint.safetensors" encoder`')
        path, where = opt.args[0].value, opt.args[1:]
        if where:
            prefixes, params = param_group(model, A.Option(opt.name, where, span=opt.span))
        else:
            prefixes, params = [], list(model.params)
        out.append(InitFrom(path, prefixes, params, opt.span))
    return out


def parse_freeze(model, opts, param_group) -> list:
    frozen = []
    for opt in opts:
        _, params = param_group(model, opt)
        frozen += [p for p in params if p not in frozen]
    return frozen


def resolve(path: str, base_dir: str | None) -> Path:
    p = Path(path)
    if base_dir and not p.is_absolute() and (Path(base_dir) / p).exists():
        return Path(base_dir) / p
    return p


def initial_params(cfg, model) -> dict:
    """The params the `init_from` lines set, checked against the model's shapes."""
    from compiler.training import checkpoint
    out = {}
    init = model.init_params(0)  # shapes and dtypes to match
    for item in cfg.init_from:
        path = resolve(item.path, cfg.base_dir)
        try:
            params, _ = checkpoint.load_params(path)
        except checkpoint.CheckpointError as e:
            raise SpecError(f"`init_from`: {e}", item.span) from None
        names = item.params if item.prefixes else [p for p in item.params if p in params]
        if not names:
            raise SpecError(f"`init_from`: {path} holds none of the model's parameters",
                            item.span, hint=f"it holds: {', '.join(list(params)[:6])}")
        for p in names:
            if p not in params:
                raise SpecError(f"`init_from`: {path} has no parameter `{p}`", item.span)
            want = np.asarray(init[p])
            if tuple(params[p].shape) != want.shape:
                raise SpecError(f"`init_from`: `{p}` is {list(params[p].shape)} in {path} but "
                                f"{list(want.shape)} in the model", item.span)
            out[p] = np.asarray(params[p]).astype(want.dtype)
    return out
