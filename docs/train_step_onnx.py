"""Train an exported dlc regime with only onnxruntime and NumPy (docs/train_step_onnx.md).

    dlc compile specs/wgan_gp.dl --to onnx --train-step -o wgan/      # or -o step.onnx
    python docs/train_step_onnx.py wgan/manifest.json --rounds 200    # or step.onnx

`dlc compile --train-step` writes one ONNX model per player's step (plus a metrics
model, and SVRG's full-gradient model), the initial values (`init.npz`), the training
data (`data.npz`) and `manifest.json`, which says in what order the models run, how
often, which tensors each updates, which data and noise each reads and how they are
drawn. This script follows the manifest; from the same seed it reproduces `dlc train`'s
numbers (to float rounding: tests/test_onnx_regimes.py checks it for every zoo spec).

It needs nothing of dlc. Noise and batch order use NumPy's `default_rng` with the
seeds the manifest states, exactly as dlc draws them on the host.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
            "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def manifest_path(path) -> Path:
    """The manifest of `path`: itself, `DIR/manifest.json`, or `X.manifest.json` beside `X.onnx`."""
    p = Path(path)
    if p.is_dir():
        return p / "manifest.json"
    if p.suffix == ".onnx":
        return p.with_name(p.stem + ".manifest.json")
    return p


class Model:
    """One ONNX model of the regime: feeds cast to its input types, results by name."""

    def __init__(self, path: Path):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: NP_TYPES[i.type] for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict) -> dict:
        missing = [k for k in self.inputs if k not in feeds]
        if missing:
            raise KeyError(f"nothing to feed as {', '.join(missing)}")
        run = {k: np.asarray(feeds[k]).astype(t, copy=False) for k, t in self.inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, run)))


def eval_dim(d, env: dict) -> int:
    """A noise dim: an int, or a product of symbols with a coefficient, +/- an int."""
    if isinstance(d, int):
        return d
    offset = 0
    for sign in ("+", "-"):
        head, sep, tail = d.rpartition(sign)
        if sep and head and tail.isdigit():
            d, offset = head, int(tail) * (1 if sign == "+" else -1)
            break
    value = 1
    for part in d.split("*"):
        value *= int(part) if part.isdigit() else env[part]
    return value + offset


def draw_noise(specs: list, man: dict, batch: dict, stream: int) -> dict:
    """The noise of one model run: `default_rng([seed, stream, hash])` per noise tensor."""
    env = {sym: int(np.shape(batch[name])[axis]) for sym, (name, axis) in man["dim_sources"].items()
           if name in batch}
    out = {}
    for s in specs:
        rng = np.random.default_rng([man["seed"], stream, s["hash"]])
        shape = tuple(eval_dim(d, env) for d in s["shape"])
        if s["dist"] == "normal":
            out[s["name"]] = rng.standard_normal(shape, dtype=np.float32)
        elif s["dist"] == "uniform":
            out[s["name"]] = rng.random(shape, dtype=np.float32)
        else:
            raise ValueError(f"unknown noise distribution {s['dist']!r}")
    return out


def name_hash(name: str) -> int:
    """How the manifest's noise `hash` is made (for a driver that adds noise of its own)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


class Regime:
    """A run of an exported regime: its state, position and logs, as `dlc train` keeps them."""

    def __init__(self, path):
        mp = manifest_path(path)
        self.dir = mp.parent
        self.man = json.loads(mp.read_text())
        with np.load(self.dir / self.man["init"]) as z:
            self.state = {k: z[k] for k in z.files}
        with np.load(self.dir / self.man["data"]["file"]) as z:
            self.data = {k: z[k] for k in z.files}
        self.steps = [(e, Model(self.dir / e["model"]),
                       Model(self.dir / e["metrics_model"]) if e.get("metrics_model") else None)
                      for e in self.man["steps"]]
        self.svrg = [(s, Model(self.dir / s["model"])) for s in self.man["svrg"]]
        self.round = self.epoch = self.batch_index = self.stream = 0
        self.counters = {e["player"]: 0 for e in self.man["steps"]}
        self.log: list[dict] = []       # per round: the logged scalars of its steps

    def _batches(self, shuffle: bool):
        m, rows, b = self.man, self.man["data"]["rows"], self.man["batch"]
        order = (np.random.default_rng([m["seed"], self.epoch, m["batch_order"]["tag"]])
                 .permutation(rows) if shuffle else np.arange(rows))
        for i in range(m["batches_per_epoch"]):
            idx = order[i * b:(i + 1) * b]
            yield {k: v[idx] for k, v in self.data.items()}

    def _snapshot(self):
        """SVRG: snapshot:P := P; opt.P.mu := the full-batch gradient at the snapshot."""
        nb = self.man["batches_per_epoch"]
        for s, model in self.svrg:
            for snap, p in s["snapshot"].items():
                self.state[snap] = self.state[p]
            feeds = {**self.state, **{p: self.state[snap] for snap, p in s["snapshot"].items()}}
            total, n = {}, 0
            for i, batch in enumerate(self._batches(shuffle=False)):
                stream = (1 << 41) + self.epoch * nb + i
                out = model({**feeds, **batch, **draw_noise(s["noise"], self.man, batch, stream)})
                rows = len(next(iter(batch.values())))
                for k, v in out.items():
                    total[k] = total.get(k, 0.0) + v.astype(np.float64) * rows
                n += rows
            for mu, g in s["full_gradient"].items():  # g = "grad:P"
                p = g[len("grad:"):]
                self.state[mu] = (total[g] / max(n, 1)).astype(np.asarray(self.state[p]).dtype)

    def run_round(self, batch: dict, metrics: bool = False) -> dict:
        logged = {}
        for entry, model, metrics_model in self.steps:
            for _ in range(entry["repeats"]):
                feeds = {**self.state, **batch,
                         **draw_noise(entry["noise"], self.man, batch, self.stream),
                         "step": np.asarray(self.counters[entry["player"]], np.float32)}
                if metrics and metrics_model is not None:  # at the step's own inputs
                    out = metrics_model(feeds)
                    logged.update({k: float(out[k]) for k in entry["metrics"]})
                out = model(feeds)
                logged.update({name: float(out[k]) for k, name in entry["logged"].items()})
                self.state.update({x: out[k] for k, x in entry["updates"].items()})
                self.stream += 1
                self.counters[entry["player"]] += 1
        self.round += 1
        self.log.append(logged)
        return logged

    def train(self, rounds: int | None = None, metrics_every: int = 0):
        """`rounds` rounds (default: the train block's), as `dlc train` runs them."""
        total = self.man["rounds"] if rounds is None else min(rounds, self.man["rounds"])
        nb = self.man["batches_per_epoch"]
        while self.round < total:
            if self.batch_index == 0 and self.svrg:
                self._snapshot()
            for i, batch in enumerate(self._batches(shuffle=True)):
                if i < self.batch_index:
                    continue
                self.run_round(batch, metrics=bool(metrics_every) and
                               (self.round + 1) % metrics_every == 0)
                self.batch_index += 1
                if self.round >= total:
                    break
            if self.batch_index >= nb:
                self.epoch, self.batch_index = self.epoch + 1, 0
        return self.state

    def evaluation_values(self) -> dict:
        """The values `dlc train` evaluates and deploys: averaged params where averaging."""
        vals = dict(self.state)
        vals.update({p: self.state[a] for p, a in self.man["evaluate_with"].items()})
        return vals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("regime", help="manifest.json, its directory, or the X.onnx it sits beside")
    ap.add_argument("--rounds", "--steps", type=int, default=None,
                    help="rounds to train (default: the train block's)")
    ap.add_argument("--metrics-every", type=int, default=0,
                    help="also run the metrics model every N rounds")
    ap.add_argument("--save", default=None, help="write the final values to this .npz")
    args = ap.parse_args(argv)

    reg = Regime(args.regime)
    reg.train(args.rounds, args.metrics_every)
    first_loss = reg.man["steps"][0]["logged"].get("loss")  # the first player's
    losses = [row[first_loss] for row in reg.log if first_loss in row]
    for i, row in enumerate(reg.log):
        if i % max(1, len(reg.log) // 10) == 0 or i == len(reg.log) - 1:
            print(f"round {i:5d}  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()))
    if args.save:
        np.savez(args.save, **reg.evaluation_values())
    if len(losses) >= 20:
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"mean {first_loss} of the first 10 rounds {first:.4f}, of the last 10 {last:.4f}")
        if not last < first:
            print("the loss did not fall", file=sys.stderr)
            return 1
        print("the loss fell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
