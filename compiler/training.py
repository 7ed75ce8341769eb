"""Training: one compiled graph per step, the same on every backend, and `dlc train`.

`build_train_step` builds ONE graph for a whole optimizer step: the model's
training-mode forward pass, the loss, its symbolic gradients, clipping, L1 / weight
decay, the learning-rate schedule, the optimizer update, Polyak averaging, state
updates (batch-norm running statistics) and update rules. Its sources are

    data inputs and noise          as in the model
    params, states                 as in the model (``dense0.W``)
    ``opt.<param>.<slot>``         optimizer slots (Adam's ``m``, ``v``), param-shaped
    ``avg.<param>``                averaged parameters (``average polyak(...)``)
    ``snapshot:<param>``, ``opt.<param>.mu``   SVRG: snapshot params, full gradient
    ``step``                       f32 scalar: this group's 0-based step count

and its results ``loss`` (the minimised loss), the model's other losses and metrics,
``lr``, and the next values ``new:<param>``, ``new:opt.<param>.<slot>``,
``new:avg.<param>``, ``new:<state>``. Feeding each ``new:X`` back as ``X`` is one
training step. The NumPy, PyTorch and ONNX backends all run this same graph, so
training is backend-independent (and `dlc compile --to onnx --train-step` exports it).

`run_training` is `dlc train`: load and split the dataset, step, evaluate each epoch,
stop early, checkpoint (safetensors, see `compiler.checkpoint`), resume bit-exactly,
and write ``metrics.csv``, ``curves.png`` and ``model.onnx`` to the run directory.
Determinism: batch order depends only on (seed, epoch), noise only on (seed, step),
parameter initialisation only on the seed; a checkpoint records the batch position.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsl.errors import SpecError

from .step_check import finite_and_scalars
from . import checkpoint, noise
from .threads import limit_cpu_threads, thread_limit
from .autodiff import grad as _grad
from .elaborate import elaborate
from .ir import Graph
from .train_spec import Group, TrainConfig, load_data, model_for, optimizer_options, parse_train

EVAL_BATCH = 512
# Noise streams of evaluation and of SVRG's full-gradient pass: step indices no
# training step reaches, so they never repeat a training draw.
EVAL_NOISE = 1 << 40
SNAPSHOT_NOISE = 1 << 41
EXIT_OK, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130
CHECKPOINT, METRICS, CURVES, ONNX_MODEL = ("checkpoint.safetensors", "metrics.csv",
                                           "curves.png", "model.onnx")


# ---- the step graph ----------------------------------------------------------------------

@dataclass
class StepGraph:
    """One group's train-step graph and what the runner must feed and read back."""

    graph: Graph
    results: dict
    group: Group
    slots: dict = field(default_factory=dict)      # "opt.P.S" -> (P, initial fill)
    averages: dict = field(default_factory=dict)   # "avg.P" -> P
    snapshots: dict = field(default_factory=dict)  # "snapshot:P" -> P (SVRG)
    mus: dict = field(default_factory=dict)        # "opt.P.mu" -> P (SVRG)
    logged: dict = field(default_factory=dict)     # scalar result -> name in the logs

    @property
    def noise_names(self) -> frozenset:
        """The noise this step reads (a sampler's noise elsewhere in the model is not drawn)."""
        if "_noise" not in self.__dict__:
            self.__dict__["_noise"] = noise.needed(self.graph, self.results.values())
        return self.__dict__["_noise"]


def initial_values(model, steps: list, seed: int) -> dict:
    """Everything a run starts from: params and states from the seed, optimizer slots
    at their fill values, Polyak averages and SVRG snapshots at the params, SVRG full
    gradients at zero. Shared by `dlc train`, `dlc equiv` and the benchmarks."""
    values = dict(model.init_params(seed))
    for sg in steps:
        for name, (p, fill) in sg.slots.items():
            values[name] = np.full_like(values[p], fill)
        for name, p in {**sg.averages, **sg.snapshots, **sg.mus}.items():
            values[name] = np.zeros_like(values[p]) if name in sg.mus else values[p].copy()
    return values


def total_rounds(cfg, model) -> int:
    """Rounds (player cycles) of the run a train block describes."""
    return _rounds(cfg, _train_batches(cfg, model))


def build_train_step(model, spec: TrainConfig | None = None, player: str | None = None, *,
                     total_steps: int | None = None) -> tuple[Graph, dict]:
    """The train-step graph of `model`'s train block (of one player: default the first).

    `total_steps` (the schedule's horizon) defaults to the run the train block
    describes, which needs the dataset's size.
    """
    cfg = spec or parse_train(model)
    m = model_for(model, cfg)
    group = _pick_group(cfg, player)
    if total_steps is None:
        total_steps = total_rounds(cfg, m) * group.steps
    sg = build_step(m, cfg, group, total_steps)
    return sg.graph, sg.results


def _pick_group(cfg: TrainConfig, player: str | None) -> Group:
    if player is None:
        return cfg.groups[0]
    for g in cfg.groups:
        if g.name == player:
            return g
    raise KeyError(f"no player {player!r}; players: {', '.join(g.name for g in cfg.groups)}")


def build_step(model, cfg: TrainConfig, group: Group, total_steps: int) -> StepGraph:
    # A private training-mode graph: the step adds inputs and nodes to it.
    g = elaborate(model.program, model.model_name, model.hparams, training=True,
                  dims=model.dims, extra=cfg.updates)
    sg = StepGraph(g, {}, group)
    _loss_and_metrics(sg, cfg)
    _state_and_rule_updates(sg, cfg)
    if group.optimizer is not None and group.params:
        _optimizer_step(sg, cfg, total_steps)
    return sg


def _loss_and_metrics(sg: StepGraph, cfg: TrainConfig):
    g, res = sg.graph, sg.results
    loss = sg.group.loss
    if loss is not None:
        res["loss"] = g.outputs[loss]
        sg.logged["loss"] = loss  # logged under its own name
    if cfg.players:  # a player computes its own loss only (the others cost a forward pass)
        return
    for k, n in g.outputs.items():
        if g.output_kinds[k] in ("loss", "metric") and k not in ("loss", loss):
            res[k] = n
            if _is_scalar(g, n):
                sg.logged[k] = k


def _state_and_rule_updates(sg: StepGraph, cfg: TrainConfig):
    g = sg.graph
    for node, value in g.updates.items():
        name = g.node(node).attrs["name"]
        if g.node(node).op == "state" or name in cfg.update_targets:
            sg.results["new:" + name] = value


def _optimizer_step(sg: StepGraph, cfg: TrainConfig, total_steps: int):
    from . import optim, schedules
    g, group, res = sg.graph, sg.group, sg.results
    opt = optim.make_optimizer(group.optimizer.name, optimizer_options(group))
    params = g.by_name("param")
    names = list(group.params)
    nodes = [params[p] for p in names]
    loss = res["loss"]
    grads = _grad(g, loss, nodes)
    if group.clip_grad_norm:
        grads = optim.clip_by_global_norm(g, grads, group.clip_grad_norm)
    step = _source(g, "input", "step", "f32", ())
    sched = schedules.make_schedule("constant", {})
    if group.schedule is not None:
        try:  # the run's length is known only now (e.g. `--steps` shorter than a warm-up)
            sched = schedules.make_schedule(group.schedule.name, group.schedule.kwargs,
                                            total_steps=max(1, total_steps))
        except ValueError as e:
            raise SpecError(f"{e} (this run has {total_steps} steps)",
                            group.schedule.span) from None
    lr = sched.build(g, step, g.const(float(opt.hyper["lr"]), "f32"))
    res["lr"] = lr
    sg.logged["lr"] = f"{group.name}.lr" if cfg.players else "lr"
    g_snaps = {}
    if "g_snap" in sum((opt.inputs(p, g.type(n)) for p, n in zip(names, nodes)), []):
        # SVRG: the batch gradient at the snapshot params, inside this same graph
        snaps, gs = optim.snapshot_gradients(g, loss, nodes, prefix="snapshot:")
        g_snaps = dict(zip(names, gs))
        sg.snapshots = {f"snapshot:{p}": p for p in names}
    for p, node, gr in zip(names, nodes, grads):
        t = g.type(node)
        slots = {}
        for s, fill in opt.slots(p, t):
            slots[s] = _source(g, "input", f"opt.{p}.{s}", t.dtype, t.shape)
            sg.slots[f"opt.{p}.{s}"] = (p, fill)
        for s in opt.inputs(p, t):
            if s == "g_snap":
                slots[s] = g_snaps[p]
            else:
                slots[s] = _source(g, "input", f"opt.{p}.{s}", t.dtype, t.shape)
                sg.mus[f"opt.{p}.{s}"] = p
        new_p, new_slots = opt.update(g, node, gr, slots, step, lr,
                                      decay_mask=optim.decays(p, t))
        res["new:" + p] = new_p
        for s, n in new_slots.items():
            res[f"new:opt.{p}.{s}"] = n
        if cfg.average is not None:
            avg = _source(g, "input", f"avg.{p}", t.dtype, t.shape)
            decay = cfg.average.kwargs["decay"] if cfg.average.name == "polyak" else None
            res[f"new:avg.{p}"] = optim.polyak_update(g, avg, new_p, decay, step=step)
            sg.averages[f"avg.{p}"] = p


def _source(g: Graph, op: str, name: str, dtype: str, shape) -> int:
    for n in g.inputs + g.params + g.states + g.noises:
        if g.node(n).attrs["name"] == name:
            raise SpecError(f"the model already has a tensor named `{name}`, which the "
                            "train step needs for itself", g.node(n).span)
    return g.add(op, (), {"name": name, "dtype": dtype, "shape": tuple(shape)})


def _is_scalar(g: Graph, n: int) -> bool:
    t = g.type(n)
    return not isinstance(t, tuple) and t.shape == () and t.dtype.startswith("f")


def _gradient_graph(model, cfg: TrainConfig, group: Group) -> tuple[Graph, dict]:
    """d loss / d group params (SVRG's full gradient at the snapshot)."""
    g = elaborate(model.program, model.model_name, model.hparams, training=True,
                  dims=model.dims)
    params = g.by_name("param")
    grads = _grad(g, g.outputs[group.loss], [params[p] for p in group.params])
    return g, {f"grad:{p}": n for p, n in zip(group.params, grads)}


# ---- data --------------------------------------------------------------------------------

def _split(cfg: TrainConfig, model):
    data = load_data(cfg, model)
    split_seed = int(cfg.data_options.get("split_seed", 0))
    return data.split(cfg.split, seed=split_seed)


def _train_batches(cfg: TrainConfig, model) -> int:
    return _split(cfg, model)[0].num_batches(cfg.batch)


def _rounds(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return (cfg.epochs if cfg.epochs is not None else 10) * batches_per_epoch


# ---- values on any backend ---------------------------------------------------------------

def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _finite(v) -> bool:
    if hasattr(v, "detach"):
        import torch
        return not v.is_floating_point() or bool(torch.isfinite(v).all())
    a = np.asarray(v)
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())


class Diverged(Exception):
    """A non-finite loss or parameter: the message names the step and the tensor."""

    def __init__(self, message, payload, rendered):
        super().__init__(message)
        self.payload, self.rendered = payload, rendered


# ---- the runner --------------------------------------------------------------------------

@dataclass
class Position:
    """Where a run is; with the tensors, everything a resume needs."""

    epoch: int = 0          # completed epochs
    batch: int = 0          # next batch of the current epoch
    round: int = 0          # completed rounds (a round: every player's steps on one batch)
    noise_step: int = 0     # step programs run so far (the noise stream index)
    group_steps: dict = field(default_factory=dict)   # player -> its steps so far
    sums: dict = field(default_factory=dict)          # train metrics since the last row
    last: dict = field(default_factory=dict)          # the last round's logged values
    count: int = 0
    best: float | None = None
    best_round: int | None = None
    best_epoch: float | None = None
    bad_evals: int = 0
    stopped: bool = False
    elapsed: float = 0.0
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, model, cfg: TrainConfig, parts, *, backend="numpy", device="cpu",
                 seed=0, out: Path, progress=None):
        self.model, self.cfg, self.backend, self.device = model, cfg, backend, device
        self.seed, self.out = seed, out
        self.train_ds, self.val_ds, self.test_ds = parts
        if self.train_ds.n == 0:
            raise SpecError("the training part of the split is empty", cfg.data_span)
        self.nb = self.train_ds.num_batches(cfg.batch)
        self.total_rounds = _rounds(cfg, self.nb)
        self.steps = [build_step(model, cfg, grp, self.total_rounds * grp.steps)
                      for grp in cfg.groups]
        self.programs = [self._lower(sg.graph, sg.results) for sg in self.steps]
        eg = model.graph
        self.eval_names = [k for k, kind in eg.output_kinds.items() if kind in ("loss", "metric")
                           and _is_scalar(eg, eg.outputs[k])]
        self.eval_prog = self._lower(eg, {k: eg.outputs[k] for k in self.eval_names}) \
            if self.eval_names else None
        self.svrg = [sg for sg in self.steps if sg.snapshots]
        self.grad_progs = {id(sg): self._lower(*_gradient_graph(model, cfg, sg.group))
                           for sg in self.svrg}
        self.values = initial_values(self.model, self.steps, self.seed)
        self.best_values: dict | None = None
        self.pos = Position(group_steps={grp.name: 0 for grp in cfg.groups})
        self.progress = progress

    def _lower(self, graph, results):
        return self.model.lower(results, graph, self.backend, "f32", self.device)

    # -- the loop --
    def run(self):
        """Train until done, stopped early, or interrupted (KeyboardInterrupt escapes
        with the position at the last completed round, so a checkpoint is exact)."""
        start = time.perf_counter() - self.pos.elapsed
        # non-finite values are reported by _check_finite, with the step and tensor
        with _no_grad(self.backend), np.errstate(all="ignore"):
            while self.pos.round < self.total_rounds and not self.pos.stopped:
                if self.pos.batch == 0 and self.svrg:
                    self._svrg_snapshot()
                batches = self.train_ds.batches(self.cfg.batch, seed=self.seed,
                                                epoch=self.pos.epoch, start=self.pos.batch)
                for batch in batches:
                    self._round(batch)
                    self.pos.elapsed = time.perf_counter() - start
                    if self.progress:
                        self.progress.update(self)
                    if self.cfg.eval_every and self.pos.round % self.cfg.eval_every == 0:
                        self._evaluate_and_log()
                    if self.pos.round >= self.total_rounds or self.pos.stopped:
                        break
                if self.pos.batch >= self.nb:
                    self.pos.epoch += 1
                    self.pos.batch = 0
                    if not self.cfg.eval_every and not self.pos.stopped:
                        self._evaluate_and_log()
            if self.pos.count:  # steps left since the last row (e.g. `steps N` mid-epoch)
                self._evaluate_and_log()
        self.pos.elapsed = time.perf_counter() - start

    def _round(self, batch: dict):
        """Every group's steps on one batch; values and position change only when the
        whole round succeeded (so an interrupt leaves a consistent state)."""
        values = dict(self.values)
        noise_step = self.pos.noise_step
        group_steps = dict(self.pos.group_steps)
        logged = {}
        for sg, prog in zip(self.steps, self.programs):
            for _ in range(sg.group.steps):
                feeds = {**values, **batch,
                         **noise.draw(sg.graph, batch, self.seed, noise_step, sg.noise_names),
                         "step": np.asarray(group_steps[sg.group.name], np.float32)}
                out = prog(feeds)
                finite, scalars = finite_and_scalars(out, sg.logged)  # one host sync
                if not finite:
                    self._check_finite(sg, feeds, out, noise_step)  # names the culprit
                for k, v in out.items():
                    if k.startswith("new:"):
                        values[k[4:]] = v
                logged.update(zip(sg.logged.values(), scalars))
                noise_step += 1
                group_steps[sg.group.name] += 1
        self.values = values
        n = len(next(iter(batch.values())))
        for k, v in logged.items():
            self.pos.sums[k] = self.pos.sums.get(k, 0.0) + v * n
        self.pos.count += n
        self.pos.last = logged
        self.pos.noise_step, self.pos.group_steps = noise_step, group_steps
        self.pos.round += 1
        self.pos.batch += 1

    def _check_finite(self, sg: StepGraph, feeds, out, step):
        order = (["loss"] if "loss" in out else []) + [k for k in out if k != "loss"]
        bad = next((k for k in order if not _finite(out[k])), None)
        if bad is None:
            return
        value = _numpy(out[bad])
        kind = "nan" if np.isnan(value).any() else "inf"
        who = f" (player `{sg.group.name}`)" if self.cfg.players else ""
        msg = f"training diverged at step {step + 1}{who}: `{bad}` is {kind}"
        where = _first_nonfinite(self.model, sg, feeds)
        span = None
        if where is not None:
            op, span = where
            msg += f"; the first non-finite value is computed by `{op}` here"
        err = SpecError(msg, span, hint="lower the learning rate, clip gradients "
                        "(`clip_grad_norm`), or guard logs and divisions")
        payload = err.to_json()
        payload.update(error="NonFinite", step=step + 1, tensor=bad)
        raise Diverged(msg, payload, err.render())

    def _svrg_snapshot(self):
        """SVRG: snapshot := current params; mu := their full-batch gradient."""
        for sg in self.svrg:
            for snap, p in sg.snapshots.items():
                self.values[snap] = self.values[p]
            prog = self.grad_progs[id(sg)]
            feeds = {**self.values, **{k[len("snapshot:"):]: self.values[k]
                                       for k in sg.snapshots}}
            total, n = {}, 0
            for i, batch in enumerate(self.train_ds.batches(self.cfg.batch, shuffle=False)):
                step = SNAPSHOT_NOISE + self.pos.epoch * self.nb + i
                out = prog({**feeds, **batch, **noise.draw(sg.graph, batch, self.seed, step, sg.noise_names)})
                m = len(next(iter(batch.values())))
                for k, v in out.items():
                    total[k] = total.get(k, 0.0) + _numpy(v).astype(np.float64) * m
                n += m
            for mu, p in sg.mus.items():
                self.values[mu] = (total[f"grad:{p}"] / n).astype(np.float32)

    # -- evaluation --
    def eval_values(self) -> dict:
        """Params (their averages when averaging) and states, for evaluation."""
        vals = {k: self.values[k] for k in self.model.params}
        for sg in self.steps:
            vals.update({p: self.values[a] for a, p in sg.averages.items()})
        vals.update({k: self.values[k] for k in self.model.states})
        return vals

    def evaluate(self, ds, values=None) -> dict:
        if self.eval_prog is None or ds is None or ds.n == 0:
            return {}
        values = values or self.eval_values()
        sums, n = {}, 0
        with _no_grad(self.backend):
            for i, batch in enumerate(ds.batches(EVAL_BATCH, shuffle=False)):
                noise_feeds = noise.draw(self.model.graph, batch, self.seed, EVAL_NOISE + i)
                out = self.eval_prog({**values, **batch, **noise_feeds})
                m = len(next(iter(batch.values())))
                for k in self.eval_names:
                    sums[k] = sums.get(k, 0.0) + float(_numpy(out[k])) * m
                n += m
        return {k: v / n for k, v in sums.items()}

    def _evaluate_and_log(self):
        p = self.pos
        row = {"epoch": round(p.round / self.nb, 4), "step": p.round,
               "time": round(p.elapsed, 3)}
        row.update({f"train_{k}": v / max(p.count, 1) for k, v in p.sums.items()
                    if not _is_lr(k)})
        row.update({k: v for k, v in p.last.items() if _is_lr(k)})
        val = self.evaluate(self.val_ds) if self.cfg.evaluating else {}
        row.update({f"val_{k}": v for k, v in val.items()})
        p.history.append(row)
        p.sums, p.count = {}, 0
        self._early_stopping(val)
        if self.progress:
            self.progress.row(self, row)
        self.save_checkpoint()
        write_metrics_csv(self.out / METRICS, p.history)

    def _early_stopping(self, val: dict):
        es, p = self.cfg.early_stop, self.pos
        if es is None or es.metric not in val:
            return
        v = val[es.metric]
        better = p.best is None or (v > p.best if es.mode == "max" else v < p.best)
        if better and math.isfinite(v):
            p.best, p.best_round = v, p.round
            p.best_epoch = round(p.round / self.nb, 4)
            p.bad_evals = 0
            self.best_values = {k: self.values[k] for k in
                                list(self.model.params) + list(self.model.states)}
            self.best_values.update({a: self.values[a] for sg in self.steps for a in sg.averages})
        else:
            p.bad_evals += 1
            if p.bad_evals >= es.patience:
                p.stopped = True

    def restore_best(self):
        """Early stopping: the params (and states, averages) of the best evaluation."""
        if self.best_values is not None:
            self.values.update(self.best_values)

    # -- checkpoints --
    def config_hash(self) -> str:
        return config_hash(self.cfg, self.model, self.seed)

    def save_checkpoint(self):
        tensors = {k: _numpy(v) for k, v in self.values.items()}
        if self.best_values is not None:
            tensors.update({f"best:{k}": _numpy(v) for k, v in self.best_values.items()})
        meta = {"model": self.model.name, "config_hash": self.config_hash(), "seed": self.seed,
                "total_rounds": self.total_rounds, "batches_per_epoch": self.nb,
                "position": self.pos.__dict__}
        checkpoint.save(self.out / CHECKPOINT, tensors, meta)

    def load_checkpoint(self):
        tensors, meta = checkpoint.load(self.out / CHECKPOINT)
        if meta.get("config_hash") != self.config_hash():
            raise checkpoint.CheckpointError(
                f"the checkpoint in {self.out} was written by a different training "
                "configuration (model, data, split, batch, optimizer, seed...); "
                "train afresh without --resume, or use another --out")
        missing = [k for k in self.values if k not in tensors]
        if missing:
            raise checkpoint.CheckpointError(f"the checkpoint in {self.out} lacks "
                                             f"{', '.join(missing[:5])}")
        for k in self.values:
            self.values[k] = tensors[k]
        best = {k[len("best:"):]: v for k, v in tensors.items() if k.startswith("best:")}
        self.best_values = best or None
        self.pos = Position(**meta["position"])


def _is_lr(name: str) -> bool:
    return name == "lr" or name.endswith(".lr")


def _no_grad(backend):
    if backend == "torch":
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()


def config_hash(cfg: TrainConfig, model, seed: int) -> str:
    """What must not change across a resume (epochs/steps may: a run can be extended)."""
    groups = [(g.name, g.loss, _call(g.optimizer), _call(g.schedule), g.weight_decay, g.l1,
               g.clip_grad_norm, list(g.params), g.steps) for g in cfg.groups]
    key = {"model": model.name, "hparams": cfg.hparams, "data": cfg.data,
           "data_options": cfg.data_options, "data_seed": cfg.data_seed,
           "split": list(cfg.split), "batch": cfg.batch, "seed": seed,
           "early_stop": None if cfg.early_stop is None else
           [cfg.early_stop.metric, cfg.early_stop.patience, cfg.early_stop.mode],
           "average": _call(cfg.average), "eval_every": cfg.eval_every, "groups": groups,
           "updates": repr(cfg.updates)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _call(c):
    return None if c is None else [c.name, sorted(c.kwargs.items())]


def _first_nonfinite(model, sg: StepGraph, feeds) -> tuple[str, object] | None:
    """The first node (in evaluation order) of the user's code whose value is not finite:
    rerun the step on NumPy with every located float node as a result."""
    g = sg.graph
    roots = [n for n in sg.results.values()]
    located = [n for n in g.topo_order(roots)
               if g.node(n).span is not None and not isinstance(g.type(n), tuple)
               and g.type(n).dtype.startswith("f") and g.node(n).op not in ("const",)]
    if not located:
        return None
    try:
        from backends import numpy as np_backend
        prog = np_backend.lower(g, {f"n{n}": n for n in located}, dtype="f32")
        with np.errstate(all="ignore"):
            out = prog({k: _numpy(v) for k, v in feeds.items()})
    except Exception:  # diagnosis is best effort; the step's own message stands
        return None
    for n in located:
        if not np.isfinite(out[f"n{n}"]).all():
            return g.node(n).op, g.node(n).span
    return None


# ---- reporting ---------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr (plain text and \\r), plus a line per evaluation."""

    WIDTH = 24

    def __init__(self, stream=None, every: float = 0.25):
        self.stream = stream or sys.stderr
        self.every = every
        self.last = 0.0

    def update(self, tr: Trainer):
        now = time.perf_counter()
        if now - self.last < self.every and tr.pos.round < tr.total_rounds:
            return
        self.last = now
        frac = tr.pos.round / max(tr.total_rounds, 1)
        bar = "#" * int(frac * self.WIDTH)
        live = "  ".join(f"{k} {v:.4g}" for k, v in tr.pos.last.items())
        self.stream.write(f"\repoch {tr.pos.epoch + 1}  [{bar:<{self.WIDTH}}] "
                          f"{tr.pos.round}/{tr.total_rounds}  {live}  {tr.pos.elapsed:.1f}s\x1b[K")
        self.stream.flush()

    def row(self, tr: Trainer, row: dict):
        train = "  ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
        val = "  ".join(f"{k[4:]} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        star = " *" if tr.pos.best_round == tr.pos.round and tr.cfg.early_stop else ""
        self.stream.write(f"\repoch {row['epoch']:g}: train {train}"
                          f"{'  | val ' + val if val else ''}{star}\x1b[K\n")
        self.stream.flush()


def write_metrics_csv(path: Path, history: list):
    cols = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in history:
            w.writerow(row)


def plot_curves(path: Path, history: list, title: str, losses: list) -> bool:
    """Loss curves (left) and metric curves (right) per evaluation; False without
    matplotlib. `losses`: the model's loss names (the rest are metrics)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = [k for k in (history[0] if history else {}) if k.startswith(("train_", "val_"))]
    for row in history:
        keys += [k for k in row if k.startswith(("train_", "val_")) and k not in keys]
    metrics = [k for k in keys if k.split("_", 1)[1] not in losses]
    losses = [k for k in keys if k not in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in history]
    for ax, group, label in ((axes[0], losses, "loss"), (axes[1], metrics, "metric")):
        for k in group:
            ax.plot(x, [r.get(k, float("nan")) for r in history], label=k,
                    linestyle="-" if k.startswith("train_") else "--")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ---- dlc train ---------------------------------------------------------------------------

def run_training(model, args) -> tuple[int, dict]:
    """`dlc train`: returns (exit code, the JSON payload `--json` prints)."""
    cfg = parse_train(model)
    _apply_overrides(cfg, args)
    model = model_for(model, cfg)
    seed = args.seed if getattr(args, "seed", None) else cfg.seed
    out = Path(args.out) if getattr(args, "out", None) else Path("runs") / model.name
    out.mkdir(parents=True, exist_ok=True)
    quiet = bool(getattr(args, "quiet", False) or getattr(args, "json", False))
    parts = _split(cfg, model)
    tr = Trainer(model, cfg, parts, backend=getattr(args, "backend", "numpy"),
                 device=getattr(args, "device", "cpu"), seed=seed, out=out,
                 progress=None if quiet else Progress())
    if getattr(args, "resume", False):
        try:
            tr.load_checkpoint()
        except checkpoint.CheckpointError as e:
            if not getattr(args, "json", False):
                print(f"error: {e}", file=sys.stderr)
            return EXIT_FAIL, {"error": "CheckpointError", "message": str(e)}
    # (onnxruntime sessions keep their own pools; a GPU run needs no CPU limit)
    n = thread_limit() if tr.device == "cpu" and tr.backend != "onnx" else None
    with limit_cpu_threads(n, torch=tr.backend == "torch"):
        return _train_and_report(tr, model, cfg, out, args, quiet)


def _train_and_report(tr: Trainer, model, cfg: TrainConfig, out: Path, args, quiet: bool):
    try:
        tr.run()
    except Diverged as e:  # the last checkpoint (of finite values) stays as it was
        if not getattr(args, "json", False):
            print(("\n" if not quiet else "") + e.rendered, file=sys.stderr)
        return EXIT_FAIL, e.payload
    except KeyboardInterrupt:
        tr.save_checkpoint()
        msg = (f"interrupted at step {tr.pos.round}; checkpoint written to "
               f"{out / CHECKPOINT} (continue with --resume)")
        if not getattr(args, "json", False):
            print("\n" + msg, file=sys.stderr)
        return EXIT_INTERRUPTED, {"error": "Interrupted", "message": msg,
                                  "step": tr.pos.round, "checkpoint": str(out / CHECKPOINT)}
    tr.save_checkpoint()  # the final training state (resumable with more epochs)
    if cfg.early_stop is not None:
        tr.restore_best()
    payload = _finish(tr, model, cfg, out)
    if not getattr(args, "json", False):
        print(render_summary(payload))
    return EXIT_OK, payload


def _apply_overrides(cfg: TrainConfig, args):
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            raise SpecError("--steps must be at least 1")
        cfg.steps, cfg.epochs = args.steps, None
    elif getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise SpecError("--epochs must be at least 1")
        cfg.epochs, cfg.steps = args.epochs, None


def _finish(tr: Trainer, model, cfg: TrainConfig, out: Path) -> dict:
    values = tr.eval_values()
    final = {"train": tr.evaluate(tr.train_ds, values),
             "val": tr.evaluate(tr.val_ds, values),
             "test": tr.evaluate(tr.test_ds, values)}
    files = {"checkpoint": str(out / CHECKPOINT)}
    if tr.pos.history:
        write_metrics_csv(out / METRICS, tr.pos.history)
        files["metrics"] = str(out / METRICS)
        if plot_curves(out / CURVES, tr.pos.history, f"{model.name} on {cfg.data}",
                       model.losses):
            files["curves"] = str(out / CURVES)
    export_error = None
    try:
        model.export_onnx(out / ONNX_MODEL, {k: _numpy(v) for k, v in values.items()})
        files["onnx"] = str(out / ONNX_MODEL)
    except Exception as e:  # a model without ONNX rules still trains; say why
        export_error = f"{type(e).__name__}: {e}"
    p = tr.pos
    payload = {"model": model.name, "data": cfg.data, "backend": tr.backend, "seed": tr.seed,
               "epochs": round(p.round / tr.nb, 4), "steps": p.round,
               "time_s": round(p.elapsed, 3), "stopped_early": p.stopped,
               **final, "run_dir": str(out), "files": files}
    if cfg.early_stop is not None:
        payload["best"] = {"metric": f"val.{cfg.early_stop.metric}", "value": p.best,
                           "epoch": p.best_epoch, "step": p.best_round}
    if export_error:
        payload["onnx_error"] = export_error
    return payload


def render_summary(payload: dict) -> str:
    e = payload["epochs"]
    lines = [f"trained {payload['model']} on {payload['data']}: {e:g} epoch{'' if e == 1 else 's'} "
             f"({payload['steps']} steps) in {payload['time_s']:.1f} s"
             f"{', stopped early' if payload['stopped_early'] else ''}"]
    for part in ("train", "val", "test"):
        if payload.get(part):
            lines.append(f"  {part:<5}  " + "  ".join(f"{k} {v:.4f}"
                                                      for k, v in payload[part].items()))
    if payload.get("best"):
        b = payload["best"]
        lines.append(f"  best {b['metric']} {b['value']:.4f} at epoch {b['epoch']:g} (restored)")
    lines.append(f"  run dir {payload['run_dir']}: " +
                 ", ".join(Path(f).name for f in payload["files"].values()))
    if payload.get("onnx_error"):
        lines.append(f"  (no model.onnx: {payload['onnx_error']})")
    return "\n".join(lines)
