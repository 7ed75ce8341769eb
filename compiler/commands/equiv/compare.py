"""Comparing arrays: the backends, tolerances by precision and phase, and the verdicts."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

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
    data: str = "random"               # the inputs: the train block's data set, or random

    @property
    def ok(self) -> bool:
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    def to_json(self) -> dict:
        return {"model": self.model, "ok": self.ok, "reference": REFERENCE, "seed": self.seed,
                "dim": self.dim, "steps": self.steps, "device": self.device, "data": self.data,
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
