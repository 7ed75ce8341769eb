"""Where `dlc equiv` gets its inputs: a batch of the train block's data set when the spec
has one that fits the model (as `dlc gradcheck` does), random inputs otherwise.

Real data exercise what random normals do not (pixels in [0, 1], labels of the real class
balance, sequences of the task's length). Each call draws its own rows from
``(seed, stream)``, so the forward phase and every training round see fixed, distinct
batches. Float rows get a 0.01 jitter, as gradcheck's, since real data sit on kinks
(relu at an exact 0, max-pool ties of blank pixels) where backends may legitimately
pick different subgradients; then they are rounded to float32, so float32 and float64
backends read exactly the same numbers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JITTER = 0.01


@dataclass
class DataSource:
    name: str                 # what the report shows: the data set, or "random"
    fields: dict | None       # the data set's fields fitted to the model's inputs; None: random

    def batch(self, model, seed: int, size: int, stream: int | None = None) -> dict | None:
        """`size` rows of the data set for `model`'s inputs, or None (random data)."""
        if self.fields is None:
            return None
        n = len(next(iter(self.fields.values())))
        rng = np.random.default_rng([seed, 7907] if stream is None else [seed, 7907, 1 + stream])
        idx = np.sort(rng.choice(n, min(size, n), replace=False))
        out = {}
        for name in model.inputs:
            v = self.fields[name][idx]
            if v.dtype.kind == "f":
                v = (v + JITTER * rng.standard_normal(v.shape)).astype(np.float32)
            out[name] = v
        return out


RANDOM = DataSource("random", None)


def data_source(model, use_data: bool = True) -> DataSource:
    """The train block's data set when there is one and it fits `model`, else random."""
    if not use_data:
        return RANDOM
    from compiler.commands.deploy import _train_block
    if _train_block(model) is None:
        return RANDOM
    from compiler.training.spec import load_data, parse_train
    from dsl.errors import DslError
    try:
        cfg = parse_train(model)
        ds = load_data(cfg, model)
    except DslError:  # no train block data at hand (a user's missing file) or it does not fit
        return RANDOM
    if not ds.fields or not set(model.inputs) <= set(ds.fields) or ds.n == 0:
        return RANDOM
    return DataSource(str(cfg.data), {k: ds.fields[k] for k in model.inputs})
