"""The zoo's trained architectures, dlc vs hand-written eager PyTorch, one thread each.

    python bench/models.py            # prints JSON and writes bench/models.json
    python bench/models.py --quick

For each of mlp, cnn, lstm (T = 50 and 200) and transformer, from the spec's `train`
block (its optimizer, schedule, weight decay, clipping; cnn without dropout so both
sides draw nothing), with the same starting weights on both sides:

* torch: one train step of dlc's PyTorch backend (the lowered train-step graph) vs
  the same step in eager PyTorch (nn.Linear / nn.Conv2d / nn.LSTM /
  nn.TransformerEncoderLayer, torch.optim.Adam, loss.backward()); the losses of both
  over 3 steps are recorded (they must agree);
* torch unfused / compiled: the same step lowered without the multi-tensor
  `_foreach_*` optimizer updates, and under `torch.compile` (`dlc train --compile`;
  its compile time, the first call, in `compile_s`), each paired with eager again;
* ort_train: dlc's ONNX train-step model in onnxruntime vs the eager step;
* ort_infer: onnxruntime inference of dlc's ONNX vs of torch.onnx.export of the eager
  model (the same outputs);
* loop: one round of `dlc train`'s own loop (`Trainer._round` on the spec's data set:
  noise, the step, the one-sync finite check, the bookkeeping) vs the generated torch
  step alone on the same batch (target <= 1.05x); the evaluation at the epoch's end is
  not in it;
* faults: minor page faults per dlc torch step (resource.getrusage), with glibc's
  allocator left as it is and with `compiler.training.memory.tune_allocator()`.

Medians over repeats after warm-up; the eager and dlc torch steps' samples are
interleaved (`paired`), the other contenders timed right after (bench/run.py's `timeit`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import HORIZON, ort_session, ort_train_step, timeit  # noqa: E402

B = 32


# ---- dlc side ------------------------------------------------------------------------------

def dlc_setup(spec: str, hparams: dict | None = None):
    from compiler import api, training
    from compiler.transform.passes import optimize
    from compiler.training.spec import model_for, parse_train
    m = api.load(str(ROOT / "specs" / spec), hparams=hparams)
    cfg = parse_train(m)
    m2 = model_for(m, cfg)
    sg = training.build_step(m2, cfg, cfg.groups[0], HORIZON)
    g, res = optimize(sg.graph, sg.results)
    values = training.initial_values(m2, [sg], 0)
    return m2, cfg, g, res, values


def dlc_torch_step(g, res, values, batch, *, compile=False, foreach=True):
    """The generated step; `compile`: under torch.compile (`dlc train --compile`: its
    first call compiles); `foreach=False`: the lowering without multi-tensor optimizer
    updates."""
    import numpy as np
    import torch
    from backends import torch as tb
    module = tb.lower(g, res, dtype="f32", foreach=foreach)
    if compile:
        module = tb.compile_program(module)
    names = {g.node(n).attrs["name"] for n in g.inputs + g.params + g.states}
    feeds = {k: torch.as_tensor(np.asarray(v)) for k, v in values.items() if k in names}
    feeds.update({k: torch.as_tensor(v) for k, v in batch.items()})
    carried = [k for k in res if k.startswith("new:")]
    state = {"t": 0}

    @torch.no_grad()
    def step():
        feeds["step"] = torch.tensor(float(state["t"]))
        out = module(feeds)
        for k in carried:
            feeds[k[4:]] = out[k]
        state["t"] += 1
        return float(out["loss"])

    return step


def dlc_loop_vs_step(spec, hparams, repeat):
    """Seconds per round of the Trainer's loop and of the bare generated step, paired."""
    import tempfile

    from compiler import api
    from compiler.training.loop import Trainer
    from compiler.training.spec import model_for, parse_train
    from compiler.training.step import _split
    m = api.load(str(ROOT / "specs" / spec), hparams=hparams)
    cfg = parse_train(m)
    m2 = model_for(m, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(m2, cfg, _split(cfg, m2), backend="torch", out=Path(tmp))
    batch = next(iter(tr.train_ds.batches(cfg.batch, seed=0, epoch=0, start=0)))
    sg = tr.steps[0]
    from compiler.transform.passes import optimize
    g, res = optimize(sg.graph, sg.results)
    bare = dlc_torch_step(g, res, dict(tr.values), batch)
    import torch
    with torch.no_grad():
        loop, step = paired(lambda: tr._round(batch), bare, repeat)
    return {"loop": loop, "step": step, "batch": cfg.batch}


def dlc_ort_train(m2, g, res, values, batch, threads=1):
    from backends import onnx as ob
    model = ob.lower(g, res, dtype="f32", params_as="inputs", name=m2.name)
    return ort_train_step(model, {**values, **batch}, threads)


def dlc_ort_infer(m2, values, batch, threads=1):
    from backends import onnx as ob
    from compiler.transform.passes import optimize
    g = m2.graph
    outs = {k: n for k, n in g.outputs.items() if g.output_kinds[k] == "output"}
    og, res = optimize(g, outs)
    model = ob.lower(og, res, dtype="f32", params_as="initializers",
                     param_values={k: v for k, v in values.items() if k in m2.params},
                     name=m2.name)
    sess = ort_session(model, threads)
    names = [i.name for i in sess.get_inputs()]
    feeds = {k: v for k, v in batch.items() if k in names}
    return lambda: sess.run(None, feeds)


# ---- eager side ------------------------------------------------------------------------------

def _t(a):
    import numpy as np
    import torch
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _cosine(base, t):
    return 0.5 * base * (1 + math.cos(math.pi * min(t, HORIZON) / HORIZON))


def _adam(named, lr, wd):
    import torch
    decay = [p for n, p in named if p.ndim >= 2]
    rest = [p for n, p in named if p.ndim < 2]
    return torch.optim.Adam([{"params": decay, "weight_decay": wd},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)


def eager_mlp(v):
    from torch import nn
    Ws = sorted(k for k in v if k.endswith(".W"))
    mods = []
    for i, k in enumerate(Ws):
        a, b = v[k].shape
        lin = nn.Linear(a, b)
        lin.weight.data = _t(v[k]).T.contiguous()
        lin.bias.data = _t(v[k[:-2] + ".b"])
        mods += [lin] + ([nn.ReLU()] if i < len(Ws) - 1 else [])
    return nn.Sequential(*mods)


def eager_cnn(v):
    from torch import nn
    convs = []
    for i in (0, 1):
        w = v[f"convblock{i}.conv.W"]
        c = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
        c.weight.data, c.bias.data = _t(w), _t(v[f"convblock{i}.conv.b"])
        convs += [c, nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*convs, nn.Flatten(), *eager_mlp({k: x for k, x in v.items()
                                                           if k.startswith("dense")}))


class EagerLSTM:
    def __new__(cls, v, forget_bias=1.0):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                W, U, b = v["lstm.cell.W"], v["lstm.cell.U"], v["lstm.cell.b"]
                h = U.shape[0]
                self.lstm = nn.LSTM(W.shape[0], h, batch_first=True)
                self.lstm.weight_ih_l0.data = _t(W).T.contiguous()
                self.lstm.weight_hh_l0.data = _t(U).T.contiguous()
                self.lstm.bias_ih_l0.data = _t(b)
                # dlc has one bias; the forget offset is a constant: a frozen second bias
                bh = torch.zeros(4 * h)
                bh[h:2 * h] = forget_bias
                self.lstm.bias_hh_l0.data = bh
                self.lstm.bias_hh_l0.requires_grad_(False)
                self.readout = nn.Linear(h, 1)
                self.readout.weight.data = _t(v["readout.W"]).T.contiguous()
                self.readout.bias.data = _t(v["readout.b"])

            def forward(self, x):
                return self.readout(self.lstm(x)[0])

        return Net()


def _pe(t, d):
    import numpy as np
    pos = np.arange(t, dtype=np.float32)[:, None]
    freq = np.exp(np.arange(d // 2, dtype=np.float32) * (-2 * math.log(10000.0) / d))
    ang = pos * freq
    return np.stack([np.sin(ang), np.cos(ang)], -1).reshape(t, d).astype(np.float32)


def eager_transformer(v, layers=2, heads=4):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            E = v["embed.E"]
            d = E.shape[1]
            self.embed = nn.Embedding(*E.shape)
            self.embed.weight.data = _t(E)
            self.blocks = nn.ModuleList()
            for i in range(layers):
                p = f"encoder.{i}."
                ff = v[p + "linear1.W"].shape[1]
                blk = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
                a = p + "self_attn."
                blk.self_attn.in_proj_weight.data = torch.cat(
                    [_t(v[a + f"{n}_proj.W"]).T for n in "qkv"]).contiguous()
                blk.self_attn.in_proj_bias.data = torch.cat([_t(v[a + f"{n}_proj.b"]) for n in "qkv"])
                blk.self_attn.out_proj.weight.data = _t(v[a + "out_proj.W"]).T.contiguous()
                blk.self_attn.out_proj.bias.data = _t(v[a + "out_proj.b"])
                for k in ("linear1", "linear2"):
                    getattr(blk, k).weight.data = _t(v[p + k + ".W"]).T.contiguous()
                    getattr(blk, k).bias.data = _t(v[p + k + ".b"])
                for k in ("norm1", "norm2"):
                    getattr(blk, k).weight.data = _t(v[p + k + ".gamma"])
                    getattr(blk, k).bias.data = _t(v[p + k + ".beta"])
                self.blocks.append(blk)
            self.register_buffer("pe", torch.as_tensor(_pe(512, d)))  # sliced: traceable
            self.classifier = nn.Linear(d, v["classifier.W"].shape[1])
            self.classifier.weight.data = _t(v["classifier.W"]).T.contiguous()
            self.classifier.bias.data = _t(v["classifier.b"])

        def forward(self, x):
            h = self.embed(x) + self.pe[:x.shape[1]]
            pad = x == 0
            for blk in self.blocks:
                h = blk(h, src_key_padding_mask=pad)
            return self.classifier(h)

    return Net()


def eager_step(net, batch, *, kind, lr, wd, schedule, clip):
    import torch
    import torch.nn.functional as F
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    opt = _adam(named, lr, wd)
    x, y = (torch.as_tensor(batch[k]) for k in ("x", "y"))
    state = {"t": 0}

    def step():
        t = state["t"]
        if schedule == "cosine":
            for gr in opt.param_groups:
                gr["lr"] = _cosine(lr, t)
        opt.zero_grad(set_to_none=True)
        out = net(x)
        if kind == "mse":
            loss = F.mse_loss(out, y)
        else:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], clip)
        opt.step()
        state["t"] = t + 1
        return float(loss)

    return step


def torch_export(net, batch, out_fn, path):
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return out_fn(self.net(x))

    x = torch.as_tensor(batch["x"])
    torch.onnx.export(Wrap().eval(), (x,), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "B"}})
    return path


# ---- the models ------------------------------------------------------------------------------

def batch_of(name, rng, T=50):
    import numpy as np
    if name == "mlp":
        return {"x": rng.standard_normal((64, 64)).astype(np.float32),
                "y": rng.integers(0, 10, 64).astype(np.int64)}
    if name == "cnn":
        return {"x": rng.standard_normal((B, 1, 8, 8)).astype(np.float32),
                "y": rng.integers(0, 10, B).astype(np.int64)}
    if name == "lstm":
        t = np.arange(T + 1, dtype=np.float32) * 0.1
        w, ph = rng.uniform(0.5, 2.0, (B, 1)), rng.uniform(0, 2 * np.pi, (B, 1))
        s = np.sin(w * t + ph).astype(np.float32)[..., None]
        return {"x": s[:, :-1], "y": s[:, 1:]}
    x = rng.integers(0, 10, (B, 40)).astype(np.int64)  # transformer: 0 is the blank
    x[:, 0] = 1
    return {"x": x, "y": rng.integers(0, 10, (B, 40)).astype(np.int64)}


CASES = [  # label, spec, hparams, eager builder, loss kind, inference output
    ("mlp", "mlp.dl", None, eager_mlp, "ce", "softmax"),
    ("cnn", "cnn.dl", {"p_drop": 0.0}, eager_cnn, "ce", "softmax"),
    ("lstm T=50", "lstm.dl", None, EagerLSTM, "mse", "id"),
    ("lstm T=200", "lstm.dl", None, EagerLSTM, "mse", "id"),
    ("transformer", "transformer.dl", None, eager_transformer, "ce", "softmax"),
]


def paired(fa, fb, repeat, warmup=5, budget=0.2):
    """Median seconds per call of fa and of fb, their samples interleaved (a, b, a, b,
    ...) so that load from other jobs on a shared machine hits both alike."""
    import statistics
    import time
    for _ in range(warmup):
        fa()
        fb()
    t0 = time.perf_counter()
    fa()
    number = max(1, min(10000, int(budget / max(time.perf_counter() - t0, 1e-7))))
    sa, sb = [], []
    for _ in range(repeat):
        for fn, acc in ((fa, sa), (fb, sb)):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            acc.append((time.perf_counter() - t0) / number)
    def stats(x):
        return {"median_s": statistics.median(x), "min_s": min(x), "max_s": max(x),
                "repeat": repeat, "number": number}
    return stats(sa), stats(sb)


def minor_faults(fn, n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n


def faults_case(label, spec, hp, build, kind, out_kind, repeat, tmp):
    """Only the page faults per dlc torch step (for the run without tune_allocator)."""
    import numpy as np
    batch = batch_of(label.split()[0], np.random.default_rng(0), 200 if "200" in label else 50)
    m2, cfg, g, res, values = dlc_setup(spec, hp)
    step = dlc_torch_step(g, res, values, batch)
    for _ in range(5):
        step()
    return {"model": label, "faults_per_step": minor_faults(step, 20)}


def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_case(label, spec, hp, build, kind, out_kind, repeat, tmp, who):
    """Peak resident memory of one train step over the memory resident before it, in a
    process of its own (`who`: dlc or eager): warm up, return freed memory to the OS
    (malloc_trim), reset the kernel's high-water mark (/proc/self/clear_refs, 5), run
    3 steps, read VmHWM. Both sides hold their params, optimizer slots and batch in the
    baseline; the step's activations, residuals and gradients are what is measured."""
    import ctypes
    import gc

    import numpy as np
    batch = batch_of(label.split()[0], np.random.default_rng(0), 200 if "200" in label else 50)
    m2, cfg, g, res, values = dlc_setup(spec, hp)
    grp = cfg.groups[0]
    if who == "dlc":
        step = dlc_torch_step(g, res, values, batch)
    else:
        net = build({k: np.array(v, copy=True) for k, v in values.items()})
        step = eager_step(net, batch, kind=kind, lr=float(grp.optimizer.kwargs.get("lr", 1e-3)),
                          wd=grp.weight_decay, clip=grp.clip_grad_norm,
                          schedule=grp.schedule.name if grp.schedule else "constant")
    for _ in range(3):
        step()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    for _ in range(3):
        step()
    return {"model": label, "who": who, "peak_step_kib": _rss_kib("VmHWM") - base,
            "baseline_kib": base}


def peak_memory(label: str) -> dict:
    """`peak_case` for dlc and for eager, each in a fresh process (glibc keeps what one
    contender freed, which would flatter the other)."""
    import subprocess
    out = {}
    for who in ("dlc", "eager"):
        p = subprocess.run([sys.executable, __file__, "--peak", who, "--only", label],
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT), DLC_MALLOC="off"))
        if p.returncode:
            return {"error": p.stderr[-300:]}
        out[who] = json.loads(p.stdout.strip().splitlines()[-1])["peak_step_kib"]
    return out


def bench_case(label, spec, hp, build, kind, out_kind, repeat, tmp):
    import numpy as np
    import torch
    rng = np.random.default_rng(0)
    T = 200 if "200" in label else 50
    batch = batch_of(label.split()[0], rng, T)
    m2, cfg, g, res, values = dlc_setup(spec, hp)
    grp = cfg.groups[0]
    lr = float(grp.optimizer.kwargs.get("lr", 1e-3))
    sched = grp.schedule.name if grp.schedule else "constant"

    def eager():
        # copies: eager updates its params in place, and `_t` shares f32 arrays
        net = build({k: np.array(v, copy=True) for k, v in values.items()})
        return net, eager_step(net, batch, kind=kind, lr=lr, wd=grp.weight_decay,
                               schedule=sched, clip=grp.clip_grad_norm)

    r = {"model": label}
    d_step, (net, e_step) = dlc_torch_step(g, res, values, batch), eager()
    r["losses_dlc"] = [d_step() for _ in range(3)]
    r["losses_eager"] = [e_step() for _ in range(3)]
    d_step, (net, e_step) = dlc_torch_step(g, res, values, batch), eager()
    r["eager"], r["dlc_torch"] = paired(e_step, d_step, repeat)
    r["faults_per_step"] = minor_faults(d_step, 20)  # after timeit's warm-up
    r["eager_faults_per_step"] = minor_faults(e_step, 20)
    # the same step lowered without the multi-tensor (`_foreach_*`) optimizer updates
    u_step = dlc_torch_step(g, res, values, batch, foreach=False)
    r["eager_vs_unfused"], r["dlc_torch_unfused"] = paired(e_step, u_step, repeat)
    try:  # `dlc train --compile`: torch.compile of the whole generated step
        import time
        c_step = dlc_torch_step(g, res, values, batch, compile=True)
        t0 = time.perf_counter()
        first = c_step()  # compiles (outside every timed sample): step 0's loss
        r["compile_s"] = time.perf_counter() - t0
        r["losses_dlc_compiled"] = [first, c_step(), c_step()]
        r["eager_vs_compiled"], r["dlc_torch_compiled"] = paired(e_step, c_step, repeat)
    except Exception as e:  # noqa: BLE001
        r["dlc_torch_compiled"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    try:
        r["loop_vs_step"] = dlc_loop_vs_step(spec, hp, max(repeat, 21))  # a ~5% effect: more samples
    except Exception as e:  # noqa: BLE001
        r["loop_vs_step"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    r["peak_step_kib"] = peak_memory(label)
    try:
        # paired with the eager step again: timed apart, load changes between the two
        # moved this ratio by 30% on the shared machine
        r["eager_vs_ort"], r["dlc_ort_train"] = paired(
            e_step, dlc_ort_train(m2, g, res, values, batch), max(repeat, 15))
    except Exception as e:  # noqa: BLE001
        r["dlc_ort_train"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    fn = (lambda z: torch.softmax(z, -1)) if out_kind == "softmax" else (lambda z: z)
    try:
        path = torch_export(net, batch, fn, Path(tmp) / f"{spec}.onnx")
        sess = ort_session(str(path), 1)
        feeds = {"x": batch["x"]}
        r["dlc_onnx_infer"], r["torch_onnx_infer"] = paired(
            dlc_ort_infer(m2, values, batch), lambda: sess.run(None, feeds), max(repeat, 15))
    except Exception as e:  # noqa: BLE001
        r["dlc_onnx_infer"] = r["torch_onnx_infer"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return r


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated labels")
    ap.add_argument("--tune-allocator", action="store_true",
                    help="apply compiler.training.memory.tune_allocator() first (as `dlc train` does)")
    ap.add_argument("--faults-only", action="store_true")
    ap.add_argument("--json", default=None, help="write the list of results here")
    ap.add_argument("--peak", choices=["dlc", "eager"], default=None,
                    help="only the peak memory of one side's step (a child of peak_memory)")
    a = ap.parse_args(argv)
    import tempfile

    import torch
    torch.set_num_threads(1)
    if a.tune_allocator:
        from compiler.training.memory import tune_allocator
        tune_allocator()
    repeat = 3 if a.quick else 7
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if a.only and case[0] not in a.only.split(","):
                continue
            if a.peak:
                r = peak_case(*case, repeat, tmp, a.peak)
            else:
                r = (faults_case if a.faults_only else bench_case)(*case, repeat, tmp)
            print(json.dumps(r, default=str), flush=True)
            out.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    main()
