"""Random valid specs for the differential tester, each with an independent PyTorch
evaluation of the same expression.

A spec is an expression tree over `x: f32[B, 4]` (an input; `f32[3, 4]` in a
static-dims case) and the parameters `W: [4, 4]`, `v: [4]`, `u: [4]`, `p11: [1, 1]`,
`K: [1, 1, 2, 2]` and a sub-layer instance `mix` (parameter `mix.A: [4, 4]`). Every
node renders twice, as dlc source and as a torch function written here from the maths
(never from dlc's lowering or its primitive table). Node kinds: "M" values are
[B, 4], "V" values are [B].

The constructs are the ones issue 18's bugs lived in, so the tester can find such
bugs again: broadcasting against a [1, 1] parameter, `reshape` to
`[dim(x, 0), -1]` (dims that cancel), shifted slices, transposed matrix-vector
products, `floor`/`round`/`sign` behind `stop_gradient`, scans with a tuple carry and
in reverse, `grad` inside the spec (the loss is then second order, also through a
scan), a sub-layer called once or twice (shared), conv + pool, and masks.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

B = 3


@dataclass
class Node:
    kind: str                     # "M" ([B, 4]) or "V" ([B])
    src: str                      # dlc source
    fn: object                    # torch: env -> tensor
    kids: list = field(default_factory=list)
    needs_x_grad: bool = False    # contains grad(..., x): the loss is then second order

    def size(self) -> int:
        return 1 + sum(k.size() for k in self.kids)


def _leaf_m(rng):
    choice = rng.randrange(4)
    if choice == 0:
        return Node("M", "x", lambda e: e["x"])
    if choice == 1:
        return Node("M", "(x @ W)", lambda e: e["x"] @ e["W"])
    if choice == 2:  # a [1, 1] parameter broadcast against [B, 4] (unbroadcast in the VJP)
        return Node("M", "(x * p11)", lambda e: e["x"] * e["p11"])
    return Node("M", "(x * v)", lambda e: e["x"] * e["v"])


def _leaf_v(rng):
    return Node("V", "(x @ u)", lambda e: e["x"] @ e["u"])


# unary maps on M (float, smooth or piecewise-smooth away from kinks)
UNARY = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "softplus": torch.nn.functional.softplus,
    "exp_small": None, "square": None,
}


def _unary(name, a):
    if name == "exp_small":
        return Node(a.kind, f"exp(0.3 * {a.src})", lambda e: torch.exp(0.3 * a.fn(e)), [a])
    if name == "square":
        return Node(a.kind, f"({a.src} * {a.src})", lambda e: a.fn(e) * a.fn(e), [a])
    f = UNARY[name]
    return Node(a.kind, f"{name}({a.src})", lambda e: f(a.fn(e)), [a])


def gen_m(rng, depth) -> Node:
    if depth <= 0 or rng.random() < 0.2:
        return _leaf_m(rng)
    k = rng.randrange(19)
    if k >= 14:
        return _gen_m_more(rng, depth, k)
    if k == 13:  # a transposed matrix times a vector ([4, B] @ [B]), broadcast back
        a, c = gen_m(rng, depth - 1), gen_v(rng, depth - 1)
        return Node("M", f"({a.src} * expand_dims(transpose({a.src}) @ {c.src}, 0))",
                    lambda e: a.fn(e) * (a.fn(e).T @ c.fn(e))[None, :], [a, c])
    if k < 3:
        return _unary(rng.choice(list(UNARY)), gen_m(rng, depth - 1))
    if k == 3:
        a, b = gen_m(rng, depth - 1), gen_m(rng, depth - 1)
        op = rng.choice(["+", "-", "*"])
        tf = {"+": torch.add, "-": torch.sub, "*": torch.mul}[op]
        return Node("M", f"({a.src} {op} {b.src})", lambda e: tf(a.fn(e), b.fn(e)), [a, b])
    if k == 4:  # broadcasting a [B] column against [B, 4]
        a, c = gen_m(rng, depth - 1), gen_v(rng, depth - 1)
        return Node("M", f"({a.src} * expand_dims({c.src}, 1))",
                    lambda e: a.fn(e) * c.fn(e)[:, None], [a, c])
    if k == 5:
        a = gen_m(rng, depth - 1)
        return Node("M", f"({a.src} @ W)", lambda e: a.fn(e) @ e["W"], [a])
    if k == 6:
        a = gen_m(rng, depth - 1)
        f = rng.choice(["softmax", "log_softmax"])
        tf = torch.softmax if f == "softmax" else torch.log_softmax
        return Node("M", f"{f}({a.src}, axis = -1)", lambda e: tf(a.fn(e), dim=-1), [a])
    if k == 7:  # shifted slices (T-1 dims) put back together: a roll along axis 1
        a = gen_m(rng, depth - 1)
        return Node("M", f"concat([{a.src}[:, 1:], {a.src}[:, :1]], axis = 1)",
                    lambda e: torch.cat([a.fn(e)[:, 1:], a.fn(e)[:, :1]], dim=1), [a])
    if k == 8:  # reshape through a flat view and a -1
        a = gen_m(rng, depth - 1)
        return Node("M", f"reshape(reshape({a.src}, [-1]), [-1, 4])",
                    lambda e: a.fn(e).reshape(-1).reshape(-1, 4), [a])
    if k == 9:  # scan along axis 1 with a carry, forward or reverse
        a = gen_m(rng, depth - 1)
        rev = rng.random() < 0.5

        def scan_fn(e, a=a, rev=rev):
            xs = a.fn(e)
            h = torch.zeros(xs.shape[0], dtype=xs.dtype)
            ys = [None] * xs.shape[1]
            steps = range(xs.shape[1] - 1, -1, -1) if rev else range(xs.shape[1])
            for t in steps:
                ys[t] = h * xs[:, t]
                h = torch.tanh(h + xs[:, t])
            return torch.stack(ys, dim=1)
        r = "true" if rev else "false"
        return Node("M", f"scan(fn(h, t) -> (tanh(h + t), h * t), {a.src}, "
                         f"init = zeros([dim(x, 0)]), axis = 1, reverse = {r})[1]",
                    scan_fn, [a])
    if k == 10:  # a gradient inside the spec: the loss's parameter gradient is 2nd order
        a = gen_m(rng, depth - 1)

        def grad_fn(e, a=a):
            g, = torch.autograd.grad((a.fn(e) ** 2).sum(), e["x"], create_graph=True)
            return g
        return Node("M", f"grad(sum({a.src} * {a.src}), x)", grad_fn, [a], needs_x_grad=True)
    if k == 11:  # a mask: where(a > 0, a, 0.5 a)
        a = gen_m(rng, depth - 1)
        return Node("M", f"where({a.src} > 0, {a.src}, 0.5 * {a.src})",
                    lambda e: torch.where(a.fn(e) > 0, a.fn(e), 0.5 * a.fn(e)), [a])
    a = gen_m(rng, depth - 1)  # stop_gradient mixed with a live path
    return Node("M", f"(stop_gradient({a.src}) * {a.src})",
                lambda e: a.fn(e).detach() * a.fn(e), [a])


_ROUNDING = {"floor": torch.floor, "round": torch.round, "sign": torch.sign}


def _gen_m_more(rng, depth, k) -> Node:
    if k == 14:  # a scan with a tuple carry (h, c), forward or reverse
        a = gen_m(rng, depth - 1)
        rev = rng.random() < 0.5

        def scan_fn(e, a=a, rev=rev):
            xs = a.fn(e)
            h = torch.zeros(xs.shape[0], dtype=xs.dtype)
            c = torch.ones(xs.shape[0], dtype=xs.dtype)
            ys = [None] * xs.shape[1]
            for t in (range(xs.shape[1] - 1, -1, -1) if rev else range(xs.shape[1])):
                ys[t] = c * xs[:, t]
                h, c = torch.tanh(h + xs[:, t]), c + h * xs[:, t]
            return torch.stack(ys, dim=1)
        r = "true" if rev else "false"
        return Node("M", f"scan(fn((h, c), t) -> ((tanh(h + t), c + h * t), c * t), {a.src}, "
                         f"init = (zeros([dim(x, 0)]), ones([dim(x, 0)])), axis = 1, reverse = {r})[1]",
                    scan_fn, [a])
    if k == 15:  # the sub-layer instance `mix`, called once here (shared if called again)
        a = gen_m(rng, depth - 1)
        return Node("M", f"mix({a.src})", lambda e: torch.tanh(a.fn(e) @ e["mix.A"]) + a.fn(e), [a])
    if k == 16:  # conv + pool on a [B, 1, 2, 2] view
        a = gen_m(rng, depth - 1)
        pool = rng.choice(["avg", "max"])
        tp = torch.nn.functional.avg_pool2d if pool == "avg" else torch.nn.functional.max_pool2d
        return Node("M", f"reshape({pool}_pool2d(conv2d(reshape({a.src}, [dim(x, 0), 1, 2, 2]), K, "
                         f"padding = 1), 2, stride = 1), [dim(x, 0), 4])",
                    lambda e: tp(torch.nn.functional.conv2d(a.fn(e).reshape(-1, 1, 2, 2), e["K"],
                                                            padding=1), 2, stride=1).reshape(-1, 4),
                    [a])
    if k == 17:  # a piecewise-constant op behind stop_gradient: no gradient reaches it
        a = gen_m(rng, depth - 1)
        f = rng.choice(list(_ROUNDING))
        tf = _ROUNDING[f]
        return Node("M", f"({f}(stop_gradient({a.src})) + {a.src})",
                    lambda e: tf(a.fn(e).detach()) + a.fn(e), [a])
    a = gen_m(rng, depth - 1)  # reshape with -1 where the dims cancel: [B, 4] -> [B, -1]
    return Node("M", f"reshape({a.src} * 2, [dim(x, 0), -1])",
                lambda e: (a.fn(e) * 2).reshape(e["x"].shape[0], -1), [a])


def gen_v(rng, depth) -> Node:
    if depth <= 0 or rng.random() < 0.3:
        return _leaf_v(rng)
    a = gen_m(rng, depth - 1)
    f = rng.choice(["sum", "mean", "max", "logsumexp"])
    tf = {"sum": lambda t: t.sum(1), "mean": lambda t: t.mean(1),
          "max": lambda t: t.amax(1), "logsumexp": lambda t: torch.logsumexp(t, 1)}[f]
    return Node("V", f"{f}({a.src}, axis = 1)", lambda e: tf(a.fn(e)), [a])


@dataclass
class Case:
    seed: int
    root: Node
    loss_kind: str
    static: bool = False          # x: f32[3, 4] instead of f32[B, 4]

    @property
    def text(self) -> str:
        r = self.root.src
        body = f"mean({r})" if self.loss_kind == "mean" else f"sum({r} * {r})"
        xdims = f"{B}, 4" if self.static else "B, 4"
        return ("layer Mix() {\n  param A: [4, 4] ~ normal(0.5)\n  (z) -> tanh(z @ A) + z\n}\n\n"
                f"model D() {{\n  input x: f32[{xdims}]\n  param W: [4, 4] ~ normal(0.5)\n"
                "  param v: [4] ~ normal(0.5)\n  param u: [4] ~ normal(0.5)\n"
                "  param p11: [1, 1] ~ normal(0.5)\n  param K: [1, 1, 2, 2] ~ normal(0.5)\n"
                "  mix = Mix()\n"
                f"  loss L = {body}\n}}\n")

    def torch_loss(self, env):
        r = self.root.fn(env)
        return r.mean() if self.loss_kind == "mean" else (r * r).sum()


def generate(seed: int, depth: int = 3) -> Case:
    rng = random.Random(seed)
    root = gen_m(rng, depth) if rng.random() < 0.7 else gen_v(rng, depth)
    return Case(seed, root, rng.choice(["mean", "sumsq"]), static=rng.random() < 0.3)


def subtrees(node: Node):
    """Smaller candidates for shrinking: every descendant of the same kind, or a leaf."""
    out = []
    stack = list(node.kids)
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.kids)
    return sorted(out, key=Node.size)
