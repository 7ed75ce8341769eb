"""Bagging (notes 8.2): `bagging K [INPUT]` in a train block.

Each of K ensemble members is trained on its own bootstrap sample of the training
split: n rows drawn with replacement from the n training rows, seeded by (training
seed, member). The sample reaches the model as an input (default name `bag`,
`f32[B, K]`): row b's count in member k's sample. Every epoch visits each training
row once, and a member weighting its per-row losses by its counts sees exactly its
bootstrap sample, each row as often as it was drawn (in another batch order):

    input bag: f32[B, K]                   # bootstrap counts, fed by the trainer
    pred = ...                             # [K, B]: every member's prediction
    w = transpose(bag)                     # [K, B]
    loss mse = mean(sum(w * (pred - y) ** 2, axis = 1) / maximum(sum(w, axis = 1), 1))

The validation and test parts (and `dlc equiv`, export) get counts of 1: every member
is evaluated on every row. Members are an array in the model (parameters with a
leading K axis, batched matmuls), so the ensemble is one graph on every backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsl import ast as A
from dsl.errors import SpecError, Span

STREAM = 0xBA6  # separates bootstrap draws from other seeded streams
USAGE = "usage: `bagging K [INPUT]`, e.g. `bagging 5` (the model's input `bag: f32[B, K]`)"


@dataclass
class Bagging:
    members: int
    input: str = "bag"
    span: Span | None = None

    def key(self):
        return [self.members, self.input]


def parse(prog, model, opt, const) -> Bagging | None:
    if opt is None:
        return None
    if len(opt.args) not in (1, 2):
        raise SpecError("`bagging` expects a member count and optionally an input name",
                        opt.span, hint=USAGE)
    k = const(prog, opt.args[0])
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise SpecError(f"`bagging` needs K >= 2 members, found {k!r}", opt.args[0].span)
    name = "bag"
    if len(opt.args) == 2:
        if not isinstance(opt.args[1], A.Name):
            raise SpecError("`bagging`: expected the name of a model input", opt.args[1].span,
                            hint=USAGE)
        name = opt.args[1].id
    t = model.inputs.get(name)
    if t is None:
        raise SpecError(f"`bagging`: the model has no input `{name}` for the bootstrap counts",
                        opt.span, hint=f"declare `input {name}: f32[B, {k}]`")
    if not t.dtype.startswith("f") or len(t.shape) != 2 or t.shape[1] != k:
        raise SpecError(f"`bagging {k}`: input `{name}` must be f32[B, {k}], found "
                        f"{t.dtype}[{', '.join(map(str, t.shape))}]", opt.span)
    return Bagging(k, name, opt.span)


def with_unit_counts(bag: Bagging, ds):
    """The dataset with the counts field at 1 (every member sees every row)."""
    from compiler.training import datasets
    if bag.input in ds.fields:
        return ds
    n = len(next(iter(ds.fields.values())))
    fields = {**ds.fields, bag.input: np.ones((n, bag.members), np.float32)}
    return datasets.Dataset(fields, description=ds.description, classes=ds.classes,
                            label=ds.label, meta=ds.meta)


def counts(n: int, members: int, seed: int) -> np.ndarray:
    """[n, members]: how often each row is in each member's bootstrap sample."""
    out = np.empty((n, members), np.float32)
    for k in range(members):
        draw = np.random.default_rng([STREAM, seed, k]).integers(0, n, n)
        out[:, k] = np.bincount(draw, minlength=n)
    return out


def resample(bag: Bagging, parts, seed: int):
    """(train, val, test) with the training part's counts drawn per member."""
    from compiler.training import datasets
    train, *rest = parts
    fields = {**train.fields, bag.input: counts(train.n, bag.members, seed)}
    train = datasets.Dataset(fields, description=train.description, classes=train.classes,
                             label=train.label, meta=train.meta)
    return (train, *rest)
