"""`dlc equiv`: the same model, parameters and data through every backend, compared.

What runs (one seed fixes everything):

* inputs from `compiler.gradcheck.sample_inputs` (every symbolic dim set to `dim`,
  8 by default), parameters and states from ``model.init_params(seed)`` (for the
  forward and gradient phases every param gets N(0, 0.1^2) added, so that zero
  initialisations do not make comparisons vacuous), noise from the host-side
  generator (`compiler.noise`). Float data is rounded to float32 first, so every
  backend, float32 or float64, reads exactly the same numbers;
* backends: **numpy-f64** (the reference), numpy-f32, torch-f32 and torch-f64 on the
  CPU, torch-f32 on CUDA with ``--device cuda``, and onnxruntime-f32 (onnx-f32);
* phases, each on the graph after the optimisation passes (what users run):
  ``forward``: every output, loss and metric of the evaluation graph;
  ``gradient``: the symbolic gradient of every loss w.r.t. every parameter
  (`Model.gradient_results`);
  ``train``: ``--steps`` iterations of the training engine's step graphs
  (`compiler.training.build_step`, every player group), each backend iterating on
  its *own* parameters, optimizer slots and states from the same start (as `dlc
  train` initialises them), over the same fixed batches (batch ``k`` drawn from seed
  ``(seed, k)``), comparing each step's loss, metrics, learning rate and every new
  param, slot and state;
  ``autograd``: ``loss.backward()`` through the PyTorch lowering of the forward graph
  (float64) vs dlc's symbolic gradients on the reference.

The criterion, elementwise, against the reference ``r``: ``|x - r| <= atol + rtol*|r|``
(NaN matches NaN, equal infinities match; integer and boolean tensors must be equal).
Base tolerances (atol, rtol) by the compared backend's precision and the phase:

=========  ============  ============  =============  ============
precision  forward       gradient      train          autograd
=========  ============  ============  =============  ============
f32        1e-5, 1e-4    1e-5, 1e-3    1e-4, 1e-3     -
f64        1e-10, 1e-10  1e-10, 1e-10  1e-10, 1e-10   1e-10, 1e-10
=========  ============  ============  =============  ============

Why: float32 rounds at 2**-24 ~ 6e-8 relative. A forward pass of these models sums
O(100) products per entry (matmuls, softmax denominators, means): the error grows
like sqrt(n)..n unit roundoffs, up to ~1e-5 relative in the worst entries, hence
rtol 1e-4 (a 10x margin), and atol 1e-5 for entries near zero, where relative error
means nothing (probabilities of 1e-7, cancelling sums). A gradient is one more pass
of the same length in reverse whose entries are batch sums of products of forward
values that already carry the forward error, with more cancellation (``softmax -
onehot``): rtol 1e-3. A training step then maps the gradient error into the
parameters through the optimizer, and the error compounds over steps: atol 1e-4.
Float64 backends compute the same expressions in double precision (2**-53 ~ 1.1e-16)
in possibly different orders and kernels: 1e-10 leaves six orders of magnitude for
that and still catches any real difference in what is computed.

Conditioning. Some values are not determined to those tolerances by the arithmetic
at all, and no backend can be asked to agree on them:

* the reference itself moves when its inputs move by one rounding error: each phase
  is also run on the reference with every float feed multiplied by ``1 + u*eps``
  (``u ~ U[-1, 1]``, ``eps`` = 2**-24 when judging float32 backends, 2**-53 for float64),
  e.g. an untrained diffusion model's 100-step sampling chain, which blows up;
* float32 rounding inside the computation is amplified: Adam divides by
  ``sqrt(v) + eps``, which turns a gradient entry that is zero up to rounding (the
  bias of an attention key projection: softmax ignores it) into an update of up to
  ``lr`` whose value is decided by the rounding noise. The other float32 backends
  show it: they spread around the reference just as much.

So a tensor's tolerance is multiplied by ``clip(4 * max(s, q), 1, 100)``, where ``s`` is
the perturbed reference's tolerance ratio (its max ``|x - r| / (atol + rtol |r|)``) and
``q`` the smallest ratio among the *other* float32 backends (float32 only: it takes
two other implementations agreeing that the tensor is that uncertain, and a single
wrong backend cannot inflate anyone's tolerance). A backend that computes something
different stands out against both: its own error does not widen its tolerance. When
``4 max(s, q)`` exceeds 100 the tensor is not determined at that precision: the
comparison is reported as ``ill-conditioned`` (with ``s`` and ``q``) and does not fail
the run (a backend that is wrong there is still caught by the tensors it does
determine, e.g. the values feeding that one). The table shows every widening
(``x4.2``); the JSON has ``tol_scale``, ``sensitivity``, ``spread``,
``ill_conditioned``.

When a comparison fails, the run locates the first divergent node: the phase's
optimised graph is lowered with *every* node as a named result ``n<id>`` on both
backends (and the probes), fed the same values (for a training step: the
reference's parameters and slots at the first failing step), and the first node in
topological order whose values differ beyond its tolerance (widened as above) is
reported with its op, its span (the user's ``file:line:col``; a node the compiler
generated, by autodiff or an optimizer, shows the span of a close ancestor or none)
and both values at the worst entry. Exit 0 iff every comparison is within tolerance
(1 otherwise; 2 when CUDA is asked for and absent). PyTorch and NumPy's OpenBLAS run
single-threaded (the tensors are small: threads only add synchronisation, and one
thread fixes the summation orders) and PyTorch,
on CUDA, without TF32 (which rounds matmul/conv inputs to 10-bit mantissas: not
float32 arithmetic) for the duration of a check.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dsl.errors import DslError

from . import backend_registry
from . import noise as noise_mod
from .gradcheck import sample_inputs
from .ir import SOURCE_OPS, Graph
from .threads import limit_cpu_threads
from .passes import optimize
from .api import to_numpy
from .types import TensorType

DEFAULT_DIM = 8
DEFAULT_STEPS = 3
REFERENCE = "numpy-f64"

# (atol, rtol) by precision and phase; see the module docstring for the reasoning.
TOLERANCES = {
    "f32": {"forward": (1e-5, 1e-4), "gradient": (1e-5, 1e-3), "train": (1e-4, 1e-3),
            "autograd": (1e-5, 1e-3)},
    "f64": {"forward": (1e-10, 1e-10), "gradient": (1e-10, 1e-10), "train": (1e-10, 1e-10),
            "autograd": (1e-10, 1e-10)},
}
# Conditioning: the tolerance is widened by FACTOR x the tolerance ratio of the
# perturbed reference (sensitivity) or of the other float32 backends (spread), at most
# MAX_SCALE x; a sensitivity beyond MAX_SCALE / FACTOR makes a tensor ill-conditioned.
FACTOR = 4.0
MAX_SCALE = 100.0
ROUNDING = {"f32": 2.0 ** -24, "f64": 2.0 ** -53}


@dataclass(frozen=True)
class Backend:
    kind: str          # numpy | torch | onnx
    dtype: str         # f32 | f64
    device: str = "cpu"

    @property
    def name(self) -> str:
        dev = "" if self.device == "cpu" else f"-{self.device}"
        return f"{self.kind}-{self.dtype}{dev}"

    @property
    def precision(self) -> str:
        return "f64" if self.dtype == "f64" else "f32"


def default_backends(device: str = "cpu") -> list[Backend]:
    """The reference first, then every backend compared with it."""
    out = [Backend("numpy", "f64"), Backend("numpy", "f32"), Backend("torch", "f32"),
           Backend("torch", "f64"), Backend("onnx", "f32")]
    if device == "cuda":
        out.append(Backend("torch", "f32", "cuda"))
    return out


@dataclass
class Comparison:
    phase: str             # forward | gradient | train | autograd
    tensor: str
    backend: str
    reference: str
    max_abs: float
    max_rel: float         # max |x - r| / max(|r|, atol)
    tol_ratio: float       # max |x - r| / (atol + rtol |r|): ok iff <= 1
    atol: float            # the tolerance applied (base x tol_scale)
    rtol: float
    ok: bool
    step: int | None = None
    shape: tuple | None = None
    error: str | None = None        # the backend failed to produce this tensor at all
    tol_scale: float = 1.0          # the base tolerance was widened by this
    sensitivity: float = 0.0        # tolerance ratio of the perturbed reference
    spread: float = 0.0             # smallest tolerance ratio of the other float32 backends
    ill_conditioned: bool = False   # the reference cannot pin it down: not judged

    @property
    def pair(self) -> str:
        return f"{self.backend} vs {self.reference}"


@dataclass
class Divergence:
    phase: str
    backend: str
    reference: str
    found: bool
    node: int | None = None
    op: str | None = None
    name: str | None = None
    span: str | None = None          # file:line:col
    span_from: int | None = None     # node whose span it is, when not the node itself
    line: str | None = None          # the user's source line
    col: int | None = None           # the span's column in it (1-based)
    max_abs: float | None = None
    max_rel: float | None = None
    index: tuple | None = None       # the worst entry
    value: float | None = None       # the compared backend's value there
    ref_value: float | None = None   # the reference's value there
    args: list = field(default_factory=list)   # the node's arguments, for context
    step: int | None = None
    nodes_compared: int = 0
    message: str = ""


@dataclass
class EquivReport:
    model: str
    seed: int
    dim: int
    steps: int
    device: str
    backends: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    def to_json(self) -> dict:
        return {"model": self.model, "ok": self.ok, "reference": REFERENCE, "seed": self.seed,
                "dim": self.dim, "steps": self.steps, "device": self.device,
                "backends": self.backends,
                "tolerances": {p: {ph: {"atol": a, "rtol": r} for ph, (a, r) in t.items()}
                               for p, t in TOLERANCES.items()},
                "conditioning": {"factor": FACTOR, "max_scale": MAX_SCALE,
                                 "rounding": ROUNDING},
                "comparisons": [_jsonable(asdict(c)) for c in self.comparisons],
                "divergences": [_jsonable(asdict(d)) for d in self.divergences],
                "skipped": self.skipped}


# ---- comparing arrays --------------------------------------------------------------------

def compare_arrays(x, ref, atol: float, rtol: float) -> tuple[float, float, float, bool, tuple | None]:
    """(max abs err, max rel err, max tolerance ratio, ok, worst index) of ``x`` vs ``ref``."""
    x = np.asarray(x)
    ref = np.asarray(ref)
    if x.shape != ref.shape:
        return math.inf, math.inf, math.inf, False, None
    if ref.dtype.kind in "biu" or (x.dtype.kind in "biu" and ref.dtype.kind not in "fc"):
        diff = x != ref
        if not diff.any():
            return 0.0, 0.0, 0.0, True, None
        idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        return math.inf, float(diff.mean()), math.inf, False, idx
    xf = x.astype(np.float64)
    rf = ref.astype(np.float64)
    if xf.size == 0:
        return 0.0, 0.0, 0.0, True, None
    same = (xf == rf) | (np.isnan(xf) & np.isnan(rf))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(same, 0.0, np.abs(xf - rf))
    err = np.where(np.isnan(err), math.inf, err)
    mag = np.abs(np.where(np.isfinite(rf), rf, 0.0))
    rel = err / np.maximum(mag, atol if atol > 0 else 1e-300)
    ratio = err / (atol + rtol * mag)
    worst = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(worst, err.shape))
    r = float(ratio.max())
    return float(err.max()), float(rel.max()), r, bool(r <= 1.0), idx


def _tol(b: Backend, phase: str) -> tuple[float, float]:
    return TOLERANCES[b.precision][phase]


def _ratio(x, ref, atol, rtol) -> float:
    if x is None:
        return 0.0
    r = compare_arrays(x, ref, atol, rtol)[2]
    return r if math.isfinite(r) else math.inf


def judge(phase: str, b: Backend, x, ref, *, sensitive=None, probes=()) -> dict:
    """Compare one tensor: the tolerance, widened for conditioning (see the docstring).

    ``sensitive`` is the reference's value on perturbed feeds, ``probes`` the other
    float32 backends' values (None where missing)."""
    atol, rtol = _tol(b, phase)
    s = _ratio(sensitive, ref, atol, rtol)
    q = min([_ratio(p, ref, atol, rtol) for p in probes if p is not None], default=0.0)
    q = q if math.isfinite(q) else 0.0   # a probe that failed outright says nothing
    ill = FACTOR * max(s, q) > MAX_SCALE
    scale = float(min(MAX_SCALE, max(1.0, FACTOR * s, FACTOR * q)))
    atol, rtol = atol * scale, rtol * scale
    mx, mr, ratio, ok, idx = compare_arrays(x, ref, atol, rtol)
    return dict(max_abs=mx, max_rel=mr, tol_ratio=ratio, atol=atol, rtol=rtol,
                ok=bool(ok or ill), tol_scale=scale, sensitivity=s, spread=q,
                ill_conditioned=bool(ill), index=idx)


# ---- running a graph on a backend ----------------------------------------------------------

def lower_on(b: Backend, g: Graph, results: dict[str, int]):
    """Lower ``results`` of an (already optimised) graph on one backend."""
    mod = backend_registry.load(b.kind)
    if b.kind == "torch":
        return mod.lower(g, results, dtype=b.dtype, device=b.device)
    if b.kind == "onnx":
        return mod.lower_program(g, results, dtype=b.dtype)
    return mod.lower(g, results, dtype=b.dtype)


def run_on(b: Backend, prog, feeds: dict) -> dict[str, np.ndarray]:
    ctx = contextlib.nullcontext()
    if b.kind == "torch":
        import torch
        ctx = torch.no_grad()
    with ctx:
        return to_numpy(prog(feeds))


def perturb(feeds: dict, eps: float, seed: int) -> dict:
    """Every float feed (except the step counter) times ``1 + u*eps``, u ~ U[-1, 1]."""
    rng = np.random.default_rng([seed, 31337])
    out = {}
    for k in sorted(feeds):
        a = np.asarray(feeds[k])
        if a.dtype.kind == "f" and k != "step":
            a = a.astype(np.float64) * (1.0 + eps * rng.uniform(-1.0, 1.0, a.shape))
        out[k] = a
    return out


@contextlib.contextmanager
def _exact_cuda():
    """No TF32 while comparing: it is not float32 arithmetic."""
    import torch
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


def _sample_data(model, seed: int, dim: int, stream: int | None = None) -> dict:
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


def _forward_and_gradients(model, report, backends, seed, dim, locate):
    """Forward and gradient phases; returns the feeds and the reference's gradients."""
    data = _sample_data(model, seed, dim)
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


def _train_setup(model, seed: int, dim: int, steps: int) -> _TrainSetup:
    """The training engine's step graphs (one per player group), their initial values
    as `dlc train` starts them, and fixed batches. Raises when there is no train step."""
    from . import training
    from .train_spec import model_for, parse_train
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
    batches = [{n: v for n, v in _sample_data(m, seed, dim, stream=k).items() if n in data_names}
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


def _train(model, report, backends, seed, dim, steps, locate):
    from .train_spec import find_train
    try:
        find_train(model.program, model.name)
    except DslError:  # nothing to train: the only reason this phase may be skipped
        report.skipped.append({"phase": "train", "reason": "no train block for this model"})
        return
    try:
        setup = _train_setup(model, seed, dim, steps)
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


# ---- locating the first divergent node --------------------------------------------------------

SPAN_SEARCH_DEPTH = 3


def _span_of(g: Graph, n: int):
    """The node's span, or the span of the nearest ancestor (breadth-first over the
    arguments, at most SPAN_SEARCH_DEPTH levels, constants skipped) that has one: nodes
    built by autodiff or the optimizer carry no span of their own."""
    node = g.node(n)
    if node.span is not None:
        return node.span, None
    seen, frontier = {n}, list(node.args)
    for _ in range(SPAN_SEARCH_DEPTH):
        nxt = []
        for a in frontier:
            if a in seen:
                continue
            seen.add(a)
            an = g.node(a)
            if an.span is not None and an.op != "const":
                return an.span, a
            nxt.extend(an.args)
        frontier = nxt
    return None, None


def _fmt_span(span) -> str | None:
    if span is None:
        return None
    return f"{span.path}:{span.line}:{span.col}"


def locate_divergence(g: Graph, results: dict[str, int], b: Backend, ref: Backend, feeds: dict,
                      phase: str, step: int | None = None, probes=(), seed: int = 0) -> Divergence:
    """The first node (topological order) whose values on ``b`` and ``ref`` differ beyond
    its tolerance (widened for conditioning as for results), with every node of ``g``
    that ``results`` need evaluated on identical feeds."""
    order = [n for n in g.topo_order(list(results.values()))
             if g.node(n).op not in SOURCE_OPS and isinstance(g.type(n), TensorType)]
    every = {f"n{n}": n for n in order}
    div = Divergence(phase, b.name, ref.name, False, step=step, nodes_compared=len(order))
    try:
        ref_prog = lower_on(ref, g, every)
        ref_vals = run_on(ref, ref_prog, feeds)
        sens_vals = run_on(ref, ref_prog, perturb(feeds, ROUNDING[b.precision], seed))
        vals = run_on(b, lower_on(b, g, every), feeds)
        probe_vals = [run_on(p, lower_on(p, g, every), feeds) for p in probes]
    except Exception as e:
        div.message = f"could not evaluate every node: {type(e).__name__}: {e}"
        return div
    for n in order:
        k = f"n{n}"
        if k not in vals or k not in ref_vals:
            continue
        j = judge(phase, b, vals[k], ref_vals[k], sensitive=sens_vals.get(k),
                  probes=[p.get(k) for p in probe_vals])
        if j["ok"]:
            continue
        node = g.node(n)
        span, via = _span_of(g, n)
        x, r = np.asarray(vals[k]), np.asarray(ref_vals[k])
        div.found = True
        div.node, div.op, div.name = n, node.op, node.name
        div.span, div.span_from = _fmt_span(span), via
        if span is not None and span.source is not None:
            div.line = span.source.line(span.line)
            div.col = span.col
        div.max_abs, div.max_rel, div.index = j["max_abs"], j["max_rel"], j["index"]
        if div.index is not None and x.shape == r.shape:
            div.value, div.ref_value = _scalar(x[div.index]), _scalar(r[div.index])
        div.args = [f"%{a} {g.node(a).op}" for a in node.args]
        if div.span is None:
            where = "a node the compiler generated (autodiff or optimizer; no source span)"
        elif via is not None:
            where = f"{div.span} (generated from %{via} `{g.node(via).op}` there)"
        else:
            where = div.span
        div.message = (f"first divergent node %{n} `{node.op}` at {where}: max abs err "
                       f"{j['max_abs']:.3e}, max rel err {j['max_rel']:.3e} "
                       f"(atol {j['atol']:.3g}, rtol {j['rtol']:.3g})")
        return div
    div.message = ("no single node differs beyond tolerance on identical inputs: the "
                   "difference accumulates" + (" over steps" if phase == "train" else "")
                   + " (or comes from a result's final conversion)")
    return div


def _scalar(v):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()


# ---- the command ---------------------------------------------------------------------------

def equiv(model, *, steps: int = DEFAULT_STEPS, device: str = "cpu", seed: int = 0,
          dim: int = DEFAULT_DIM, backends: list[Backend] | None = None, locate: bool = True,
          autograd: bool = True, train: bool = True) -> EquivReport:
    """Run every comparison; the report's ``ok`` says whether all were within tolerance.

    ``backends[0]`` is the reference (default: `default_backends`)."""
    backends = list(backends or default_backends(device))
    report = EquivReport(model.name, seed, dim, steps, device, [b.name for b in backends])
    ctx = _exact_cuda() if any(b.device == "cuda" for b in backends) else contextlib.nullcontext()
    with ctx, limit_cpu_threads(1, torch=any(b.kind == "torch" for b in backends)):
        feeds, ref_grads = _forward_and_gradients(model, report, backends, seed, dim, locate)
        if autograd and model.losses:
            _autograd(model, report, feeds, ref_grads, "cpu")
        if train and steps > 0:
            _train(model, report, backends, seed, dim, steps, locate)
    return report


def _usage_error():
    """The CLI's UsageError class (exit 2), also when the CLI runs as ``python -m
    compiler.cli``, where its module is ``__main__`` rather than ``compiler.cli``."""
    import sys
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "UsageError") and hasattr(main, "cmd_equiv"):
        return main.UsageError
    from .cli import UsageError
    return UsageError


def run_equiv(model, args) -> tuple[int, dict]:
    """`dlc equiv`: (exit code, JSON payload); prints the table unless ``--json``."""
    UsageError = _usage_error()
    device = getattr(args, "device", "cpu") or "cpu"
    if device == "cuda":
        try:
            import torch
            available = torch.cuda.is_available()
        except ImportError:
            available = False
        if not available:
            raise UsageError("dlc equiv: --device cuda asked for, but PyTorch sees no CUDA "
                             "device on this machine (use --device cpu)")
    steps = getattr(args, "steps", None)
    steps = DEFAULT_STEPS if steps is None else steps
    if steps < 0:
        raise UsageError("dlc equiv: --steps must be >= 0")
    report = equiv(model, steps=steps, device=device, seed=getattr(args, "seed", 0) or 0,
                   dim=getattr(args, "dim", None) or DEFAULT_DIM)
    if not getattr(args, "json", False):
        print(render(report))
    return (0 if report.ok else 1), report.to_json()


# ---- the table -------------------------------------------------------------------------------

def render(report: EquivReport) -> str:
    lines = [f"equiv {report.model}: reference {REFERENCE}, seed {report.seed}, dims={report.dim}, "
             f"{report.steps} train step(s); backends: {', '.join(report.backends[1:])}"]
    rows = []
    for c, steps in _merge_steps(report.comparisons):
        tensor = c.tensor if not steps else (
            f"step {steps[0]}: {c.tensor}" if len(steps) == 1 else
            f"steps {steps[0]}-{steps[-1]}: {c.tensor}")
        if c.error:
            tol, verdict = "-", "ERROR"
        elif c.ill_conditioned:
            tol = f"n/a (sensitivity {c.sensitivity:.3g}, spread {c.spread:.3g})"
            verdict = "ill-conditioned"
        else:
            tol = f"{c.atol:.3g}+{c.rtol:.3g}|r|" + (f" (x{c.tol_scale:.3g})"
                                                    if c.tol_scale > 1 else "")
            verdict = "ok" if c.ok else "FAIL"
        rows.append((c.phase, tensor, c.pair, "-" if c.error else f"{c.max_abs:.2e}",
                     "-" if c.error else f"{c.max_rel:.2e}", tol, verdict))
    head = ("phase", "tensor", "backend pair", "max abs err", "max rel err", "tolerance", "ok")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" if i < 3 or i == 6 else f"{{:>{w}}}"
                           for i, w in enumerate(widths))
    lines.append(fmt.format(*head).rstrip())
    for r in rows:
        lines.append(fmt.format(*r).rstrip())
    for c in report.comparisons:
        if c.error:
            lines.append(f"error: {c.phase} on {c.backend}: {c.error}")
    for s in report.skipped:
        lines.append(f"skipped {s['phase']}: {s['reason']}")
    if any(c.ill_conditioned for c in report.comparisons):
        lines.append("ill-conditioned: the reference moves by more than "
                     f"{MAX_SCALE / FACTOR:g}x the tolerance when its inputs move by one "
                     "rounding error (sensitivity), or the other float32 backends are that far "
                     "from it (spread); such tensors are not judged and do not fail the run")
    for d in report.divergences:
        where = f" at step {d.step}" if d.step else ""
        lines.append(f"divergence in {d.phase}{where}, {d.backend} vs {d.reference} "
                     f"({d.nodes_compared} nodes compared): {d.message}")
        if d.found:
            if d.line is not None:
                lines.append(f"    {d.line}")
                if d.col:
                    lines.append("    " + " " * (d.col - 1) + "^")
            if d.index is not None:
                lines.append(f"    worst entry {list(d.index)}: {d.value!r} ({d.backend}) vs "
                             f"{d.ref_value!r} ({d.reference}); args: {', '.join(d.args)}")
    n_bad = len(report.failures())
    lines.append("all backends agree" if report.ok else
                 f"{n_bad} of {len(report.comparisons)} comparisons out of tolerance")
    return "\n".join(lines)


def _merge_steps(comparisons):
    """Training rows of one tensor and backend pair merged over steps (the worst of
    each figure); the JSON payload keeps every step."""
    out, index = [], {}
    for c in comparisons:
        if c.step is None or c.error:
            out.append([c, []])
            continue
        key = (c.phase, c.tensor, c.backend, c.reference)
        if key not in index:
            index[key] = len(out)
            out.append([Comparison(**asdict(c)), [c.step]])
            continue
        m, steps = out[index[key]]
        steps.append(c.step)
        m.max_abs, m.max_rel = max(m.max_abs, c.max_abs), max(m.max_rel, c.max_rel)
        m.tol_ratio, m.ok = max(m.tol_ratio, c.tol_ratio), m.ok and c.ok
        m.ill_conditioned = m.ill_conditioned or c.ill_conditioned
        m.sensitivity, m.spread = max(m.sensitivity, c.sensitivity), max(m.spread, c.spread)
        if c.tol_scale > m.tol_scale:
            m.tol_scale, m.atol, m.rtol = c.tol_scale, c.atol, c.rtol
    return [(c, sorted(s)) for c, s in out]


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, np.generic):
        return _jsonable(o.item())
    return o


__all__ = ["equiv", "run_equiv", "render", "compare_arrays", "judge", "locate_divergence",
           "perturb", "Backend", "default_backends", "TOLERANCES", "FACTOR", "MAX_SCALE",
           "ROUNDING", "Comparison", "Divergence", "EquivReport"]
