"""Throughput of `dlc train` on 1 vs N CPU processes (data-parallel, gloo).

    PYTHONPATH=. python bench/distributed.py [--steps-mlp 300] [--steps-cnn 60] [--nproc 2]

Samples per second = steps x global batch / the run's training time (`time_s` of
`--json`: the loop, without start-up, compilation or the final evaluation). The
global batch is the spec's, so N processes do the same work per step, each on 1/N of it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train(spec: str, steps: int, nproc: int, out: Path, backend: str) -> dict:
    cmd = [sys.executable, "-m", "compiler", "train", str(ROOT / "specs" / spec),
           "--steps", str(steps), "--json", "--out", str(out), "--backend", backend]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if res.returncode:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-mlp", type=int, default=300)
    ap.add_argument("--steps-cnn", type=int, default=60)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--out", default="/tmp/dlc-bench-ddp")
    a = ap.parse_args()
    from compiler import api
    from compiler.training.spec import parse_train
    print("| spec | backend | global batch | steps | processes | train time (s) | samples/s | vs 1 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spec, steps in (("mlp.dl", a.steps_mlp), ("cnn.dl", a.steps_cnn)):
        batch = parse_train(api.load(str(ROOT / "specs" / spec))).batch
        base = None
        for n in (1, a.nproc):
            p = train(spec, steps, n, Path(a.out) / f"{spec}-{n}", a.backend)
            rate = steps * batch / p["time_s"]
            base = base or rate
            print(f"| {spec} | {a.backend} | {batch} | {steps} | {n} | {p['time_s']:.2f} | "
                  f"{rate:.0f} | {rate / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
