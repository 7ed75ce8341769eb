"""Seeded toy sequence tasks (sine, parity, adding, copy, markov)."""

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



@_register(
    "ctc_frames",
    "unsegmented symbol sequences rendered as noisy frames, for CTC (variable lengths, padded)",
    {
        "x": "[n,4*max_labels,symbols+1] float32 frames: one-hot of the symbol sounding (0 silence) + noise, zeros past x_len",
        "labels": "[n,max_labels] int64 symbols 1..symbols, 0-padded past y_len",
        "x_len": "[n] int64 number of real frames",
        "y_len": "[n] int64 number of labels (1..max_labels)",
    },
    {
        "n": _int(512, _NSEQ, min=1),
        "symbols": _int(4, "alphabet size; CTC's blank is class 0", min=1),
        "max_labels": _int(4, "longest label sequence", min=1),
        "noise": _float(0.3, "std of Gaussian noise on the real frames", min=0),
    },
    "sequence",
)
def _ctc_frames(seed: int, *, n: int, symbols: int, max_labels: int, noise: float) -> Dataset:
    # Each label sounds for 1 or 2 frames; a silent frame separates equal neighbours
    # (CTC needs a blank between repeats) and sometimes others, plus up to one leading
    # silent frame: at most 1 + 2S + (S - 1) = 3S frames, so 4S frames always fit and
    # every sample has an alignment.
    rng = np.random.default_rng(seed)
    frames = 4 * max_labels
    x = np.zeros((n, frames, symbols + 1), np.float32)
    labels = np.zeros((n, max_labels), np.int64)
    x_len = np.zeros(n, np.int64)
    y_len = rng.integers(1, max_labels + 1, n)
    for i in range(n):
        seq = rng.integers(1, symbols + 1, y_len[i])
        labels[i, : y_len[i]] = seq
        sounding = [0] * int(rng.integers(0, 2))
        for j, s in enumerate(seq):
            if j and (s == seq[j - 1] or rng.random() < 0.3):
                sounding.append(0)
            sounding += [int(s)] * int(rng.integers(1, 3))
        used = len(sounding) + int(rng.integers(0, frames - len(sounding) + 1))
        sounding += [0] * (used - len(sounding))
        x[i, :used] = np.eye(symbols + 1, dtype=np.float32)[sounding]
        x[i, :used] += noise * rng.standard_normal((used, symbols + 1)).astype(np.float32)
        x_len[i] = used
    return Dataset(
        {"x": x, "labels": labels, "x_len": x_len, "y_len": y_len.astype(np.int64)},
        description=DATASETS["ctc_frames"].description,
        classes=symbols + 1,
        meta={"blank": 0},
    )


@_register(
    "reverse",
    "sequence reversal: read a symbol string, write it backwards (seq2seq)",
    {"x": "[n,length] int64 symbols 1..symbols", "y": "[n,length] int64 x reversed"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(6, "symbols per sequence", min=1),
        "symbols": _int(6, "alphabet size; token 0 is free for a start-of-sequence symbol", min=1),
    },
    "sequence",
)
def _reverse(seed: int, *, n: int, length: int, symbols: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, symbols + 1, (n, length)).astype(np.int64)
    return Dataset(
        {"x": x, "y": x[:, ::-1].copy()},
        description=DATASETS["reverse"].description,
        classes=symbols + 1,
        meta={"bos": 0},
    )


# ------------------------------------------------------- toy language modelling


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
