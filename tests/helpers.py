"""What the reference tests share: float64 tensors and copied weights, perturbed
initial params, the CLI as JSON, and a spec's own train block through the Trainer."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from compiler import api
from compiler.commands import cli
from compiler.training import checkpoint


def t64(a):
    import torch
    return torch.tensor(np.asarray(a, dtype=np.float64))


def copy_into(dst, src):
    """Copy a dlc array into a torch parameter of the same shape."""
    import torch
    with torch.no_grad():
        assert tuple(dst.shape) == tuple(src.shape), (dst.shape, src.shape)
        dst.copy_(t64(src))


def max_err(a, b) -> float:
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    return float(np.max(np.abs(a - np.asarray(b))))


def perturbed_params(m, seed=0, scale=0.1):
    """Initial params in float64, moved off their initial values, so zero biases and
    unit gains do not hide a wrong term."""
    rng = np.random.default_rng(seed)
    return {k: v.astype(np.float64) + scale * rng.standard_normal(v.shape)
            for k, v in m.init_params(seed).items()}


def cli_json(*argv):
    """`dlc ARGV --json` in-process (`--quiet` too for train): (exit code, payload)."""
    extra = ["--json", "--quiet"] if str(argv[0]) == "train" else ["--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main([*map(str, argv), *extra])
    return rc, json.loads(buf.getvalue().strip().splitlines()[-1])


def train_cli(spec, out: Path, *extra):
    """`dlc train SPEC --out OUT`: (payload, checkpoint tensors, checkpoint metadata)."""
    rc, payload = cli_json("train", spec, "--out", out, *extra)
    assert rc == 0, payload
    tensors, meta = checkpoint.load(Path(out) / "checkpoint.safetensors")
    return payload, tensors, meta


def trainer_for(spec, tmp_path, **data):
    """The spec's own train block as a Trainer (what `dlc train` runs), not yet run:
    (trainer, the split's parts, the whole data set); `data` overrides data options."""
    from compiler.training.loop import Trainer
    from compiler.training.spec import load_data, model_for, parse_train
    m = api.load(spec)
    cfg = parse_train(m)
    cfg.data_options = {**cfg.data_options, **data}
    model = model_for(m, cfg)
    ds = load_data(cfg, model)
    parts = list(ds.split(cfg.split, seed=0))
    return Trainer(model, cfg, parts, seed=0, out=tmp_path), parts, ds
