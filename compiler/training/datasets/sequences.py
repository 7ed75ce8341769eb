"""Seeded toy sequence tasks (sine, parity, adding, copy, markov, reverse)."""

from __future__ import annotations

import numpy as np

from compiler.training.datasets.dataset import Dataset
from compiler.training.datasets.registry import DATASETS, _bool, _float, _int, _register

# --------------------------------------------------------------------------- sequences

_NSEQ = "number of sequences"


@_register(
    "sine",
    "sine waves of random frequency and phase, next-step prediction",
    {"x": "[n,length,1] float32", "y": "[n,length,1] float32 (x one step ahead)"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(50, "number of time steps", min=1),
        "dt": _float(0.2, "time step (angular frequencies are drawn from U(0.5, 2.0))", min=0),
        "noise": _float(0.0, "std of Gaussian noise added to the signal", min=0),
    },
    "sequence",
)
def _sine(seed: int, *, n: int, length: int, dt: float, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    omega = rng.uniform(0.5, 2.0, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    t = np.arange(length + 1)[None, :] * dt
    s = np.sin(omega * t + phase) + noise * rng.standard_normal((n, length + 1))
    s = s.astype(np.float32)[:, :, None]
    return Dataset(
        {"x": s[:, :-1], "y": s[:, 1:]},
        description=DATASETS["sine"].description,
        classes=None,
        meta={"omega": omega[:, 0], "phase": phase[:, 0]},
    )


@_register(
    "parity",
    "parity (XOR) of a random bit sequence",
    {"x": "[n,length,1] float32 bits", "y": "[n] int64 parity (running=True: [n,length] prefix parities)"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(8, "number of bits", min=1),
        "running": _bool(False, "label every prefix instead of only the whole sequence"),
    },
    "sequence",
)
def _parity(seed: int, *, n: int, length: int, running: bool) -> Dataset:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, length))
    prefix = np.cumsum(bits, axis=1) % 2
    y = prefix if running else prefix[:, -1]
    return Dataset(
        {"x": bits.astype(np.float32)[:, :, None], "y": y.astype(np.int64)},
        description=DATASETS["parity"].description,
        classes=2,
    )


@_register(
    "adding",
    "adding problem: sum the two marked values of a long sequence",
    {"x": "[n,length,2] float32 (values, markers)", "y": "[n,1] float32 sum of the two marked values"},
    {"n": _int(512, _NSEQ, min=1), "length": _int(50, "number of time steps", min=2)},
    "sequence",
)
def _adding(seed: int, *, n: int, length: int) -> Dataset:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    # target from the float32 values so that it is exact w.r.t. what the model sees
    y = (x[rows, first, 0].astype(np.float64) + x[rows, second, 0]).astype(np.float32)[:, None]
    return Dataset({"x": x, "y": y}, description=DATASETS["adding"].description, classes=None)


@_register(
    "copy",
    "copy-memory task: reproduce a symbol sequence after a delay",
    {"x": "[n,2*length+delay] int64 tokens", "y": "[n,2*length+delay] int64 target tokens"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(10, "number of symbols to remember", min=1),
        "delay": _int(20, "steps between the end of the symbols and the output (>= 1)", min=1),
        "symbols": _int(8, "alphabet size; tokens: 0 blank, 1..symbols data, symbols+1 delimiter", min=1),
    },
    "sequence",
)
def _copy(seed: int, *, n: int, length: int, delay: int, symbols: int) -> Dataset:
    rng = np.random.default_rng(seed)
    total = 2 * length + delay
    seq = rng.integers(1, symbols + 1, (n, length))
    x = np.zeros((n, total), np.int64)
    y = np.zeros((n, total), np.int64)
    x[:, :length] = seq
    x[:, length + delay - 1] = symbols + 1
    y[:, length + delay :] = seq
    return Dataset(
        {"x": x, "y": y},
        description=DATASETS["copy"].description,
        classes=symbols + 2,
        meta={"blank": 0, "delimiter": symbols + 1},
    )



# ------------------------------------------------------- toy language and seq2seq tasks


def _markov_chain(rng, vocab: int, branch: int) -> np.ndarray:
    """A random transition matrix [vocab, vocab]: each token has `branch` successors,
    with Dirichlet(4) probabilities (a sparse chain, so next-token prediction has a
    low, known entropy rate). Token s + 1 (mod vocab) is always a successor, so the
    chain is irreducible and every token occurs."""
    P = np.zeros((vocab, vocab))
    for s in range(vocab):
        others = np.setdiff1d(np.arange(vocab), [s, (s + 1) % vocab])  # no self-loops
        extra = rng.choice(others, size=min(branch - 1, len(others)), replace=False)
        succ = np.concatenate([[(s + 1) % vocab], extra])
        P[s, succ] = rng.dirichlet(np.full(len(succ), 4.0))  # not too far from uniform
    return P


def _stationary(P: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eig(P.T)
    pi = np.abs(np.real(V[:, np.argmin(np.abs(w - 1))]))
    return pi / pi.sum()


@_register(
    "markov",
    "token sequences of a random sparse Markov chain (language modelling, masked LM)",
    {"x": "[n,length] int64 tokens 0..vocab-1", "y": "[n,length] int64 next tokens (x one step ahead)"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(16, "number of tokens per sequence", min=1),
        "vocab": _int(8, "number of distinct tokens", min=2),
        "branch": _int(2, "successors of each token, one of them token+1 mod vocab (the chain is fixed by the seed)", min=1),
    },
    "sequence",
)
def _markov(seed: int, *, n: int, length: int, vocab: int, branch: int) -> Dataset:
    rng = np.random.default_rng(seed)
    P = _markov_chain(rng, vocab, branch)
    pi = _stationary(P)
    seq = np.zeros((n, length + 1), np.int64)
    seq[:, 0] = rng.choice(vocab, size=n, p=pi)
    cdf = np.cumsum(P, axis=1)
    for t in range(length):
        u = rng.uniform(size=n)
        row = cdf[seq[:, t]]
        seq[:, t + 1] = np.minimum((u[:, None] > row).sum(axis=1), vocab - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_rows = -np.nansum(np.where(P > 0, P * np.log(P), 0.0), axis=1)
    return Dataset(
        {"x": seq[:, :-1], "y": seq[:, 1:]},
        description=DATASETS["markov"].description,
        classes=vocab,
        # entropy_rate: the best achievable mean next-token cross-entropy (nats)
        meta={"transition": P, "stationary": pi, "entropy_rate": float(pi @ h_rows)},
    )


@_register(
    "reverse",
    "sequence-to-sequence: output the source symbols in reverse order (teacher forcing)",
    {"src": "[n,length] int64 symbols 1..symbols",
     "tgt": "[n,length] int64 decoder input: bos (symbols+1), then y shifted right",
     "y": "[n,length] int64 target: src reversed"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(8, "number of symbols per sequence", min=1),
        "symbols": _int(8, "alphabet size; tokens: 0 unused (padding), 1..symbols, symbols+1 bos", min=1),
    },
    "sequence",
)
def _reverse(seed: int, *, n: int, length: int, symbols: int) -> Dataset:
    rng = np.random.default_rng(seed)
    src = rng.integers(1, symbols + 1, (n, length)).astype(np.int64)
    y = src[:, ::-1].copy()
    tgt = np.concatenate([np.full((n, 1), symbols + 1, np.int64), y[:, :-1]], axis=1)
    return Dataset(
        {"src": src, "tgt": tgt, "y": y},
        description=DATASETS["reverse"].description,
        classes=symbols + 2,
        meta={"bos": symbols + 1},
    )
