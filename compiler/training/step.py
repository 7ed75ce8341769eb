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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.core import noise
from compiler.core.ir import Graph
from compiler.elaborate import elaborate
from compiler.training.spec import (Group, TrainConfig, load_data, model_for, optimizer_options, parse_train)
from compiler.transform.autodiff import grad as _grad
from dsl.errors import SpecError

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
    # split=True (data-parallel): the gradients are results ``grad:P`` (SVRG's batch
    # gradient at the snapshot ``gsnap:P``) and the update reads inputs of the same
    # names, so a caller can all-reduce them between the two halves of the step.
    split: bool = False
    reduced: list = field(default_factory=list)    # the gradient results to all-reduce
    update_results: set = field(default_factory=set)  # results of the update half
    # the model's other losses and metrics: reported, but no update reads them, so an
    # exported step leaves them to a separate metrics model (`update_only`)
    metric_keys: set = field(default_factory=set)
    # metrics that would cost the step real work (a matmul, conv or scan beyond what
    # the loss computes, e.g. an attack's extra passes): not in the step; the runner
    # computes them at each logging interval with `deferred_program` instead
    deferred: dict = field(default_factory=dict)

    def halves(self) -> tuple[dict, dict]:
        """(gradient results, update results) of a split step: the gradient half is the
        forward pass, losses, metrics, state/rule updates and ``grad:P``; the update half
        reads ``grad:P`` (and params, slots, ``step``) and computes ``new:P``, slots, lr."""
        upd = {k: n for k, n in self.results.items() if k in self.update_results}
        return {k: n for k, n in self.results.items() if k not in upd}, upd

    def update_only(self) -> dict:
        """The results a training step needs: the minimised loss, lr and every ``new:X``
        (and ``grad:P`` of a split step); not the metrics."""
        return {k: n for k, n in self.results.items() if k not in self.metric_keys}

    def metric_results(self) -> dict:
        """The other losses and metrics this step reports, at the step's inputs."""
        return {k: self.results[k] for k in self.results if k in self.metric_keys}

    def deferred_program(self) -> tuple[Graph, dict]:
        """(graph, results) of the deferred metrics, read at a step's own inputs."""
        import copy
        g = copy.copy(self.graph)
        g.updates = {}  # the state updates belong to the step
        return g, dict(self.deferred)

    @property
    def noise_names(self) -> frozenset:
        """The noise this step reads (a sampler's noise elsewhere in the model is not drawn)."""
        if "_noise" not in self.__dict__:
            # the deferred metrics read the step's feeds: their noise is drawn with it
            roots = [*self.results.values(), *self.deferred.values()]
            self.__dict__["_noise"] = noise.needed(self.graph, roots)
        return self.__dict__["_noise"]


def initial_values(model, steps: list, seed: int, overrides: dict | None = None) -> dict:
    """Everything a run starts from: params and states from the seed (or `overrides`:
    `init_from`), optimizer slots at their fill values, Polyak averages and SVRG
    snapshots at the params, SVRG full gradients at zero. Shared by `dlc train`,
    `dlc equiv` and the benchmarks."""
    values = dict(model.init_params(seed))
    values.update(overrides or {})
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


def build_split_step(model, spec: TrainConfig | None = None, player: str | None = None, *,
                     total_steps: int | None = None) -> tuple[Graph, dict, dict]:
    """The train step cut in two for an external all-reduce: ``(graph, gradient results,
    update results)``. Run the gradient half on each worker's shard, average its
    ``grad:P`` results over workers (weighted by shard size), feed them as the inputs
    ``grad:P`` of the update half. (docs/distributed.md)"""
    cfg = spec or parse_train(model)
    m = model_for(model, cfg)
    group = _pick_group(cfg, player)
    if total_steps is None:
        total_steps = total_rounds(cfg, m) * group.steps
    sg = build_step(m, cfg, group, total_steps, split=True)
    return (sg.graph, *sg.halves())


def build_step(model, cfg: TrainConfig, group: Group, total_steps: int, *,
               split: bool = False) -> StepGraph:
    # A private training-mode graph: the step adds inputs and nodes to it.
    # A `constrain ... fn(w) -> ...` projection is evaluated by the evaluator that built
    # the graph, so it needs a graph of its own, as update rules do.
    fresh = cfg.updates or any(c.kind == "fn" for c in group.constraints)  # (top-level ones included)
    g = (model.train_graph.copy() if not fresh else  # elaborated once per model
         elaborate(model.program, model.model_name, model.hparams, training=True,
                   dims=model.dims, extra=cfg.updates))
    sg = StepGraph(g, {}, group, split=split)
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
        _paid_metrics(sg, cfg)  # ... and the metrics its loss already computes
        return
    roots = ([res["loss"]] if "loss" in res else []) + list(g.updates.values())
    cone = set(g.topo_order(roots)) if roots else set()
    for k, n in g.outputs.items():
        if g.output_kinds[k] in ("loss", "metric") and k not in ("loss", loss):
            if _is_scalar(g, n) and _costly(g, n, cone):
                sg.deferred[k] = n
                continue
            res[k] = n
            sg.metric_keys.add(k)
            if _is_scalar(g, n):
                sg.logged[k] = k


HEAVY_OPS = frozenset({"matmul", "conv", "scan"})


def _costly(g: Graph, n: int, cone: set) -> bool:
    """Whether metric `n` needs a matmul, conv or scan that the loss does not compute."""
    return any(g.node(x).op in HEAVY_OPS for x in g.topo_order([n]) if x not in cone)


def _paid_metrics(sg: StepGraph, cfg: TrainConfig):
    """Scalar metrics a player's step gets for scalar arithmetic only: every non-scalar
    node they depend on is already computed for its loss (WGAN-GP's `wasserstein =
    d_real - d_fake` and `grad_penalty` in the critic's step). Each such metric is
    logged by the first player (in the train block's order) whose loss pays for it, so
    one value per round reaches metrics.csv and the plot."""
    g = sg.graph
    paid = {grp.name: g.ancestors([g.outputs[grp.loss]]) for grp in cfg.groups
            if grp.loss is not None and grp.loss in g.outputs}
    for k, n in g.outputs.items():
        if g.output_kinds[k] != "metric" or k in sg.logged or not _is_scalar(g, n):
            continue
        heavy = [a for a in g.ancestors([n]) if not _is_scalar(g, a)]
        owner = next((name for name, anc in paid.items() if all(a in anc for a in heavy)), None)
        if owner == sg.group.name:
            sg.results[k] = n
            sg.metric_keys.add(k)  # reported; an exported step leaves it to the metrics model
            sg.logged[k] = k


def _state_and_rule_updates(sg: StepGraph, cfg: TrainConfig):
    g = sg.graph
    for node, value in g.updates.items():
        name = g.node(node).attrs["name"]
        if g.node(node).op == "state" or name in cfg.update_targets:
            sg.results["new:" + name] = value


def _optimizer_step(sg: StepGraph, cfg: TrainConfig, total_steps: int):
    from compiler.training import constraints, optim, schedules
    g, group, res = sg.graph, sg.group, sg.results
    opt = optim.make_optimizer(group.optimizer.name, optimizer_options(group))
    params = g.by_name("param")
    names = list(group.params)
    nodes = [params[p] for p in names]
    loss = res["loss"]
    grads = _grad(g, loss, nodes)
    if sg.split:  # the update reads the (all-reduced) gradients as inputs
        grads = _split_off(sg, "grad:", names, nodes, grads)
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
    sg.update_results.add("lr")
    sg.logged["lr"] = f"{group.name}.lr" if cfg.players else "lr"
    g_snaps = {}
    if "g_snap" in sum((opt.inputs(p, g.type(n)) for p, n in zip(names, nodes)), []):
        # SVRG: the batch gradient at the snapshot params, inside this same graph
        snaps, gs = optim.snapshot_gradients(g, loss, nodes, prefix="snapshot:")
        if sg.split:
            gs = _split_off(sg, "gsnap:", names, nodes, gs)
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
        # `constrain`: the new value is the projection of the update (training/constraints.py)
        new_p = constraints.project(g, node, new_p, constraints.for_param(group.constraints, p))
        res["new:" + p] = new_p
        sg.update_results.add("new:" + p)
        for s, n in new_slots.items():
            res[f"new:opt.{p}.{s}"] = n
            sg.update_results.add(f"new:opt.{p}.{s}")
        if cfg.average is not None:
            avg = _source(g, "input", f"avg.{p}", t.dtype, t.shape)
            decay = cfg.average.kwargs["decay"] if cfg.average.name == "polyak" else None
            res[f"new:avg.{p}"] = optim.polyak_update(g, avg, new_p, decay, step=step)
            sg.update_results.add(f"new:avg.{p}")
            sg.averages[f"avg.{p}"] = p


def _split_off(sg: StepGraph, prefix: str, names, nodes, grads) -> list:
    """Gradient nodes become results `prefix+P`; inputs of the same names replace them."""
    out = []
    for p, node, gr in zip(names, nodes, grads):
        t = sg.graph.type(node)
        sg.results[prefix + p] = gr
        sg.reduced.append(prefix + p)
        out.append(_source(sg.graph, "input", prefix + p, t.dtype, t.shape))
    return out


def _source(g: Graph, op: str, name: str, dtype: str, shape) -> int:
    n = g.source_named(name)  # an index: a scan of every source per call was quadratic
    if n is not None:
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

