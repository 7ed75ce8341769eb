"""Data augmentation declared in a train block: `augment FIELD KIND(...)`.

    augment x noise(std = 0.1)        # x + N(0, std^2), elementwise
    augment image flip(axis = -1)     # each example mirrored along `axis` with p = 0.5
    augment image crop(pad = 2)       # zero-pad the last two axes by `pad`, crop back at
                                      # a random offset per example (random translation)

Augmentations apply to the training batches only (evaluation, early stopping and the
final metrics see the data as it is), in the order written, on the host before a
batch is fed (so on every backend, and before data-parallel sharding: every rank
sees the same global batch). They are seeded by (training seed, round), so a run, and
a resumed run, draws the same augmentations every time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsl import ast as A
from dsl.errors import SpecError, Span

KINDS = {"noise": {"std": None}, "flip": {"axis": -1, "p": 0.5}, "crop": {"pad": None}}
USAGE = ("usage: `augment FIELD noise(std = S)` | `flip(axis = -1)` | `crop(pad = P)`, "
         "e.g. `augment x noise(std = 0.1)`")
STREAM = 0xA06  # separates augmentation draws from batch-order and noise streams


@dataclass
class Augment:
    field: str
    kind: str
    options: dict
    span: Span | None = None

    def key(self):
        return [self.field, self.kind, sorted(self.options.items())]


def parse(prog, model, opts, const) -> list:
    out = []
    for opt in opts:
        if len(opt.args) != 2 or not isinstance(opt.args[0], A.Name):
            raise SpecError("`augment` expects a model input and an augmentation", opt.span,
                            hint=USAGE)
        name, what = opt.args
        if name.id not in model.inputs:
            raise SpecError(f"`augment`: the model has no input `{name.id}`", name.span,
                            hint=f"inputs: {', '.join(model.inputs)}")
        t = model.inputs[name.id]
        kind, kw = _call(prog, what, const)
        options = {**KINDS[kind], **kw}
        for k, v in options.items():
            if v is None:
                raise SpecError(f"`{kind}` needs `{k}`", what.span, hint=USAGE)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"`{kind}` option `{k}` must be a number", what.span)
        if not t.dtype.startswith("f") and kind == "noise":
            raise SpecError(f"`noise` needs a float input; `{name.id}` is {t.dtype}", what.span)
        rank = len(t.shape)
        if kind == "flip" and not (isinstance(options["axis"], int) and
                                   -rank < options["axis"] < rank and options["axis"] % rank):
            raise SpecError(f"`flip` axis must be an axis of one example of `{name.id}` "
                            f"(rank {rank}; axis 0 is the batch)", what.span)
        if kind == "crop" and (rank < 3 or not isinstance(options["pad"], int)
                               or options["pad"] < 1):
            raise SpecError("`crop(pad = P)` needs an integer P >= 1 and an input of rank "
                            ">= 3 (the last two axes are cropped)", what.span)
        if kind == "noise" and options["std"] <= 0 or kind == "flip" and not 0 <= options["p"] <= 1:
            raise SpecError(f"bad `{kind}` options", what.span, hint=USAGE)
        out.append(Augment(name.id, kind, options, opt.span))
    return out


def _call(prog, e, const):
    if isinstance(e, A.Name) and e.id in KINDS:
        return e.id, {}
    if isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id in KINDS:
        if e.args:
            raise SpecError(f"`{e.func.id}` options are given by name", e.args[0].span,
                            hint=USAGE)
        kw = {k.name: const(prog, k.value) for k in e.kwargs}
        unknown = [k for k in kw if k not in KINDS[e.func.id]]
        if unknown:
            raise SpecError(f"`{e.func.id}` has no option `{unknown[0]}`", e.span, hint=USAGE)
        return e.func.id, kw
    raise SpecError("unknown augmentation", e.span, hint=USAGE)


def apply(augments: list, batch: dict, seed: int, round_: int) -> dict:
    """The batch with every augmentation applied (a new dict; inputs are not modified)."""
    rng = np.random.default_rng([STREAM, seed, round_])
    out = dict(batch)
    for a in augments:
        x = np.asarray(out[a.field])
        n = x.shape[0]
        if a.kind == "noise":
            x = x + rng.standard_normal(x.shape).astype(x.dtype) * np.asarray(a.options["std"],
                                                                                x.dtype)
        elif a.kind == "flip":
            pick = rng.random(n) < a.options["p"]
            x = np.where(pick.reshape((n,) + (1,) * (x.ndim - 1)),
                         np.flip(x, axis=a.options["axis"]), x)
        elif a.kind == "crop":
            p = a.options["pad"]
            h, w = x.shape[-2:]
            padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
            dy, dx = rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)
            x = np.stack([padded[i, ..., dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        out[a.field] = x
    return out
