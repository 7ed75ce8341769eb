"""Train with an exported dlc train step, using only onnxruntime and NumPy.

    dlc compile specs/mlp.dl --to onnx --train-step -o step.onnx
    python docs/train_step_onnx.py step.onnx [--data digits.npz] [--steps 200]

The ONNX file computes one whole training step of the spec's `train` block (forward
pass, gradients, schedule, optimizer): its inputs are the data (``x``, ``y``), the
parameters (``dense0.W``, ...), the optimizer slots (``opt.dense0.W.m``, ...) and the
scalar ``step``; its outputs are ``loss``, the metrics, ``lr`` and the next value of
every parameter and slot as ``new:<name>``. Training is a loop feeding each
``new:<name>`` back as ``<name>``.

Initial values: this script needs nothing of dlc. Every input that has a
``new:<name>`` output is training state. Optimizer slots (``opt.*``) start at zero
(the fill of every dlc optimizer except Adagrad with ``initial_accumulator``);
parameters get Glorot-uniform values when rank >= 2 (``[in, out]`` layout) and zeros
otherwise (biases), as the standard library's ``Dense`` does. (`dlc`'s own initial
values come from ``compiler.api.load(spec).init_params(seed)``; pass them instead
with ``--init params.npz`` if you want bit-identical starts.)

Data: scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``, pixel counts 0..16),
or an ``.npz`` with ``pixels`` [N, 64] in 0..16 and ``labels`` [N]; ``x = pixels / 16``. The script prints the loss and exits 1 if the
mean loss of the last 10 steps is not below that of the first 10.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnxruntime as ort

NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
            "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def initial_state(session, rng, init: dict) -> dict:
    outputs = {o.name for o in session.get_outputs()}
    state = {}
    for i in session.get_inputs():
        if "new:" + i.name not in outputs:
            continue  # data or the step counter
        shape = tuple(int(d) for d in i.shape)
        dtype = NP_TYPES[i.type]
        if i.name in init:
            state[i.name] = init[i.name].astype(dtype)
        elif i.name.startswith("opt.") or len(shape) < 2:
            state[i.name] = np.zeros(shape, dtype)
        else:
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            state[i.name] = rng.uniform(-limit, limit, shape).astype(dtype)
    for name in list(state):  # averaged parameters start at the parameters
        if name.startswith("avg.") and name[4:] in state and name not in init:
            state[name] = state[name[4:]].copy()
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a train-step ONNX file from `dlc compile --train-step`")
    ap.add_argument("--data", default=None, help="an .npz with pixels/labels (default: sklearn's digits)")
    ap.add_argument("--init", default=None, help="an .npz of initial values by name")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.data is None:
        from sklearn.datasets import load_digits
        d = load_digits()
        pixels, labels = d.data, d.target
    else:
        with np.load(args.data) as z:
            pixels, labels = z["pixels"], z["labels"]
    x = (pixels / 16.0).astype(np.float32)
    y = labels.astype(np.int64)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(args.seed)
    init = dict(np.load(args.init)) if args.init else {}
    state = initial_state(session, rng, init)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}  # e.g. no `step` with a constant lr

    losses = []
    for t in range(args.steps):
        idx = rng.choice(len(x), args.batch, replace=False)
        feeds = {"x": x[idx], "y": y[idx], "step": np.asarray(t, np.float32), **state}
        out = dict(zip(names, session.run(names, {k: v for k, v in feeds.items()
                                                  if k in wanted})))
        state = {k[4:]: v for k, v in out.items() if k.startswith("new:")}
        losses.append(float(out["loss"]))
        if t % 20 == 0 or t == args.steps - 1:
            print(f"step {t:4d}  loss {losses[-1]:.4f}  lr {float(out.get('lr', np.nan)):.2e}")
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"mean loss of the first 10 steps {first:.4f}, of the last 10 {last:.4f}")
    if not last < first:
        print("the loss did not fall", file=sys.stderr)
        return 1
    print("the loss fell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
