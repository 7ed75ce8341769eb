"""The phases of a check: forward, gradients, torch autograd and training steps, run on each backend."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.commands.equiv.compare import REFERENCE, ROUNDING, Backend, Comparison, _tol, judge
from compiler.commands.equiv.execute import lower_on, perturb, run_on
from compiler.commands.equiv.locate import locate_divergence
from compiler.commands.gradcheck import sample_inputs
from compiler.core import noise as noise_mod
from compiler.core.ir import Graph
from compiler.transform.passes import optimize
from dsl.errors import DslError

# ---- phases ---------------------------------------------------------------------------------

class Phase:
    """One optimised graph and its results, lowered once per backend."""

    def __init__(self, name: str, graph: Graph, results: dict[str, int]):
        self.name = name
        self.graph, self.results = optimize(graph, results)
        self._progs: dict = {}

    def program(self, b: Backend):
        if b not in self._progs:
            self._progs[b] = lower_on(b, self.graph, self.results)
        return self._progs[b]

    def run(self, b: Backend, feeds: dict) -> dict[str, np.ndarray]:
        return run_on(b, self.program(b), feeds)


def probes_for(b: Backend, backends: list[Backend]) -> list[Backend]:
    """The other float32 backends (their spread widens a float32 backend's tolerance)."""
    if b.precision == "f64":
        return []
    return [c for c in backends[1:] if c != b and c.precision == "f32"]


def _precisions(backends) -> list[str]:
    return sorted({b.precision for b in backends[1:]})


def _compare_run(report, phase: str, b: Backend, out: dict, ref_out: dict, sens: dict,
                 probe_outs: list, names: list, step=None, label=None) -> list[str]:
    """Judge every result `names` of one run of `b`; append the rows; return the failures."""
    bad = []
    for k in names:
        tensor = label(k) if label else k
        if k not in out or k not in ref_out:
            atol, rtol = _tol(b, phase)
            who = b.name if k not in out else REFERENCE
            c = Comparison(phase, tensor, b.name, REFERENCE, math.inf, math.inf, math.inf, atol,
                           rtol, False, step, error=f"{who} did not return {k!r}")
        else:
            j = judge(phase, b, out[k], ref_out[k], sensitive=sens.get(b.precision, {}).get(k),
                      probes=[p.get(k) for p in probe_outs])
            j.pop("index")
            c = Comparison(phase, tensor, b.name, REFERENCE, step=step,
                           shape=tuple(np.shape(ref_out[k])), **j)
        report.comparisons.append(c)
        if not c.ok:
            bad.append(k)
    return bad


def _error_row(report, phase, b, err: BaseException, step=None):
    atol, rtol = _tol(b, phase)
    msg = f"{type(err).__name__}: {err}".strip()
    report.comparisons.append(Comparison(phase, "*", b.name, REFERENCE, math.inf, math.inf,
                                         math.inf, atol, rtol, False, step, error=msg[:2000]))


def _sample_data(model, seed: int, dim: int, stream: int | None = None, source=None) -> dict:
    """A batch of the data source (the train block's data set) or, without one, random inputs."""
    if source is not None:
        batch = source.batch(model, seed, dim, stream)
        if batch is not None:
            return batch
    rng = np.random.default_rng(seed if stream is None else [seed, 7919, stream])
    data = sample_inputs(model.graph, rng, dim)
    # exactly representable in float32: f32 and f64 backends read the same numbers
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in data.items()}


def perturbed_params(model, seed: int) -> dict:
    """``init_params(seed)`` with N(0, 0.1^2) added to every float *param* (not states):
    zero-initialised weights and biases would make comparisons vacuous (a linear
    regression predicts exactly 0 at its zeros init) and put relus on their kinks."""
    rng = np.random.default_rng([seed, 104729])
    values = model.init_params(seed)
    out = {}
    for k, v in values.items():
        v = np.asarray(v)
        if k in model.params and v.dtype.kind == "f":
            v = (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype)
        out[k] = v
    return out


def _grad_label(loss: str, wrt: str) -> str:
    return f"d({loss})/d({wrt})"


def _forward_and_gradients(model, report, backends, seed, dim, locate, source=None):
    """Forward and gradient phases; returns the feeds and the reference's gradients."""
    data = _sample_data(model, seed, dim, source=source)
    params = perturbed_params(model, seed)
    feeds = {**params, **data}
    feeds.update({k: v for k, v in model.noise(feeds, seed).items() if k not in data})
    ref, others = backends[0], backends[1:]

    phases = [("forward", model.graph, dict(model.graph.outputs), None)]
    for loss in model.losses:
        g, res = model.gradient_results(loss)
        phases.append(("gradient", g, res, loss))
    ref_grads = {}
    for phase_name, g, res, loss in phases:
        phase = Phase(phase_name, g, res)
        outs: dict = {}
        for b in backends:
            try:
                outs[b] = phase.run(b, feeds)
            except Exception as e:
                outs[b] = e
        ref_out = outs[ref]
        if isinstance(ref_out, Exception):  # nothing to compare with
            _error_row(report, phase_name, ref, ref_out)
            continue
        sens = {p: phase.run(ref, perturb(feeds, ROUNDING[p], seed))
                for p in _precisions(backends)}
        names, label = list(phase.results), None
        if loss is not None:
            ref_grads[loss] = ref_out
            names = [n for n in names if n != loss]   # the loss is compared in forward
            label = (lambda k, loss=loss: _grad_label(loss, k.split(":", 1)[1]))
        for b in others:
            out = outs[b]
            if isinstance(out, Exception):
                _error_row(report, phase_name, b, out)
                continue
            probes = [p for p in probes_for(b, backends) if not isinstance(outs[p], Exception)]
            bad = _compare_run(report, phase_name, b, out, ref_out, sens,
                               [outs[p] for p in probes], names, label=label)
            if bad and locate:
                report.divergences.append(locate_divergence(
                    phase.graph, phase.results, b, ref, feeds, phase_name, probes=probes,
                    seed=seed))
    return feeds, ref_grads


def _autograd(model, report, feeds, ref_grads, device):
    """loss.backward() through the torch lowering of the forward graph vs dlc's gradients."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        report.skipped.append({"phase": "autograd", "reason": f"torch unavailable: {e}"})
        return
    g = model.graph
    b = Backend("torch", "f64", device)
    ref = Backend("numpy", "f64")
    name = "torch-autograd-f64" + ("" if device == "cpu" else f"-{device}")
    for loss in model.losses:
        try:
            fwd = Phase("autograd", g, {loss: g.outputs[loss]})
            module = lower_on(b, fwd.graph, fwd.results)
            held = dict(module.named_parameters())
            module.load_numpy({k: v for k, v in feeds.items() if k in held}, strict=False)
            module.zero_grad(set_to_none=True)
            out = module({k: v for k, v in feeds.items() if k not in held})
            if out[loss].requires_grad:  # a loss of no parameter: every gradient is 0
                out[loss].backward()
            auto = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().numpy()
                    for k, p in held.items()}
            if loss in ref_grads:
                sym = ref_grads[loss]
            else:
                gg, res = model.gradient_results(loss)
                sym = Phase("gradient", gg, res).run(ref, feeds)
        except Exception as e:
            _error_row(report, "autograd", b, e)
            continue
        for p in model.params:
            key = "grad:" + p
            if p not in auto or key not in sym:
                continue
            j = judge("autograd", b, auto[p], sym[key])
            j.pop("index")
            report.comparisons.append(Comparison(
                "autograd", _grad_label(loss, p), name, "dlc-symbolic-" + REFERENCE,
                shape=tuple(np.shape(sym[key])), **j))


# ---- training steps --------------------------------------------------------------------------

DEFAULT_HORIZON = 1000   # schedule horizon when the train block's run length is unknown


@dataclass
class _TrainSetup:
    model: object                      # the model with the train block's hparams
    groups: list                       # [(group name, group steps per round, Phase)]
    start: dict                        # initial params, states, slots, averages, ...
    batches: list                      # one data dict per round


def _train_setup(model, seed: int, dim: int, steps: int, source=None) -> _TrainSetup:
    """The training engine's step graphs (one per player group), their initial values
    as `dlc train` starts them, and fixed batches. Raises when there is no train step."""
    from compiler.training import step as training
    from compiler.training.spec import model_for, parse_train
    cfg = parse_train(model)
    m = model_for(model, cfg)
    try:  # the schedule's horizon as the train block describes the run (needs the data)
        rounds = training.total_rounds(cfg, m)
    except DslError:  # the data is not at hand (a user's file): the numbers compare all the same
        rounds = DEFAULT_HORIZON
    sgs = [training.build_step(m, cfg, grp, rounds * grp.steps) for grp in cfg.groups]
    groups = [(sg.group.name, sg.group.steps, Phase("train", sg.graph, sg.results)) for sg in sgs]
    # initial values exactly as `dlc train` makes them
    values = training.initial_values(m, sgs, seed)
    data_names = set(m.inputs)
    batches = [{n: v for n, v in _sample_data(m, seed, dim, stream=k, source=source).items() if n in data_names}
               for k in range(steps)]
    return _TrainSetup(m, groups, values, batches)


def _iterate(setup: _TrainSetup, b: Backend, seed: int, eps: float = 0.0) -> list:
    """Every step program run on backend b, each backend on its own values:
    [(group, round, phase, feeds, outputs)]. With ``eps``, the start values and every
    batch are perturbed by that relative rounding (the conditioning probe)."""
    values = dict(setup.start)
    if eps:
        values = perturb(values, eps, seed)
    group_steps = {name: 0 for name, _, _ in setup.groups}
    noise_step = 0
    runs = []
    for k, batch in enumerate(setup.batches):
        if eps:
            batch = perturb(batch, eps, seed + 1 + k)
        for name, n_steps, phase in setup.groups:
            for _ in range(n_steps):
                noise = noise_mod.draw(phase.graph, batch, seed, noise_step)
                if eps:
                    noise = perturb(noise, eps, seed + 7 * noise_step + 3)
                feeds = {**values, **batch, **noise,
                         "step": np.asarray(group_steps[name], np.float32)}
                out = phase.run(b, feeds)
                for r, v in out.items():
                    if r.startswith("new:"):
                        values[r[4:]] = v
                runs.append((name, k + 1, phase, feeds, out))
                noise_step += 1
                group_steps[name] += 1
    return runs


def _train(model, report, backends, seed, dim, steps, locate, source=None):
    from compiler.training.spec import find_train
    try:
        find_train(model.program, model.name)
    except DslError:  # nothing to train: the only reason this phase may be skipped
        report.skipped.append({"phase": "train", "reason": "no train block for this model"})
        return
    try:
        setup = _train_setup(model, seed, dim, steps, source)
    except DslError:
        raise  # a bad train block is the user's located error, not a backend difference
    except Exception as e:  # a train step that cannot be built fails the comparison
        _error_row(report, "train", backends[0], e)
        return
    multi = len(setup.groups) > 1
    ref, others = backends[0], backends[1:]
    all_runs: dict = {}
    for b in backends:
        try:
            all_runs[b] = _iterate(setup, b, seed)
        except Exception as e:
            all_runs[b] = e
    ref_runs = all_runs[ref]
    if isinstance(ref_runs, Exception):
        _error_row(report, "train", ref, ref_runs)
        return
    sens_runs = {p: _iterate(setup, ref, seed, ROUNDING[p]) for p in _precisions(backends)}
    for b in others:
        runs = all_runs[b]
        if isinstance(runs, Exception):
            _error_row(report, "train", b, runs)
            continue
        probes = [p for p in probes_for(b, backends) if not isinstance(all_runs[p], Exception)]
        first_bad = None
        for i, ((name, k, phase, _, out), (_, _, _, ref_feeds, ref_out)) in enumerate(
                zip(runs, ref_runs)):
            names = [r for r in phase.results if not r.startswith("new:")] + \
                    [r for r in phase.results if r.startswith("new:")]
            label = (lambda r, name=name: f"{name}/{r}") if multi else None
            sens = {p: sens_runs[p][i][4] for p in sens_runs}
            bad = _compare_run(report, "train", b, out, ref_out, sens,
                               [all_runs[p][i][4] for p in probes], names, step=k, label=label)
            if bad and first_bad is None:
                first_bad = (phase, ref_feeds, k)
        if first_bad is not None and locate:
            phase, ref_feeds, k = first_bad
            report.divergences.append(locate_divergence(
                phase.graph, phase.results, b, ref, ref_feeds, "train", step=k, probes=probes,
                seed=seed))


