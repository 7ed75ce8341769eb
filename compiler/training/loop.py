"""The runner: steps the compiled train-step graph on any backend, evaluates each
epoch, stops early, averages, checkpoints and resumes bit-exactly.

Determinism: batch order depends only on (seed, epoch), noise only on (seed, step),
parameter initialisation only on the seed; a checkpoint records the batch position.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.core import backend_registry, noise
from compiler.training import checkpoint
from compiler.training.distributed import Comm
from compiler.training.reporting import write_metrics_csv
from compiler.training.step_check import finite_and_scalars
from compiler.training.spec import TrainConfig
from compiler.training.step import (
    StepGraph,
    _finite,
    _gradient_graph,
    _is_scalar,
    _numpy,
    _rounds,
    build_step,
    initial_values,
)
from dsl.errors import SpecError

EVAL_BATCH = 512
# Noise streams of evaluation and of SVRG's full-gradient pass: step indices no
# training step reaches, so they never repeat a training draw.
EVAL_NOISE = 1 << 40
SNAPSHOT_NOISE = 1 << 41
EXIT_OK, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130
RING = "ckavg/"  # checkpoint namespace of `average checkpoints(n)`'s last n params
# rounds between two checks of the whole training state (params, optimizer slots,
# running statistics): a full check reads every tensor (~10% of an MLP step on the CPU)
STATE_CHECK_EVERY = 16
CHECKPOINT, METRICS, CURVES, ONNX_MODEL = ("checkpoint.safetensors", "metrics.csv",
                                           "curves.png", "model.onnx")



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
                 seed=0, out: Path, progress=None, comm: Comm | None = None,
                 dtype: str = "f32", horizon: int | None = None, compile: bool = False):
        self.model, self.cfg, self.backend, self.device = model, cfg, backend, device
        self.seed, self.out, self.dtype = seed, out, dtype
        # data-parallel: each step is split into a gradient half and an update half,
        # with one all-reduce between them (compiler/training/distributed.py)
        self.comm = comm or Comm()
        # the loss and logged scalars are checked every step (one host read); the whole
        # state every STATE_CHECK_EVERY rounds and before anything reads it, replaying
        # the rounds since the last verified state on a failure (see `verify`)
        # (data-parallel: every step, as a rank's own batch-norm statistics may differ and
        # a replay on one rank alone would leave the others waiting in the all-reduce)
        self.check_every = 1 if self.comm.active else STATE_CHECK_EVERY
        self._verified: tuple | None = None  # (values, position) last seen finite
        self._since: list = []  # the batches run since then
        if cfg.bagging is not None:  # each member's bootstrap sample, seeded by the run's seed
            from compiler.training import bagging
            parts = bagging.resample(cfg.bagging, parts, seed)
        self.train_ds, self.val_ds, self.test_ds = parts
        if self.train_ds.n == 0:
            raise SpecError("the training part of the split is empty", cfg.data_span)
        from compiler.training.data_check import check_index_ranges
        check_index_ranges(model.graph, parts, cfg.data_span)
        self.nb = self.train_ds.num_batches(cfg.batch)
        self.total_rounds = _rounds(cfg, self.nb)
        # the schedules' horizon: a resumed run keeps the one it started with (past it
        # a schedule holds its last value), so `--epochs` more does not re-stretch it
        self.horizon = horizon or self.total_rounds
        self.steps = [build_step(model, cfg, grp, self.horizon * grp.steps,
                                 split=self.comm.active) for grp in cfg.groups]
        self.programs = [self._lower_halves(sg) if sg.split else
                         self._lower(sg.graph, sg.results) for sg in self.steps]
        if compile:  # `--compile`: torch.compile of each whole step program (torch only)
            tb = backend_registry.load("torch")
            self.programs = [tuple(map(tb.compile_program, p)) if isinstance(p, tuple)
                             else tb.compile_program(p) for p in self.programs]
        eg = model.graph
        self.eval_names = [k for k, kind in eg.output_kinds.items() if kind in ("loss", "metric")
                           and _is_scalar(eg, eg.outputs[k])]
        self.eval_prog = self._lower(eg, {k: eg.outputs[k] for k in self.eval_names}) \
            if self.eval_names else None
        self.svrg = [sg for sg in self.steps if sg.snapshots]
        # costly metrics are left out of the step: computed at each metrics row instead
        self.deferred = [(sg, self._lower(*sg.deferred_program())) for sg in self.steps
                         if sg.deferred]
        # group -> the feeds of its last step (for those; only groups with deferred
        # metrics keep them: they hold the values from before the update alive)
        self.last_feeds: dict = {}
        self._keeps_feeds = {sg.group.name for sg, _ in self.deferred}
        self.grad_progs = {id(sg): self._lower(*_gradient_graph(model, cfg, sg.group))
                           for sg in self.svrg}
        from compiler.training import finetune
        self.values = initial_values(self.model, self.steps, self.seed,
                                     finetune.initial_params(cfg, model) if cfg.init_from else None)
        self.best_values: dict | None = None
        self.ring: list = []  # `average checkpoints(n)`: params at the last n evaluations
        self.pos = Position(group_steps={grp.name: 0 for grp in cfg.groups})
        self.progress = progress

    @property
    def compile_s(self) -> float | None:
        """Seconds `--compile` spent compiling the step programs (None: not compiled)."""
        progs = [q for p in self.programs for q in (p if isinstance(p, tuple) else (p,))]
        times = [q.compile_s for q in progs if hasattr(q, "compile_s")]
        return round(sum(times), 3) if times else None

    def _lower(self, graph, results):
        return self.model.lower(results, graph, self.backend, self.dtype, self.device)

    def _lower_halves(self, sg: StepGraph):
        grad_res, upd_res = sg.halves()
        # the update half needs no forward pass: drop the graph's state updates, which
        # `optimize` would otherwise keep alive (they belong to the gradient half)
        ug = copy.copy(sg.graph)
        ug.updates = {}
        return self._lower(sg.graph, grad_res), self._lower(ug, upd_res)

    def _step(self, sg: StepGraph, prog, feeds: dict, weight: int, step: int, full: bool):
        """One step program; data-parallel: gradient half, all-reduce, update half.
        Returns (results, the logged scalars), read back with the finite check at once
        (of every result when `full`, else of the logged scalars: the loss)."""
        if not sg.split:
            out = prog(feeds)
            finite, scalars = finite_and_scalars(out, sg.logged, full=full)  # one host read
            if not finite:
                self._check_finite(sg, feeds, out, step)  # names the culprit
            return out, scalars
        grad_prog, update_prog = prog
        # every result of the gradient half is a per-sample mean (gradients, losses,
        # metrics, new states): their row-weighted average over ranks is the global one
        out, _ = self.comm.reduce_mean(grad_prog(feeds), weight)
        if full and not finite_and_scalars(out, ())[0]:
            self._check_finite(sg, feeds, out, step)  # the same on every rank: all stop
        feeds = {**feeds, **{k: out[k] for k in sg.reduced}}
        upd = update_prog(feeds)
        merged = {**out, **upd}
        finite, scalars = finite_and_scalars(merged, sg.logged, full=full)
        if not finite:
            self._check_finite(sg, feeds, upd, step)
        return merged, scalars

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
                self.verify()  # a replay never crosses an epoch (nor SVRG's snapshot)
                if self.pos.batch >= self.nb:
                    self.pos.epoch += 1
                    self.pos.batch = 0
                    if not self.cfg.eval_every and not self.pos.stopped:
                        self._evaluate_and_log()
            if self.pos.count:  # steps left since the last row (e.g. `steps N` mid-epoch)
                self._evaluate_and_log()
            self.verify()
        self.pos.elapsed = time.perf_counter() - start

    def _round(self, batch: dict):
        """One round of the loop: the loss checked at every step, the whole state every
        `check_every` rounds (`verify`)."""
        if self.check_every == 1:
            return self._run_round(batch, full=True)
        if not self._since:
            self._verified = (self.values, copy.deepcopy(self.pos))
        self._since.append(batch)
        try:
            self._run_round(batch, full=False)
        except Diverged:  # the state may have gone bad in an earlier round
            self._replay()
            raise
        if len(self._since) >= self.check_every:
            self.verify()

    def verify(self):
        """Check the whole state; if a value is not finite, replay the rounds since the
        last verified state with every step checked, so `Diverged` names the exact step
        and tensor, as a check at every step would (the rounds are deterministic: data
        order, noise and augmentation are seeded by the position)."""
        if self._since and not finite_and_scalars(self.values, ())[0]:
            self._replay()
            # not reproduced (a nondeterministic kernel): report it at the current step
            sg = self.steps[-1]
            self._check_finite(sg, self.last_feeds.get(sg.group.name, {}), self.values,
                               self.pos.noise_step - 1)
        self._since = []

    def _replay(self):
        """The rounds since the last verified state again, each step fully checked:
        raises `Diverged` at the first step with a non-finite result."""
        since, self._since = self._since, []
        values, pos = self._verified
        self.values, self.pos = values, copy.deepcopy(pos)
        with np.errstate(all="ignore"):
            for batch in since:
                self._run_round(batch, full=True)

    def _run_round(self, batch: dict, full: bool):
        """Every group's steps on one batch; values and position change only when the
        whole round succeeded (so an interrupt leaves a consistent state)."""
        values = dict(self.values)
        noise_step = self.pos.noise_step
        group_steps = dict(self.pos.group_steps)
        logged = {}
        n = len(next(iter(batch.values())))  # the global batch's rows
        if self.cfg.augment:  # training batches only; seeded by (seed, round)
            from compiler.training import augment
            batch = augment.apply(self.cfg.augment, batch, self.seed, self.pos.round)
        batch, weight = self.comm.shard(batch)
        seed = self.comm.noise_seed(self.seed)
        for sg, prog in zip(self.steps, self.programs):
            for _ in range(sg.group.steps):
                feeds = {**values, **batch,
                         **noise.draw(sg.graph, batch, seed, noise_step, sg.noise_names),
                         "step": np.asarray(group_steps[sg.group.name], np.float32)}
                out, scalars = self._step(sg, prog, feeds, weight, noise_step, full)
                if full or sg.group.name in self._keeps_feeds:
                    self.last_feeds[sg.group.name] = feeds
                for k, v in out.items():
                    if k.startswith("new:"):
                        values[k[4:]] = v
                logged.update(zip(sg.logged.values(), scalars))
                noise_step += 1
                group_steps[sg.group.name] += 1
        self.values = values
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
        notes = []
        if where is not None:
            op, span, note = where
            msg += f"; the first non-finite value is computed by `{op}` here"
            notes = [note] if note else []
        elif sg.group.optimizer is not None and sg.group.optimizer.span is not None:
            # the model's own values are finite: the update made it (lr = huge, eps = 0)
            span = sg.group.optimizer.span
            msg += f"; the model's values are finite, so the update of `{sg.group.optimizer.name}` made it"
        err = SpecError(msg, span, hint="lower the learning rate, clip gradients "
                        "(`clip_grad_norm`), or guard logs and divisions", notes=notes)
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
            seed = self.comm.noise_seed(self.seed)
            for i, batch in enumerate(self.train_ds.batches(self.cfg.batch, shuffle=False)):
                batch, m = self.comm.shard(batch)  # data-parallel: this rank's rows
                step = SNAPSHOT_NOISE + self.pos.epoch * self.nb + i
                out = prog({**feeds, **batch, **noise.draw(sg.graph, batch, seed, step, sg.noise_names)})
                for k, v in out.items():
                    total[k] = total.get(k, 0.0) + _numpy(v).astype(np.float64) * m
                n += m
            means, _ = self.comm.reduce_mean({k: v / max(n, 1) for k, v in total.items()}, n)
            for mu, p in sg.mus.items():
                self.values[mu] = means[f"grad:{p}"].astype(_numpy(self.values[p]).dtype)

    # -- evaluation --
    def eval_values(self) -> dict:
        """Params (their averages when averaging) and states, for evaluation."""
        vals = {k: self.values[k] for k in self.model.params}
        for sg in self.steps:
            vals.update({p: self.values[a] for a, p in sg.averages.items()})
        if self.ring:  # checkpoint averaging: the mean of the last n evaluations' params
            vals.update({p: _like(np.mean([r[p].astype(np.float64) for r in self.ring], 0),
                                  self.values[p]) for p in self.model.params})
        vals.update({k: self.values[k] for k in self.model.states})
        return vals

    def evaluate(self, ds, values=None) -> dict:
        if self.eval_prog is None or ds is None or ds.n == 0:
            return {}
        values = values or self.eval_values()
        sums, n = {}, 0
        with _no_grad(self.backend):
            for i, batch in enumerate(ds.batches(EVAL_BATCH, shuffle=False)):
                if i % self.comm.world != self.comm.rank:  # data-parallel: every world-th
                    continue
                noise_feeds = noise.draw(self.model.graph, batch, self.seed, EVAL_NOISE + i)
                out = self.eval_prog({**values, **batch, **noise_feeds})
                m = len(next(iter(batch.values())))
                for k in self.eval_names:
                    sums[k] = sums.get(k, 0.0) + float(_numpy(out[k])) * m
                n += m
        sums = {k: sums.get(k, 0.0) for k in self.eval_names}  # a rank may have had none
        sums, n = self.comm.reduce_sums(sums, n)
        return {k: v / n for k, v in sums.items()}

    def _evaluate_and_log(self):
        self.verify()  # nothing evaluates, averages or writes unverified values
        p = self.pos
        if self.cfg.checkpoint_average:
            self.ring = (self.ring + [{k: _numpy(self.values[k]).copy()
                                       for k in self.model.params}])[-self.cfg.checkpoint_average:]
        row = {"epoch": round(p.round / self.nb, 4), "step": p.round,
               "time": round(p.elapsed, 3)}
        row.update({f"train_{k}": v / max(p.count, 1) for k, v in p.sums.items()
                    if not _is_lr(k)})
        row.update({k: v for k, v in p.last.items() if _is_lr(k)})
        row.update(self._deferred_metrics())
        val = self.evaluate(self.val_ds) if self.cfg.evaluating else {}
        row.update({f"val_{k}": v for k, v in val.items()})
        p.history.append(row)
        p.sums, p.count = {}, 0
        self._early_stopping(val)
        if self.progress:
            self.progress.row(self, row)
        if self.comm.main:  # only rank 0 writes
            self.save_checkpoint()
            write_metrics_csv(self.out / METRICS, p.history)

    def _deferred_metrics(self) -> dict:
        """The costly metrics at the last step's inputs (its values before the update,
        its batch and noise): `train_K` of a row is that step's K, not a mean."""
        row = {}
        for sg, prog in self.deferred:
            feeds = self.last_feeds.get(sg.group.name)
            if feeds is not None:
                out = prog(feeds)
                row.update({f"train_{k}": float(_numpy(out[k])) for k in sg.deferred})
        return row

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
        self.verify()
        # namespaces (see `checkpoint`): the weights to deploy apart from the training state
        tensors = {checkpoint.TRAIN + k: _numpy(v) for k, v in self.values.items()}
        if self.best_values is not None:
            tensors.update({checkpoint.BEST + k: _numpy(v) for k, v in self.best_values.items()})
        tensors.update({checkpoint.PARAMS + k: _numpy(v) for k, v in self.deploy_values().items()})
        for i, r in enumerate(self.ring):
            tensors.update({f"{RING}{i}/{k}": v for k, v in r.items()})
        meta = {"model": self.model.name, "config_hash": self.config_hash(), "seed": self.seed,
                "total_rounds": self.total_rounds, "horizon": self.horizon,
                "batches_per_epoch": self.nb,
                "position": self.pos.__dict__, **self.describe_run()}
        checkpoint.save(self.out / CHECKPOINT, tensors, meta)

    def deploy_values(self) -> dict:
        """What the run evaluates with at the end: the best evaluation's values when
        early stopping (restored then), averaged params when averaging."""
        saved = self.values
        if self.cfg.early_stop is not None and self.best_values is not None:
            self.values = {**saved, **self.best_values}
        try:
            return self.eval_values()
        finally:
            self.values = saved

    def describe_run(self) -> dict:
        """Metadata for whoever deploys the weights: which spec (path, content hash),
        hyperparameters, dims and data set they belong to."""
        prog = self.model.program
        return {"spec": {"path": str(Path(prog.path).resolve()),
                         "hash": checkpoint.spec_hash(prog)},
                "model_name": self.model.model_name, "hparams": dict(self.model.hparams),
                "dims": dict(self.model.dims), "data": self.cfg.data,
                "data_options": dict(self.cfg.data_options),
                "params": list(self.model.params), "states": list(self.model.states)}

    def load_checkpoint(self):
        tensors, meta = checkpoint.load(self.out / CHECKPOINT)
        if meta.get("config_hash") != self.config_hash():
            raise checkpoint.CheckpointError(
                f"the checkpoint in {self.out} was written by a different training "
                "configuration (model, data, split, batch, optimizer, seed...); "
                "train afresh without --resume, or use another --out")
        state = checkpoint.namespace(tensors, checkpoint.TRAIN)
        missing = [k for k in self.values if k not in state]
        if missing:
            raise checkpoint.CheckpointError(f"the checkpoint in {self.out} lacks "
                                             f"{', '.join(missing[:5])}")
        for k in self.values:
            have, want = np.asarray(state[k]), np.asarray(self.values[k])
            # floats are stored in the run dtype (`--dtype f64` keeps float64 tensors)
            need = np.dtype(np.float64) if want.dtype.kind == "f" and self.dtype == "f64" \
                else want.dtype
            if have.shape != want.shape or have.dtype != need:
                raise checkpoint.CheckpointError(
                    f"the checkpoint in {self.out} holds `{k}` as {have.dtype}{list(have.shape)}, "
                    f"but the model needs {need}{list(want.shape)}")
        self.pos = _position(meta.get("position"), self.out)
        for k in self.values:
            self.values[k] = state[k]
        ring = checkpoint.namespace(tensors, RING)
        self.ring = [{k.split("/", 1)[1]: v for k, v in ring.items() if k.split("/")[0] == str(i)}
                     for i in range(len({k.split("/")[0] for k in ring}))]
        best = checkpoint.namespace(tensors, checkpoint.BEST)
        self.best_values = best or None
        self.resumed_from = meta


def _position(raw, out) -> "Position":
    """The checkpoint's position, each field of the right type and in range, or a CheckpointError."""
    def bad(why):
        return checkpoint.CheckpointError(f"the checkpoint in {out} has bad position metadata: {why}")
    if not isinstance(raw, dict):
        raise bad("not an object")
    fields = {f.name: f for f in dataclasses.fields(Position)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}")
    ints = ("epoch", "batch", "round", "noise_step", "count", "bad_evals")
    for k, v in raw.items():
        if k in ints and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise bad(f"{k} = {v!r} is not a non-negative integer")
        if k in ("group_steps", "sums", "last") and not isinstance(v, dict):
            raise bad(f"{k} is not an object")
        if k == "stopped" and not isinstance(v, bool):
            raise bad(f"stopped = {v!r} is not true or false")
        if k in ("best", "best_epoch", "elapsed", "best_round") and v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float))):
            raise bad(f"{k} = {v!r} is not a number")
    return Position(**raw)


def _like(a: np.ndarray, ref):
    """`a` as the same kind of array as `ref` (a torch tensor on its device, or NumPy)."""
    if hasattr(ref, "detach"):
        import torch
        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
    return a.astype(np.asarray(ref).dtype)


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
               g.clip_grad_norm, list(g.params), g.steps)
              + ((tuple(c.key() for c in g.constraints),) if g.constraints else ())
              for g in cfg.groups]
    key = {"model": model.name, "hparams": cfg.hparams, "data": cfg.data,
           "data_options": cfg.data_options, "data_seed": cfg.data_seed,
           "split": list(cfg.split), "batch": cfg.batch, "seed": seed,
           "early_stop": None if cfg.early_stop is None else
           [cfg.early_stop.metric, cfg.early_stop.patience, cfg.early_stop.mode],
           "average": _call(cfg.average), "eval_every": cfg.eval_every, "groups": groups,
           "updates": repr(cfg.updates)}
    if cfg.init_from or cfg.frozen:  # (absent otherwise: older checkpoints still resume)
        key["finetune"] = [[i.key() for i in cfg.init_from], list(cfg.frozen)]
    if cfg.augment:
        key["augment"] = [a.key() for a in cfg.augment]
    if cfg.bagging is not None:
        key["bagging"] = cfg.bagging.key()
    if cfg.checkpoint_average:
        key["checkpoint_average"] = cfg.checkpoint_average
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
        np_backend = backend_registry.load("numpy")
        prog = np_backend.lower(g, {f"n{n}": n for n in located}, dtype="f32")
        with np.errstate(all="ignore"):
            out = prog({k: _numpy(v) for k, v in feeds.items()})
    except Exception:  # diagnosis is best effort; the step's own message stands
        return None
    for n in located:
        if not np.isfinite(out[f"n{n}"]).all():
            return g.node(n).op, g.node(n).span, _user_call_note(g.data(n))
    return None


def _user_call_note(d) -> tuple | None:
    """A node made inside a library layer: the note at the user's own call of it."""
    site, span = d.get("site"), d.get("span")
    if site is None or span is None or site.source is span.source:
        return None
    path = d.get("path")
    return (f"in layer `{path}`, called here" if path else "called here", site)


