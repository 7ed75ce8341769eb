"""Learning-rate schedules, compiled into the train-step graph.

A schedule maps the 0-based step count ``t`` and the base learning rate to the
learning rate of step ``t``. Each one exists twice, and the two agree:

* ``Schedule.value(t, base_lr) -> float``: plain Python (tests, logging, plots);
* ``Schedule.build(g, step, base_lr) -> node``: the same formula as graph nodes, where
  ``step`` is an f32 scalar node holding ``t`` and ``base_lr`` a scalar node, so an
  exported train-step model carries its own schedule.

| name | options | lr at step t |
| --- | --- | --- |
| ``constant`` | — | ``base`` |
| ``step`` | ``every`` (required), ``gamma=0.1`` | ``base * gamma^floor(t / every)`` (torch ``StepLR``) |
| ``exponential`` | ``gamma`` (required) | ``base * gamma^t`` (``ExponentialLR``) |
| ``cosine`` | ``total=None``, ``min_lr=0``, ``warmup=0`` | linear warm-up ``base*(t+1)/warmup`` for ``t < warmup``, then ``min_lr + (base - min_lr)(1 + cos(pi s / S))/2`` with ``s = t - warmup``, ``S = total - warmup``; ``s`` is clamped at ``S`` (stays at ``min_lr``) (``CosineAnnealingLR``) |
| ``warmup_cosine`` | ``total=None``, ``min_lr=0``, ``warmup=None`` | ``cosine`` with ``warmup`` defaulting to 5% of ``total`` (at least 1) |
| ``warmup`` | ``steps`` (required) | ``base * min(1, (t+1)/steps)`` then constant (``LinearLR(1/steps, 1, steps-1)``) |
| ``inverse_time`` | ``decay=1`` | ``base / (1 + decay t)``: the notes' 1/t rate (``LambdaLR``) |
| ``linear`` | ``total=None``, ``end=0`` | from ``base`` at ``t=0`` to the *absolute* learning rate ``end`` at ``t=total``, constant after (``LinearLR(1, end/base, total)``) |

``total`` defaults to the run's total number of steps (``make_schedule(...,
total_steps=)``); a schedule that needs it and gets neither raises ``ValueError``.
"""
from __future__ import annotations

import math

from compiler.core.ir import Graph
from compiler.training.options import REQUIRED, check_names, lookup

__all__ = ["SCHEDULES", "Schedule", "make_schedule", "Constant", "Step", "Exponential",
           "Cosine", "WarmupCosine", "Warmup", "InverseTime", "Linear"]


class Schedule:
    """Base class: ``value`` (Python) and ``build`` (graph) of one formula.

    ``options`` lists the accepted keyword options with their defaults; a default of
    `REQUIRED` must be given. ``hyper`` holds the resolved options.
    """

    name = "schedule"
    options: dict = {}

    def __init__(self, **hyper):
        self.hyper = hyper
        for k, v in hyper.items():
            setattr(self, k, v)

    def value(self, t: int, base_lr: float) -> float:
        raise NotImplementedError

    def build(self, g: Graph, step: int, base_lr: int) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{self.name}({args})"




# ---- small graph helpers ---------------------------------------------------------------

def _c(g: Graph, v: float, like: int) -> int:
    return g.scalar_like(float(v), like)


def _mul(g, a, b):
    return g.op("mul", a, b)


def _add(g, a, b):
    return g.op("add", a, b)


# ---- the schedules -----------------------------------------------------------------------

class Constant(Schedule):
    name = "constant"
    options = {}

    def value(self, t, base_lr):
        return float(base_lr)

    def build(self, g, step, base_lr):
        return base_lr


class Step(Schedule):
    name = "step"
    options = {"every": REQUIRED, "gamma": 0.1}

    def value(self, t, base_lr):
        return base_lr * self.gamma ** (t // self.every)

    def build(self, g, step, base_lr):
        k = g.op("floor", g.op("div", step, _c(g, self.every, step)))
        return _mul(g, base_lr, g.op("pow", _c(g, self.gamma, step), k))


class Exponential(Schedule):
    name = "exponential"
    options = {"gamma": REQUIRED}

    def value(self, t, base_lr):
        return base_lr * self.gamma ** t

    def build(self, g, step, base_lr):
        return _mul(g, base_lr, g.op("pow", _c(g, self.gamma, step), step))


class Cosine(Schedule):
    name = "cosine"
    options = {"total": None, "min_lr": 0.0, "warmup": 0}

    def value(self, t, base_lr):
        w, total = self.warmup, self.total
        if t < w:
            return base_lr * (t + 1) / w
        s = min(t - w, total - w)
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * s / (total - w))) / 2

    def build(self, g, step, base_lr):
        w, total = self.warmup, self.total
        s = g.op("sub", step, _c(g, w, step)) if w else step
        s = g.op("minimum", s, _c(g, total - w, step))
        cos = g.op("cos", g.op("mul", s, _c(g, math.pi / (total - w), step)))
        half = g.op("mul", _add(g, cos, _c(g, 1.0, cos)), _c(g, 0.5, cos))
        mn = _c(g, self.min_lr, base_lr)
        lr = _add(g, mn, _mul(g, g.op("sub", base_lr, mn), half))
        if w:
            ramp = _mul(g, base_lr, g.op("div", _add(g, step, _c(g, 1.0, step)), _c(g, w, step)))
            lr = g.op("where", g.op("lt", step, _c(g, w, step)), ramp, lr)
        return lr


class WarmupCosine(Cosine):
    """``cosine`` whose warm-up defaults to 5% of the total steps (at least 1)."""
    name = "warmup_cosine"
    options = {"total": None, "min_lr": 0.0, "warmup": None}


class Warmup(Schedule):
    name = "warmup"
    options = {"steps": REQUIRED}

    def value(self, t, base_lr):
        return base_lr * min(1.0, (t + 1) / self.steps)

    def build(self, g, step, base_lr):
        f = g.op("div", _add(g, step, _c(g, 1.0, step)), _c(g, self.steps, step))
        return _mul(g, base_lr, g.op("minimum", f, _c(g, 1.0, f)))


class InverseTime(Schedule):
    name = "inverse_time"
    options = {"decay": 1.0}

    def value(self, t, base_lr):
        return base_lr / (1 + self.decay * t)

    def build(self, g, step, base_lr):
        den = _add(g, _c(g, 1.0, step), _mul(g, step, _c(g, self.decay, step)))
        return g.op("div", base_lr, den)


class Linear(Schedule):
    name = "linear"
    options = {"total": None, "end": 0.0}

    def value(self, t, base_lr):
        f = min(t, self.total) / self.total
        return base_lr + (self.end - base_lr) * f

    def build(self, g, step, base_lr):
        f = g.op("div", g.op("minimum", step, _c(g, self.total, step)), _c(g, self.total, step))
        return _add(g, base_lr, _mul(g, g.op("sub", _c(g, self.end, base_lr), base_lr), f))


SCHEDULES: dict[str, type] = {c.name: c for c in
                              (Constant, Step, Exponential, Cosine, WarmupCosine, Warmup,
                               InverseTime, Linear)}


# ---- construction and validation -------------------------------------------------------------

def _number(sched: str, key: str, v, *, integer=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"schedule {sched}: option `{key}` must be a number, got {v!r}")
    if integer:
        if float(v) != int(v):
            raise ValueError(f"schedule {sched}: option `{key}` must be a whole number, got {v!r}")
        return int(v)
    return float(v)


def make_schedule(name: str, kwargs: dict | None = None, *, total_steps: int | None = None) -> Schedule:
    """The schedule ``name`` with options ``kwargs``; ``total_steps`` fills ``total``.

    Raises ``ValueError`` naming the bad schedule or option and the valid ones.
    """
    kwargs = dict(kwargs or {})
    cls = lookup("schedule", SCHEDULES, name)
    sig = check_names("schedule", name, kwargs, cls.options)
    hyper = {}
    for k, default in cls.options.items():
        v = kwargs.get(k, default)
        if v is REQUIRED:
            raise ValueError(f"schedule {name} needs option `{k}` ({sig})")
        if k == "total" and v is None:
            if total_steps is None:
                raise ValueError(f"schedule {name} needs `total` (the number of steps), and the "
                                 f"run's total step count is not known ({sig})")
            v = total_steps
        if k == "warmup" and v is None:  # warmup_cosine: 5% of the run
            v = max(1, round(0.05 * hyper["total"]))
        integer = k in ("every", "total", "warmup", "steps")
        hyper[k] = _number(name, k, v, integer=integer)
    _check(name, hyper)
    return cls(**hyper)


def _check(name: str, h: dict) -> None:
    def bad(msg):
        raise ValueError(f"schedule {name}: {msg}")

    if "every" in h and h["every"] < 1:
        bad(f"`every` must be at least 1, got {h['every']}")
    if "steps" in h and h["steps"] < 1:
        bad(f"`steps` must be at least 1, got {h['steps']}")
    if "gamma" in h and h["gamma"] <= 0:
        bad(f"`gamma` must be positive, got {h['gamma']}")
    if "decay" in h and h["decay"] < 0:
        bad(f"`decay` must be non-negative, got {h['decay']}")
    if "warmup" in h and h["warmup"] < 0:
        bad(f"`warmup` must be non-negative, got {h['warmup']}")
    if "min_lr" in h and h["min_lr"] < 0:
        bad(f"`min_lr` must be non-negative, got {h['min_lr']}")
    if "total" in h:
        if h["total"] < 1:
            bad(f"`total` must be at least 1, got {h['total']}")
        if h["total"] <= h.get("warmup", 0):
            bad(f"`total` ({h['total']}) must exceed `warmup` ({h['warmup']})")
