"""Optimizers and regularizers, compiled into the train-step graph.

An optimizer turns ``(param, gradient, slots, step, lr)`` nodes into the nodes of the
next parameter value and the next slot values, using only primitives, so a lowered
train step (NumPy, torch, or an exported ONNX model) carries the whole update.

    opt = make_optimizer("adam", {"lr": 1e-3})
    opt.slots("dense0.W", t)            # [("m", 0.0), ("v", 0.0)]: per-param state, param-shaped
    new_p, new_slots = opt.update(g, p, grad, {"m": m, "v": v}, step, lr,
                                  decay_mask=decays("dense0.W", t))

``step`` is an f32 scalar node holding the 0-based step count ``t`` (bias corrections
use ``t + 1``); ``lr`` is an f32 scalar node: the learning rate of this step, after
the schedule (`compiler.schedules`). ``opt.hyper["lr"]`` is the base learning rate.

Optimizers (the formulas are torch.optim's where torch has the optimizer, checked
against it in tests/test_optim.py):

| name | options | update |
| --- | --- | --- |
| ``sgd`` | ``lr=0.01, momentum=0, nesterov=false, dampening=0`` | torch ``SGD``: ``b = mu b + (1-dampening) g`` (``b = g`` at t = 0), ``d = g + mu b`` if nesterov else ``b`` (``g`` without momentum); ``p -= lr d`` |
| ``momentum`` | ``lr=0.01, beta=0.9`` | heavy ball, the notes' ``p' = p - lr g + beta (p - p_prev)``; slot ``v = p - p_prev``. Equals torch ``SGD(momentum=beta)`` while lr is constant |
| ``nesterov`` | ``lr=0.01, momentum=0.9`` | torch ``SGD(momentum, nesterov=True)`` |
| ``adagrad`` | ``lr=0.01, eps=1e-10, initial_accumulator=0`` | ``s += g^2; p -= lr g / (sqrt(s) + eps)`` |
| ``rmsprop`` | ``lr=0.01, alpha=0.99, eps=1e-8, momentum=0, centered=false`` | torch ``RMSprop`` |
| ``adam`` | ``lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=false`` | torch ``Adam`` |
| ``adamw`` | as adam, ``weight_decay=0.01`` | torch ``AdamW``: ``p *= 1 - lr wd`` (decoupled) then Adam |
| ``signsgd`` | ``lr=1e-3, momentum=0`` | ``p -= lr sign(g)``; with momentum (signum) ``m = beta m + (1-beta) g; p -= lr sign(m)`` |
| ``muon`` | ``lr=0.02, momentum=0.95, nesterov=true, ns_steps=5, exact=false`` | see `Muon` |
| ``svrg`` | ``lr=0.01`` | ``p -= lr (g - g_snap + mu)``; see `Svrg` |

Every optimizer also takes ``weight_decay`` (default 0; AdamW 0.01) and ``l1``
(default 0). They apply only to parameters with ``decay_mask=True`` (see `decays`:
weights, not biases). Weight decay is L2 added to the gradient (``g + wd p``, torch's
``weight_decay``), except for AdamW where it is decoupled; L1 adds ``l1 sign(p)`` to the
gradient. A training engine that has a separate ``weight_decay`` option passes it in
the optimizer's kwargs (so AdamW decouples it) and must then not also call
`apply_weight_decay` / `apply_l1` itself.

Other helpers: `clip_by_global_norm` (torch ``clip_grad_norm_``), `polyak_update`
(averaged iterates), `svrg_direction` and `snapshot_gradients` (SVRG).
"""
from __future__ import annotations

import math

from compiler.core.ir import Graph
from compiler.training.options import REQUIRED, check_names, lookup, signature as _signature
from compiler.core.types import TensorType

__all__ = ["OPTIMIZERS", "Optimizer", "make_optimizer", "decays", "apply_weight_decay",
           "apply_l1", "clip_by_global_norm", "global_norm", "polyak_update", "svrg_direction",
           "snapshot_gradients", "newton_schulz5", "orthogonalize_exact", "SGD", "Momentum", "Nesterov", "Adagrad",
           "RMSprop", "Adam", "AdamW", "SignSGD", "Muon", "Svrg"]



# ---- graph helpers ----------------------------------------------------------------------

def _k(g: Graph, v: float, like: int) -> int:
    """A scalar constant of `like`'s dtype."""
    return g.scalar_like(float(v), like)


def _lerp(g: Graph, a: int, b: int, w: float) -> int:
    """``a + w (b - a)`` written as torch's lerp is used: ``w a' = (1-w) a + w b``."""
    return g.op("add", g.op("mul", a, _k(g, 1.0 - w, a)), g.op("mul", b, _k(g, w, b)))


def _scale(g: Graph, x: int, v: float) -> int:
    return g.op("mul", x, _k(g, v, x))


def _like(g: Graph, s: int, p: int) -> int:
    """A scalar node (step, lr) cast to the dtype of `p` where they differ."""
    if g.type(s).dtype != g.type(p).dtype:
        return g.op("cast", s, dtype=g.type(p).dtype)
    return s


def _sub_lr(g: Graph, p: int, lr: int, d: int) -> int:
    """``p - lr * d``."""
    return g.op("sub", p, g.op("mul", _like(g, lr, p), d))


# ---- regularizers ------------------------------------------------------------------------

def decays(name: str, t: TensorType) -> bool:
    """Whether weight decay / L1 apply to a parameter: weights, not biases.

    The notes: "only penalize weights, not biases". A weight is a parameter of rank
    >= 2 (dense and conv kernels, embeddings); vectors (biases, norm scales and
    shifts) and scalars are left alone.
    """
    return len(t.shape) >= 2


def apply_weight_decay(g: Graph, p: int, grad: int, weight_decay: float) -> int:
    """L2 regularization as a gradient term: ``grad + weight_decay * p``.

    (The gradient of ``weight_decay/2 * ||p||^2``; torch's optimizer ``weight_decay``.)
    """
    if not weight_decay:
        return grad
    return g.op("add", grad, _scale(g, p, weight_decay))


def apply_l1(g: Graph, p: int, grad: int, l1: float) -> int:
    """L1 regularization as a gradient term: ``grad + l1 * sign(p)`` (a subgradient)."""
    if not l1:
        return grad
    return g.op("add", grad, _scale(g, g.op("sign", p), l1))


def global_norm(g: Graph, xs: list[int]) -> int:
    """``sqrt(sum_i ||x_i||^2)`` over all tensors, a scalar node."""
    total = None
    for x in xs:
        s = g.op("sum", g.op("mul", x, x), axis=None, keepdims=False)
        total = s if total is None else g.op("add", total, s)
    return g.op("sqrt", total)


def clip_by_global_norm(g: Graph, grads: list[int], max_norm: float) -> list[int]:
    """Scale all gradients by ``min(1, max_norm / (norm + 1e-6))``, norm the global L2
    norm: torch's ``clip_grad_norm_`` (same epsilon)."""
    if not grads:
        return []
    norm = global_norm(g, grads)
    coef = g.op("div", _k(g, max_norm, norm), g.op("add", norm, _k(g, 1e-6, norm)))
    coef = g.op("minimum", coef, _k(g, 1.0, coef))
    return [g.op("mul", x, _like(g, coef, x)) for x in grads]


def polyak_update(g: Graph, avg: int, new_p: int, decay: float | None, *, step: int | None = None) -> int:
    """The next averaged iterate (Polyak–Ruppert averaging).

    * ``decay`` a float: exponential moving average ``decay * avg + (1 - decay) * new_p``
      (``avg`` starts at the initial parameter value);
    * ``decay=None``: the uniform running mean of the iterates after each step,
      ``avg + (new_p - avg) / (t + 1)`` with ``step`` the 0-based step node ``t`` (so
      after step t, ``avg`` is the mean of p_1 .. p_{t+1}; its initial value is unused).

    The engine keeps the averages as extra state and evaluates with them.
    """
    if decay is None:
        if step is None:
            raise ValueError("uniform Polyak averaging (decay=None) needs the step node")
        t1 = g.op("add", _like(g, step, avg), _k(g, 1.0, avg))
        return g.op("add", avg, g.op("div", g.op("sub", new_p, avg), t1))
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"Polyak averaging decay must be in [0, 1), got {decay}")
    return _lerp(g, avg, new_p, 1.0 - decay)


def svrg_direction(g: Graph, grad: int, g_snap: int, mu: int) -> int:
    """SVRG's variance-reduced gradient ``grad - g_snap + mu`` (Johnson & Zhang 2013).

    ``grad`` is the minibatch gradient at the current parameters, ``g_snap`` the
    gradient *on the same minibatch* at the snapshot parameters, ``mu`` the full-batch
    gradient at the snapshot. How an engine computes them:

    * ``g_snap``: the same loss graph differentiated with the params replaced by the
      snapshot values; `snapshot_gradients` builds that inside the train-step graph
      (snapshot params become inputs), or the engine evaluates its ordinary gradient
      program on (batch, snapshot params) and feeds the result;
    * ``mu``: at the start of every epoch the engine sets snapshot := current params and
      averages the gradient program's output over the whole training set (full batch,
      or the mean of per-batch gradients weighted by batch size), then feeds ``mu`` and
      the snapshot unchanged for the rest of the epoch.
    """
    return g.op("add", g.op("sub", grad, g_snap), mu)


def snapshot_gradients(g: Graph, loss: int, params: list[int], *, prefix: str = "snapshot:"):
    """Gradients of ``loss`` at snapshot parameters, built into ``g`` (for SVRG).

    The part of the graph that depends on ``params`` is cloned with each param
    replaced by a new ``input`` named ``prefix + param name`` (same type); data inputs,
    noise and states are shared with the original. Returns ``(snapshot input ids,
    gradient ids)`` in the order of ``params``.
    """
    from compiler.transform.autodiff import grad as _grad

    repl = {}
    for p in params:
        a = g.node(p).attrs
        repl[p] = g.add("input", (), {"name": prefix + a["name"], "dtype": a["dtype"],
                                      "shape": tuple(a["shape"])})
    m = dict(repl)
    for n in g.topo_order([loss]):
        if n in m:
            continue
        node = g.node(n)
        if not any(a in m for a in node.args):
            continue
        m[n] = g.add(node.op, [m.get(a, a) for a in node.args], dict(node.attrs), span=node.span,
                     type=node.type)
    snap_loss = m.get(loss, loss)
    snaps = [repl[p] for p in params]
    return snaps, _grad(g, snap_loss, snaps)


# ---- Newton–Schulz orthogonalization (Muon) ------------------------------------------------

NS5_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(g: Graph, x: int, steps: int = 5) -> int:
    """The quintic Newton–Schulz iteration of Muon on a 2-D node: approximately
    ``U V^T`` for ``x = U S V^T`` (singular values pushed into about [0.7, 1.2]).

    ``X = x / (||x||_F + 1e-7)`` (transposed first when rows > cols), then ``steps``
    times ``A = X X^T; B = b A + c A A; X = a X + B X`` with
    ``(a, b, c) = (3.4445, -4.7750, 2.0315)``; transposed back.
    """
    a, b, c = NS5_COEFFS
    rows, cols = g.type(x).shape
    tall = isinstance(rows, int) and isinstance(cols, int) and rows > cols
    if tall:
        x = g.op("transpose", x, perm=(1, 0))
    norm = g.op("sqrt", g.op("sum", g.op("mul", x, x), axis=None, keepdims=False))
    X = g.op("div", x, g.op("add", norm, _k(g, 1e-7, norm)))
    for _ in range(steps):
        A = g.op("matmul", X, g.op("transpose", X, perm=(1, 0)))
        B = g.op("add", _scale(g, A, b), _scale(g, g.op("matmul", A, A), c))
        X = g.op("add", _scale(g, X, a), g.op("matmul", B, X))
    if tall:
        X = g.op("transpose", X, perm=(1, 0))
    return X


def orthogonalize_exact(g: Graph, x: int) -> int:
    """The notes' exact Muon direction (3.4): ``U V^T`` for ``x = U S V^T`` (reduced SVD)."""
    t = g.op("svd", x)
    return g.op("matmul", g.op("tuple_get", t, index=0), g.op("tuple_get", t, index=2))


# ---- the optimizers -----------------------------------------------------------------------

class Optimizer:
    """Base class. ``options`` maps each option to its default (`REQUIRED`: no default);
    ``hyper`` holds the resolved values (always ``lr``, ``weight_decay``, ``l1``).
    """

    name = "optimizer"
    options: dict = {}
    # every optimizer accepts these on top of its own options
    common = {"weight_decay": 0.0, "l1": 0.0}
    decoupled_decay = False

    def __init__(self, **hyper):
        self.hyper = hyper
        self.validate()

    def __getattr__(self, k):
        try:
            return self.__dict__["hyper"][k]
        except KeyError:
            raise AttributeError(k) from None

    def validate(self) -> None:
        pass

    def slots(self, name: str, t: TensorType) -> list[tuple[str, float]]:
        """Per-parameter state: ``(slot name, initial fill value)``, each shaped like the param."""
        return []

    def inputs(self, name: str, t: TensorType) -> list[str]:
        """Extra per-parameter values the engine feeds each step (param-shaped), passed to
        `update` in ``slots`` under these names but not returned: SVRG's ``g_snap``, ``mu``."""
        return []

    def regularized_grad(self, g: Graph, p: int, grad: int, *, decay_mask: bool) -> int:
        """The gradient plus the L1 and (coupled) L2 terms for a decayed parameter."""
        if not decay_mask:
            return grad
        grad = apply_l1(g, p, grad, self.hyper.get("l1", 0.0))
        if not self.decoupled_decay:
            grad = apply_weight_decay(g, p, grad, self.hyper.get("weight_decay", 0.0))
        return grad

    def update(self, g: Graph, p: int, grad: int, slots: dict[str, int], step: int, lr: int, *,
               decay_mask: bool) -> tuple[int, dict[str, int]]:
        grad = self.regularized_grad(g, p, grad, decay_mask=decay_mask)
        return self.direction_update(g, p, grad, slots, _like(g, step, p), _like(g, lr, p))

    def direction_update(self, g, p, grad, slots, step, lr):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.hyper.items())})"


class SGD(Optimizer):
    """torch.optim.SGD: ``b = mu b + (1 - dampening) g`` (``b = g`` at the first step),
    ``d = g + mu b`` (nesterov) or ``b``; ``p -= lr d``. Without momentum ``p -= lr g``."""

    name = "sgd"
    options = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "dampening": 0.0}

    def validate(self):
        _unit(self, "momentum")
        _unit(self, "dampening", closed=True)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("optimizer sgd: nesterov needs momentum > 0 and dampening = 0")

    def slots(self, name, t):
        return [("buf", 0.0)] if self.momentum else []

    def direction_update(self, g, p, grad, slots, step, lr):
        if not self.momentum:
            return _sub_lr(g, p, lr, grad), {}
        mu, damp = self.momentum, self.dampening
        buf = g.op("add", _scale(g, slots["buf"], mu), _scale(g, grad, 1.0 - damp))
        if damp:  # torch starts the buffer at g, undamped
            buf = g.op("where", g.op("eq", step, _k(g, 0.0, step)), grad, buf)
        d = g.op("add", grad, _scale(g, buf, mu)) if self.nesterov else buf
        return _sub_lr(g, p, lr, d), {"buf": buf}


class Momentum(Optimizer):
    """Heavy-ball momentum (Polyak 1964), the notes' ``p' = p - lr g + beta (p - p_prev)``.

    The slot ``v`` holds the last displacement ``p - p_prev`` (0 at the start):
    ``v' = beta v - lr g; p' = p + v'``. With a constant lr this is torch's
    ``SGD(momentum=beta)`` (``v = -lr b``); under a schedule past displacements keep
    the learning rate they were taken with.
    """

    name = "momentum"
    options = {"lr": 0.01, "beta": 0.9}

    def validate(self):
        _unit(self, "beta")

    def slots(self, name, t):
        return [("v", 0.0)]

    def direction_update(self, g, p, grad, slots, step, lr):
        v = g.op("sub", _scale(g, slots["v"], self.beta), g.op("mul", lr, grad))
        return g.op("add", p, v), {"v": v}


class Nesterov(SGD):
    """Nesterov momentum, torch's ``SGD(momentum, nesterov=True)``:
    ``b = mu b + g; p -= lr (g + mu b)``."""

    name = "nesterov"
    options = {"lr": 0.01, "momentum": 0.9}

    def validate(self):
        _unit(self, "momentum")
        if self.momentum <= 0:
            raise ValueError("optimizer nesterov: momentum must be > 0")

    @property
    def nesterov(self):
        return True

    @property
    def dampening(self):
        return 0.0


class Adagrad(Optimizer):
    """torch.optim.Adagrad (no lr_decay): ``s += g^2; p -= lr g / (sqrt(s) + eps)``."""

    name = "adagrad"
    options = {"lr": 0.01, "eps": 1e-10, "initial_accumulator": 0.0}

    def validate(self):
        _nonneg(self, "eps")
        _nonneg(self, "initial_accumulator")

    def slots(self, name, t):
        return [("sum", self.initial_accumulator)]

    def direction_update(self, g, p, grad, slots, step, lr):
        s = g.op("add", slots["sum"], g.op("mul", grad, grad))
        d = g.op("div", grad, g.op("add", g.op("sqrt", s), _k(g, self.eps, s)))
        return _sub_lr(g, p, lr, d), {"sum": s}


class RMSprop(Optimizer):
    """torch.optim.RMSprop: ``v = alpha v + (1-alpha) g^2``; centered: ``m = alpha m +
    (1-alpha) g`` and ``v - m^2`` replaces ``v``; ``a = sqrt(v) + eps``; with momentum
    ``b = mu b + g / a; p -= lr b``, else ``p -= lr g / a``."""

    name = "rmsprop"
    options = {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False}

    def validate(self):
        _unit(self, "alpha", closed=True)
        _nonneg(self, "eps")
        _unit(self, "momentum")

    def slots(self, name, t):
        s = [("sq", 0.0)]
        if self.centered:
            s.append(("g_avg", 0.0))
        if self.momentum:
            s.append(("buf", 0.0))
        return s

    def direction_update(self, g, p, grad, slots, step, lr):
        new = {}
        sq = _lerp(g, slots["sq"], g.op("mul", grad, grad), 1.0 - self.alpha)
        new["sq"] = sq
        if self.centered:
            ga = _lerp(g, slots["g_avg"], grad, 1.0 - self.alpha)
            new["g_avg"] = ga
            sq = g.op("sub", sq, g.op("mul", ga, ga))
        avg = g.op("add", g.op("sqrt", sq), _k(g, self.eps, sq))
        d = g.op("div", grad, avg)
        if self.momentum:
            d = g.op("add", _scale(g, slots["buf"], self.momentum), d)
            new["buf"] = d
        return _sub_lr(g, p, lr, d), new


class Adam(Optimizer):
    """torch.optim.Adam: ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2``; with
    ``k = t + 1``: ``p -= lr/(1-b1^k) * m / (sqrt(v)/sqrt(1-b2^k) + eps)``; amsgrad
    uses ``v_max = max(v_max, v)`` in place of ``v``."""

    name = "adam"
    options = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False}

    def validate(self):
        _unit(self, "beta1")
        _unit(self, "beta2")
        _nonneg(self, "eps")

    def slots(self, name, t):
        return [("m", 0.0), ("v", 0.0)] + ([("v_max", 0.0)] if self.amsgrad else [])

    def direction_update(self, g, p, grad, slots, step, lr):
        b1, b2 = self.beta1, self.beta2
        m = g.op("lerp", slots["m"], grad, w=1.0 - b1)  # composites: fused where a backend can
        v = g.op("lerp", slots["v"], g.op("mul", grad, grad), w=1.0 - b2)
        new = {"m": m, "v": v}
        if self.amsgrad:
            v = g.op("maximum", slots["v_max"], v)
            new["v_max"] = v
        bc2, step_size = self._step_scalars(g, step, lr)
        return g.op("adam_param", p, m, v, step_size, bc2, eps=float(self.eps)), new

    def _step_scalars(self, g, step, lr):
        """``sqrt(1 - b2^k)`` and ``lr / (1 - b1^k)``: the same for every parameter, so
        built once per graph and (step, lr) node rather than once per parameter."""
        memo = self.__dict__.setdefault("_scalars", {})
        hit = memo.get((id(g), step, lr))
        if hit is not None and hit[0] is g:
            return hit[1]
        b1, b2 = self.beta1, self.beta2
        k = g.op("add", step, _k(g, 1.0, step))
        bc1 = g.op("sub", _k(g, 1.0, k), g.op("pow", _k(g, b1, k), k))
        bc2 = g.op("sqrt", g.op("sub", _k(g, 1.0, k), g.op("pow", _k(g, b2, k), k)))
        out = (bc2, g.op("div", lr, bc1))
        memo[(id(g), step, lr)] = (g, out)
        return out


class AdamW(Adam):
    """torch.optim.AdamW: ``p *= 1 - lr wd`` (decayed params only), then the Adam step."""

    name = "adamw"
    options = {**Adam.options, "weight_decay": 0.01}
    decoupled_decay = True

    def update(self, g, p, grad, slots, step, lr, *, decay_mask):
        wd = self.weight_decay
        if decay_mask and wd:
            lr_p = _like(g, lr, p)
            p = g.op("mul", p, g.op("sub", _k(g, 1.0, lr_p), _scale(g, lr_p, wd)))
        return super().update(g, p, grad, slots, step, lr, decay_mask=decay_mask)


class SignSGD(Optimizer):
    """signSGD ``p -= lr sign(g)``; with ``momentum = beta > 0`` signum (Bernstein et al.
    2018): ``m = beta m + (1 - beta) g; p -= lr sign(m)``."""

    name = "signsgd"
    options = {"lr": 1e-3, "momentum": 0.0}

    def validate(self):
        _unit(self, "momentum")

    def slots(self, name, t):
        return [("m", 0.0)] if self.momentum else []

    def direction_update(self, g, p, grad, slots, step, lr):
        if not self.momentum:
            return _sub_lr(g, p, lr, g.op("sign", grad)), {}
        m = _lerp(g, slots["m"], grad, 1.0 - self.momentum)
        return _sub_lr(g, p, lr, g.op("sign", m)), {"m": m}


class Muon(Optimizer):
    """Muon (Jordan et al. 2024): momentum ``b = mu b + g``; direction ``u = g + mu b``
    (nesterov) or ``b``; for a matrix parameter ``u`` is orthogonalized by `newton_schulz5`
    and scaled by ``sqrt(max(1, rows/cols))``; ``p -= lr u``. With ``exact=true`` the
    direction is the exact ``U V^T`` of the SVD (`orthogonalize_exact`) instead.

    Parameters of rank > 2 (conv kernels ``[O, C, *K]``) are orthogonalized as the
    ``[O, C*prod(K)]`` matrix, as in Jordan's reference. Parameters of rank < 2 (biases,
    norm scales) and ones with symbolic dims fall back to momentum SGD with the same
    momentum and nesterov setting: ``p -= lr u`` without orthogonalization. (The usual
    recipe trains those with AdamW instead; a spec can choose a separate optimizer.)
    """

    name = "muon"
    options = {"lr": 0.02, "momentum": 0.95, "nesterov": True, "ns_steps": 5, "exact": False}

    def validate(self):
        _unit(self, "momentum")
        ns = self.ns_steps
        if isinstance(ns, float) and ns == int(ns):
            self.hyper["ns_steps"] = ns = int(ns)
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 1:
            raise ValueError(f"optimizer muon: option `ns_steps` must be a positive integer, got {ns!r}")

    def slots(self, name, t):
        return [("buf", 0.0)]

    @staticmethod
    def orthogonalized(t: TensorType) -> bool:
        return len(t.shape) >= 2 and all(isinstance(d, int) for d in t.shape)

    def direction_update(self, g, p, grad, slots, step, lr):
        mu = self.momentum
        buf = g.op("add", _scale(g, slots["buf"], mu), grad)
        u = g.op("add", grad, _scale(g, buf, mu)) if self.nesterov else buf
        t = g.type(p)
        if self.orthogonalized(t):
            shape = tuple(t.shape)
            rows, cols = shape[0], math.prod(shape[1:])
            x = u if len(shape) == 2 else g.op("reshape", u, shape=(rows, cols))
            x = orthogonalize_exact(g, x) if self.exact else newton_schulz5(g, x, self.ns_steps)
            x = _scale(g, x, max(1.0, rows / cols) ** 0.5)
            u = x if len(shape) == 2 else g.op("reshape", x, shape=shape)
        return _sub_lr(g, p, lr, u), {"buf": buf}


class Svrg(Optimizer):
    """SVRG (Johnson & Zhang 2013): ``p -= lr (g - g_snap + mu)``.

    The train step receives per parameter two extra inputs (`inputs`): ``g_snap``, the
    gradient on the current batch at the snapshot parameters, and ``mu``, the full
    gradient at the snapshot; see `svrg_direction` for how the engine computes them.
    They arrive in the ``slots`` dict of `update` and are not returned.
    """

    name = "svrg"
    options = {"lr": 0.01}

    def inputs(self, name, t):
        return ["g_snap", "mu"]

    def direction_update(self, g, p, grad, slots, step, lr):
        d = svrg_direction(g, grad, slots["g_snap"], slots["mu"])
        return _sub_lr(g, p, lr, d), {}


OPTIMIZERS: dict[str, type] = {c.name: c for c in
                               (SGD, Momentum, Nesterov, Adagrad, RMSprop, Adam, AdamW, SignSGD,
                                Muon, Svrg)}


# ---- construction and validation ----------------------------------------------------------

def _unit(opt, key, closed=False):
    v = opt.hyper[key]
    if not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
        rng = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"optimizer {opt.name}: option `{key}` must be in {rng}, got {v}")


def _nonneg(opt, key):
    if opt.hyper[key] < 0:
        raise ValueError(f"optimizer {opt.name}: option `{key}` must be non-negative, "
                         f"got {opt.hyper[key]}")


def _all_options(cls) -> dict:
    return {**cls.options, **{k: v for k, v in Optimizer.common.items() if k not in cls.options}}


def signature(cls) -> str:
    """``adam(lr=0.001, beta1=0.9, ...)``: the options of an optimizer class."""
    return _signature(cls.name, _all_options(cls))


def make_optimizer(name: str, kwargs: dict | None = None) -> Optimizer:
    """The optimizer ``name`` with options ``kwargs`` (any of its options, plus
    ``weight_decay`` and ``l1``). Raises ``ValueError`` for an unknown optimizer (with a
    did-you-mean), an unknown option (listing the valid ones) or a bad value."""
    kwargs = dict(kwargs or {})
    cls = lookup("optimizer", OPTIMIZERS, name)
    opts = _all_options(cls)
    sig = check_names("optimizer", name, kwargs, opts)
    hyper = {}
    for k, default in opts.items():
        v = kwargs.get(k, default)
        if v is REQUIRED:
            raise ValueError(f"optimizer {name} needs option `{k}` ({sig})")
        if isinstance(default, bool):
            if not isinstance(v, bool):
                if isinstance(v, (int, float)) and v in (0, 1):
                    v = bool(v)
                else:
                    raise ValueError(f"optimizer {name}: option `{k}` must be true or false, got {v!r}")
        elif isinstance(default, int) and k == "ns_steps":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"optimizer {name}: option `{k}` must be a number, got {v!r}")
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"optimizer {name}: option `{k}` must be a number, got {v!r}")
            v = float(v)
        hyper[k] = v
    if hyper["lr"] <= 0:
        raise ValueError(f"optimizer {name}: option `lr` must be positive, got {hyper['lr']}")
    for k in ("weight_decay", "l1"):
        if hyper[k] < 0:
            raise ValueError(f"optimizer {name}: option `{k}` must be non-negative, got {hyper[k]}")
    return cls(**hyper)
