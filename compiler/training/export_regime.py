"""`dlc compile --to onnx --train-step`: a train block's whole regime as ONNX models
plus a JSON manifest, enough for a loop in plain onnxruntime + NumPy to reproduce
`dlc train` (docs/train_step_onnx.md; the reference driver is docs/train_step_onnx.py).

Layout. ``-o step.onnx`` writes the first (often the only) step model there and, beside
it, ``step.manifest.json``, ``step.init.npz`` (every tensor's initial value, as `dlc
train --seed` starts), ``step.data.npz`` (the training part of the split, as the model's
inputs read it) and, where the regime has them, ``step.<player>.onnx`` (the other
players' steps), ``step.<player>.metrics.onnx`` (metrics), ``step.<player>.full_grad.onnx``
(SVRG). ``-o DIR`` (no ``.onnx`` suffix) writes ``DIR/manifest.json``, ``DIR/init.npz``,
``DIR/data.npz`` and ``DIR/<player>[.metrics|.full_grad].onnx``.

A step model computes what the update needs only (the loss it minimises, ``lr`` and
each ``new:X``); the model's other losses and metrics are a separate metrics model
that reads the same feeds, so a driver runs it only when it logs.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np

from compiler.core import backend_registry
from compiler.training.spec import TrainConfig, model_for, parse_train
from compiler.training.step import (StepGraph, _gradient_graph, _rounds, _split, build_step,
                                    initial_values)
from compiler.transform.passes import optimize

FORMAT = "dlc-train-regime/1"
# the constants of the run's random streams (compiler/training/datasets, loop.py)
BATCH_TAG = 0xBA7C4
SNAPSHOT_NOISE = 1 << 41


class Layout:
    """Where each file of an exported regime goes (see the module docstring)."""

    def __init__(self, out):
        out = Path(out)
        self.single = out.suffix == ".onnx"
        self.out = out
        self.dir = out.parent if self.single else out
        self.stem = out.stem if self.single else ""

    def file(self, role: str, ext: str) -> Path:
        name = f"{self.stem}.{role}" if self.single else role
        return self.dir / f"{name.strip('.')}{ext}"

    def model(self, role: str, first: bool = False) -> Path:
        return self.out if self.single and first else self.file(role, ".onnx")

    @property
    def manifest(self) -> Path:
        return self.file("manifest", ".json")


def export_regime(m, out, *, dtype: str = "f32", cfg: TrainConfig | None = None,
                  seed: int | None = None, stamp=None) -> dict:
    """Write every model, the initial values, the data and the manifest of `m`'s train
    block; return the manifest (with ``path``: where it was written). `stamp(model)`
    adds metadata to each ONNX model (the API's `_stamp`)."""
    cfg = cfg or parse_train(m)
    model = model_for(m, cfg)
    seed = cfg.seed if seed is None else seed
    lay = Layout(out)
    lay.dir.mkdir(parents=True, exist_ok=True)
    parts = _split(cfg, model)
    if cfg.bagging is not None:  # the bootstrap counts are a data field, as dlc train feeds them
        from compiler.training import bagging
        parts = bagging.resample(cfg.bagging, parts, seed)
    train = parts[0]
    nb = train.num_batches(cfg.batch)
    rounds = _rounds(cfg, nb)
    steps = [build_step(model, cfg, grp, rounds * grp.steps) for grp in cfg.groups]
    onnx = backend_registry.load("onnx")

    def write(graph, results, role, first=False) -> str:
        og, ores = optimize(graph, results)
        proto = onnx.lower(og, ores, dtype=dtype, params_as="inputs", name=f"{model.name}.{role}")
        if stamp is not None:
            stamp(proto)
        path = lay.model(role, first)
        onnx.save(proto, str(path))
        return path.name

    entries, svrg = [], []
    for i, sg in enumerate(steps):
        role = sg.group.name
        entry = _step_entry(sg, cfg)
        entry["model"] = write(sg.graph, sg.update_only(), role, first=i == 0)
        # the logged metrics; `dlc train` averages them over every step, except the
        # costly ones (`metrics_at_log`), which it reads at a row's last step only
        metrics = {k: n for k, n in sg.metric_results().items() if k in sg.logged}
        metrics.update(sg.deferred)
        if metrics:
            mg = copy.copy(sg.graph)
            mg.updates = {}  # the state updates belong to the step model
            entry["metrics_model"] = write(mg, metrics, role + ".metrics")
            entry["metrics"] = sorted(metrics)
            entry["metrics_at_log"] = sorted(sg.deferred)
        entries.append(entry)
        if sg.snapshots:
            g, res = _gradient_graph(model, cfg, sg.group)
            svrg.append({
                "player": sg.group.name, "model": write(g, res, role + ".full_grad"),
                "when": "at the start of every epoch, before its first round",
                "snapshot": dict(sg.snapshots),
                "feed": "every parameter P := the value of snapshot:P (now P's value)",
                "full_gradient": {mu: f"grad:{p}" for mu, p in sg.mus.items()},
                "batches": "the data in stored order (no shuffle), batch by batch; "
                           "the full gradient is the row-weighted mean over batches",
                "noise_stream": f"{SNAPSHOT_NOISE} + epoch * batches_per_epoch + batch index",
                "noise": _noise(sg, g)})

    # `init_from`: the fine-tuned run's starting values, as dlc train takes them
    from compiler.training import finetune
    init = initial_values(model, steps, seed,
                          finetune.initial_params(cfg, model) if cfg.init_from else None)
    init_path = lay.file("init", ".npz")
    np.savez(init_path, **{k: np.asarray(v) for k, v in init.items()})
    data_path = lay.file("data", ".npz")
    np.savez(data_path, **train.fields)

    manifest = {
        "format": FORMAT, "model": model.name, "spec": str(model.program.path),
        "hparams": dict(model.hparams), "dtype": dtype, "seed": seed,
        "init": init_path.name,
        "data": {"file": data_path.name, "rows": int(train.n),
                 "fields": {k: [str(v.dtype), list(v.shape)] for k, v in train.fields.items()},
                 "part": f"the training part of the split {list(cfg.split)}"},
        "batch": cfg.batch, "batches_per_epoch": nb, "rounds": rounds,
        "batch_order": {
            "rng": "numpy.random.default_rng([seed, epoch, tag]).permutation(rows)",
            "tag": BATCH_TAG,
            "batches": "consecutive slices of `batch` rows of the permutation; the "
                       "last batch of an epoch may be smaller"},
        "round": "one batch; every entry of `steps` in order, each `repeats` times on "
                 "that same batch, each repeat with fresh noise",
        "noise": {
            "rng": "numpy.random.default_rng([seed, stream, hash])",
            "stream": "the number of step models run so far in the run (all players), "
                      "0-based",
            "hash": "int.from_bytes(sha256(name).digest()[:8], 'little') (given per noise)",
            "normal": "rng.standard_normal(shape, dtype=numpy.float32)",
            "uniform": "rng.random(shape, dtype=numpy.float32)",
            "note": "exact reproduction of dlc train needs NumPy's generator "
                    "(PCG64 via default_rng) with exactly these seeds"},
        "dim_sources": _dim_sources(steps[0].graph),
        "steps": entries, "svrg": svrg,
        "average": _average(cfg, steps),
        "evaluate_with": {p: a for sg in steps for a, p in sg.averages.items()},
        # evaluation is not exported: the validation part and the eval model stay with dlc
        "early_stop": None if cfg.early_stop is None else {
            "metric": cfg.early_stop.metric, "patience": cfg.early_stop.patience,
            "mode": cfg.early_stop.mode,
            "note": "dlc train evaluates on the validation part (not exported) and may "
                    "stop before `rounds`, restoring the best evaluation's values"},
        # host-side augmentation is not in the models; a driver must apply it to the
        # training batches itself (compiler/training/augment.py gives the draws)
        "augment": [{"field": a.field, "kind": a.kind, "options": dict(a.options),
                     "exported": False,
                     "note": "applied by dlc train on the host to training batches only, "
                             "seeded by (seed, round); not reproduced by the reference driver"}
                    for a in cfg.augment],
    }
    lay.manifest.write_text(json.dumps(manifest, indent=1, default=_jsonable) + "\n")
    return {**manifest, "path": str(lay.manifest)}


def _step_entry(sg: StepGraph, cfg: TrainConfig) -> dict:
    res = sg.update_only()
    return {
        "player": sg.group.name, "repeats": sg.group.steps,
        "trains": list(sg.group.params),
        "updates": {k: k[4:] for k in res if k.startswith("new:")},
        "counter": "input `step`: this player's own 0-based step count (the schedule "
                   "and the optimizer's bias correction read it)",
        "schedule": None if sg.group.schedule is None else
        {"name": sg.group.schedule.name, **sg.group.schedule.kwargs},
        "optimizer": None if sg.group.optimizer is None else
        {"name": sg.group.optimizer.name, **sg.group.optimizer.kwargs},
        "logged": {k: v for k, v in sg.logged.items() if k in res},
        "noise": _noise(sg, sg.graph),
    }


def _noise(sg: StepGraph, g) -> list:
    out = []
    for n in g.noises:
        a = g.node(n).attrs
        if a["name"] not in sg.noise_names:
            continue
        h = int.from_bytes(hashlib.sha256(a["name"].encode()).digest()[:8], "little")
        out.append({"name": a["name"], "dist": a["dist"], "shape": list(a["shape"]),
                    "dtype": "float32", "hash": h})
    return out


def _dim_sources(g) -> dict:
    """Symbolic dims of noise shapes -> (the input, axis) they are read from."""
    return {sym: [g.node(n).attrs["name"], axis] for sym, (n, axis) in g.dim_sources.items()}


def _average(cfg: TrainConfig, steps) -> dict | None:
    if cfg.average is None:
        return None
    return {"kind": cfg.average.name, **cfg.average.kwargs,
            "tensors": {a: p for sg in steps for a, p in sg.averages.items()},
            "where": "inside each step model: new:avg.P (nothing for a driver to do)"}


def _jsonable(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return str(v)
