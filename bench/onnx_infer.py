"""onnxruntime inference of dlc's ONNX with and without the peephole rewrites
(backends/onnx/peephole.py: Gemm, Sum before LayerNormalization) vs torch.onnx.export
of the same eager model with the same weights (bench/models.py's builders).

    python bench/onnx_infer.py [--only mlp,transformer] [--rounds 15]

1 thread, ORT's default session options (bench/run.py's `ort_session`); the three
contenders' samples are interleaved (a, b, c, a, b, c, ...) so that load from other
jobs hits all alike; medians. Prints one JSON line per model, with node counts of
each model and of the graph onnxruntime optimises it into.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import models as M  # noqa: E402
from run import ort_session  # noqa: E402

CASES = {"mlp": ("mlp.dl", M.eager_mlp), "transformer": ("transformer.dl", M.eager_transformer)}


def dlc_model(m2, values, peephole):
    from backends import onnx as ob
    from compiler.transform.passes import optimize
    g = m2.graph
    outs = {k: n for k, n in g.outputs.items() if g.output_kinds[k] == "output"}
    og, res = optimize(g, outs)
    return ob.lower(og, res, dtype="f32", params_as="initializers", peephole=peephole,
                    param_values={k: v for k, v in values.items() if k in m2.params},
                    name=m2.name)


def ort_optimized_ops(model, tmp):
    import onnx
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


def interleaved(fns: dict, rounds: int, budget: float = 0.1) -> dict:
    for f in fns.values():
        for _ in range(5):
            f()
    first = next(iter(fns.values()))
    t0 = time.perf_counter()
    first()
    number = max(1, int(budget / max(time.perf_counter() - t0, 1e-7)))
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(number):
                f()
            samples[k].append((time.perf_counter() - t0) / number)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "number": number}
            for k, v in samples.items()}


def bench(label, rounds, tmp):
    import numpy as np
    import onnx
    import torch
    spec, build = CASES[label]
    batch = M.batch_of(label, np.random.default_rng(0))
    m2, cfg, g, res, values = M.dlc_setup(spec, None)
    models = {"dlc": dlc_model(m2, values, True), "dlc_no_peephole": dlc_model(m2, values, False)}
    net = build({k: np.array(v, copy=True) for k, v in values.items()}).eval()
    path = M.torch_export(net, batch, lambda z: torch.softmax(z, -1), Path(tmp) / f"{label}.onnx")
    models["torch_export"] = onnx.load(str(path))
    r = {"model": label}
    fns = {}
    outs = {}
    for k, mdl in models.items():
        sess = ort_session(mdl, 1)
        names = [i.name for i in sess.get_inputs()]
        feeds = {n: v for n, v in batch.items() if n in names}
        fns[k] = (lambda s, f: lambda: s.run(None, f))(sess, feeds)
        outs[k] = fns[k]()[0]
        r[f"{k}_nodes"] = dict(Counter(n.op_type for n in mdl.graph.node))
        r[f"{k}_ort_optimized"] = ort_optimized_ops(mdl, tmp)
    r["max_abs_diff_vs_torch"] = {k: float(np.abs(outs[k] - outs["torch_export"]).max())
                                  for k in ("dlc", "dlc_no_peephole")}
    t = interleaved(fns, rounds)
    r.update(t)
    base = t["torch_export"]["median_s"]
    r["ratio_vs_torch"] = {k: t[k]["median_s"] / base for k in ("dlc", "dlc_no_peephole")}
    return r


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="mlp,transformer")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in a.only.split(","):
            r = bench(label, a.rounds, tmp)
            print(json.dumps(r), flush=True)
            out.append(r)
    return out


if __name__ == "__main__":
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    main()
