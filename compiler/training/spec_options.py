"""The option readers of a train block: `_Options` checks one block's option names
(unknown, repeated) and reads each option's arguments into values, every mistake a
located `SpecError`. Split from `spec` (which assembles the `TrainConfig`)."""
from __future__ import annotations

import difflib

from dsl import ast as A
from dsl.errors import DslError, SpecError, Span

from compiler.training.options import check_names, lookup
from compiler.training.spec_types import Call, EarlyStop, DEFAULT_SPLIT


# ---- options -----------------------------------------------------------------------------

def _name_span(opt: A.Option) -> Span | None:
    """The span of just the option's name (the first word)."""
    s = opt.span
    if s is None:
        return None
    return Span(s.source, s.line, s.col, s.line, s.col + len(opt.name))


class _Options:
    """The options of one block, checked for unknown and repeated names."""

    # options a block may give several times (one per parameter group they name)
    REPEATABLE = ("constrain", "freeze", "init_from", "augment")

    def __init__(self, prog, body, allowed, where):
        self.prog, self.where = prog, where
        self.given: dict[str, A.Option] = {}
        self.all: dict[str, list] = {}
        for s in body:
            if not isinstance(s, A.Option):
                continue
            if s.name not in allowed:
                close = difflib.get_close_matches(s.name, allowed, n=1, cutoff=0.6)
                raise SpecError(f"unknown option `{s.name}` in {where}", _name_span(s),
                                hint=f"did you mean `{close[0]}`?" if close else
                                f"options: {', '.join(allowed)}")
            self.all.setdefault(s.name, []).append(s)
            if s.name in self.given and s.name not in self.REPEATABLE:
                raise SpecError(f"option `{s.name}` is given twice", _name_span(s),
                                notes=[("first given here", _name_span(self.given[s.name]))])
            self.given.setdefault(s.name, s)

    def _args(self, name, n, usage):
        opt = self.given[name]
        if len(opt.args) not in (n if isinstance(n, tuple) else (n,)):
            raise SpecError(f"`{name}` expects {usage}", opt.span)
        return opt.args

    def number(self, name, default, *, integer, minimum, positive=False):
        if name not in self.given:
            return default
        what = "an integer" if integer else "a number"
        (arg,) = self._args(name, 1, f"{what}, e.g. `{name} {1 if integer else 0.1}`")
        v = _const(self.prog, arg)
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (integer and not isinstance(v, int)) or v < minimum or (positive and v <= 0)
        if bad:
            lo = f"> {minimum:g}" if positive else f">= {minimum:g}"
            raise SpecError(f"`{name}` must be {what} {lo}, found {_show(v)}", arg.span)
        return v

    def int(self, name, default, minimum=1):
        return self.number(name, default, integer=True, minimum=minimum)

    def float(self, name, default, positive=False):
        v = self.number(name, default, integer=False, minimum=0, positive=positive)
        return None if v is None else float(v)

    def duration(self):
        if "epochs" in self.given and "steps" in self.given:
            raise SpecError("give either `epochs` or `steps`, not both",
                            _name_span(self.given["steps"]))
        return self.int("epochs", None), self.int("steps", None)

    def split(self):
        if "split" not in self.given:
            return DEFAULT_SPLIT
        args = self._args("split", (2, 3), "2 or 3 fractions, e.g. `split 0.8 0.1 0.1`")
        vals = []
        for a in args:
            v = _const(self.prog, a)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise SpecError(f"a split fraction must be a number >= 0, found {_show(v)}", a.span)
            vals.append(float(v))
        if abs(sum(vals) - 1) > 1e-6 or vals[0] <= 0:
            raise SpecError(f"split fractions must sum to 1 with a training part > 0, found "
                            f"{' '.join(f'{v:g}' for v in vals)}", self.given["split"].span)
        return tuple(vals) + (0.0,) * (3 - len(vals))

    def call(self, name, check=None) -> Call | None:
        if name not in self.given:
            return None
        (arg,) = self._args(name, 1, f"a name or a call, e.g. `{name} NAME(k = v)`")
        c = _as_call(self.prog, arg, name)
        if check is not None:
            check(c)
        return c

    # `average KIND(options)`: each kind's options and their defaults
    AVERAGES = {"uniform": {}, "polyak": {"decay": 0.999}, "checkpoints": {"n": 5}}

    def average(self) -> Call | None:
        c = self.call("average")
        if c is None:
            return None
        try:
            defaults = lookup("average", self.AVERAGES, c.name)
            check_names("average", c.name, c.kwargs, defaults)
        except ValueError as e:
            raise SpecError(str(e), c.span, hint="`average polyak(decay = 0.999)`, "
                            "`average uniform` or `average checkpoints(n = 5)`") from None
        for k, v in defaults.items():
            c.kwargs.setdefault(k, v)
        d, n = c.kwargs.get("decay"), c.kwargs.get("n")
        if c.name == "polyak" and (isinstance(d, bool) or not isinstance(d, (int, float))
                                   or not 0 <= d < 1):
            raise SpecError(f"polyak `decay` must be in [0, 1), found {_show(d)}", c.span)
        if c.name == "checkpoints" and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
            raise SpecError(f"checkpoints `n` must be an integer >= 2, found {_show(n)}", c.span)
        return c

    def early_stop(self, model) -> EarlyStop | None:
        if "early_stop" not in self.given:
            return None
        opt = self.given["early_stop"]
        usage = "usage: `early_stop val.METRIC patience N [min | max]`"
        args = opt.args
        if len(args) not in (3, 4) or not (isinstance(args[0], A.Attr) and
                                           isinstance(args[0].value, A.Name)
                                           and args[0].value.id == "val") \
                or not (isinstance(args[1], A.Name) and args[1].id == "patience"):
            raise SpecError("malformed `early_stop`", opt.span, hint=usage)
        metric = args[0].name
        known = [k for k, (kind, _) in model.outputs.items() if kind in ("loss", "metric")]
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1)
            raise SpecError(f"`val.{metric}`: the model has no loss or metric `{metric}`",
                            args[0].span, hint=f"did you mean `val.{close[0]}`?" if close else
                            f"losses and metrics: {', '.join(known) or 'none'}")
        patience = _const(self.prog, args[2])
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise SpecError("`patience` must be an integer >= 1", args[2].span)
        mode = "max" if metric.lower().startswith("acc") else "min"
        if len(args) == 4:
            if not (isinstance(args[3], A.Name) and args[3].id in ("min", "max")):
                raise SpecError("the early-stopping mode is `min` or `max`", args[3].span)
            mode = args[3].id
        return EarlyStop(metric, patience, mode, opt.span)

    def loss(self, model, *, needed: bool, span) -> str | None:
        losses = model.losses
        if "loss" in self.given:
            (arg,) = self._args("loss", 1, "a loss name, e.g. `loss ce`")
            if not isinstance(arg, A.Name) or arg.id not in losses:
                name = arg.id if isinstance(arg, A.Name) else "?"
                close = difflib.get_close_matches(name, losses, n=1)
                raise SpecError(f"the model has no loss `{name}`", arg.span,
                                hint=f"did you mean `{close[0]}`?" if close else
                                f"losses: {', '.join(losses) or 'none'}")
            return arg.id
        if len(losses) == 1:
            return losses[0]
        if not needed:
            return None
        if not losses:
            raise SpecError(f"model `{model.name}` declares no loss to minimise", span,
                            hint="declare `loss NAME = ...`, or train with update rules "
                            "`w <- ...` and no optimizer")
        raise SpecError(f"model `{model.name}` has several losses ({', '.join(losses)}); "
                        f"choose one in {self.where}", span, hint=f"e.g. `loss {losses[0]}`")


def _as_call(prog, e, what) -> Call:
    if isinstance(e, A.Name):
        return Call(e.id, {}, e.span)
    if isinstance(e, A.Call) and isinstance(e.func, A.Name):
        if e.args:
            raise SpecError(f"`{what}` options are given by name, e.g. `{e.func.id}(lr = 0.1)`",
                            e.args[0].span)
        return Call(e.func.id, {k.name: _const(prog, k.value) for k in e.kwargs}, e.span)
    raise SpecError(f"`{what}` expects a name or a call, e.g. `{what} NAME(k = v)`", e.span)


def _check_optimizer(c: Call):
    from compiler.training import optim
    try:
        optim.make_optimizer(c.name, dict(c.kwargs))
    except DslError as e:
        raise e.with_span(c.span)
    except (KeyError, ValueError, TypeError) as e:
        raise SpecError(_clean(e), c.span) from None


def _check_schedule(c: Call):
    from compiler.training import schedules
    try:
        # the run's length is not known yet: checked again when the step is built
        schedules.make_schedule(c.name, dict(c.kwargs), total_steps=10 ** 12)
    except DslError as e:
        raise e.with_span(c.span)
    except (KeyError, ValueError, TypeError) as e:
        raise SpecError(_clean(e), c.span) from None


def _clean(e: Exception) -> str:
    msg = str(e)
    # KeyError quotes its message
    return msg[1:-1] if isinstance(e, KeyError) and len(msg) > 1 and msg[0] == msg[-1] == "'" \
        else msg


def _const(prog, e):
    """A compile-time value (numbers, strings, booleans, constants of the spec)."""
    from compiler.elaborate import Evaluator
    v = Evaluator(None).eval(e, prog.scope)
    if isinstance(v, (bool, int, float, str, tuple)):
        return v
    from compiler.elaborate import describe
    raise SpecError(f"expected a number, string or boolean, found {describe(v)}", e.span)


def _show(v) -> str:
    return f"`{v}`" if not isinstance(v, str) else f'"{v}"'
