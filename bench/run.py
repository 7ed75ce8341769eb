"""dlc benchmarks: one script, one machine, one run; writes bench/RESULTS.md.

    python bench/run.py                 # everything on the CPU, writes bench/RESULTS.md
    python bench/run.py --device cuda   # (b) on the GPU as well
    python bench/run.py --quick         # fewer repeats (a smoke run)

Measured on specs/mlp.dl, batch 64, float32: the model as `dlc compile` builds it
(64 -> 128 -> 128 -> 10) for (a), (c), (e); the model of its `train` block
(`hidden = 256`, with the block's Adam, cosine schedule and weight decay) for (b), (d):

(a) `dlc compile specs/mlp.dl --to onnx` as a whole cold process vs a cold process
    running `torch.onnx.export` of the same MLP written in PyTorch, with both of
    torch's exporters (TorchScript-based ``dynamo=False``, ``dynamo=True``); target <= 0.2x.
(b) one training step (Adam, the spec's schedule and weight decay) of dlc's PyTorch
    backend (the lowered train-step graph) vs the same step in eager PyTorch
    (nn.Linear, torch.optim.AdamW, loss.backward()); target <= 1.0x.
(c) onnxruntime inference of dlc's ONNX vs of the torch-exported ONNX; target <= 1.0x.
(d) dlc's ONNX train-step model in onnxruntime vs (b)'s eager step.
(e) forward+backward of specs/mlp.dl on dlc's NumPy backend vs a hand-written NumPy
    MLP step; target <= 1.0x. Plus, per example spec, the gradient graph's node count
    after the passes vs the forward graph's; target <= 3x.

Timings are medians over repeats after warm-up. Every in-process measurement uses the
same number of threads for every contender (``--threads``, default 1: the machine may
be shared, and one thread makes the comparison about the generated code, not about
thread scheduling).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "mlp.dl"
SIZES = dict(d_in=64, hidden=128, classes=10, batch=64)


def _set_threads_env(n: int) -> None:
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(n)


# ---- timing -----------------------------------------------------------------------------

def timeit(fn, *, warmup: int = 20, repeat: int = 15, number: int | None = None,
           sync=None, budget: float = 0.2) -> dict:
    """Median seconds per call of ``fn``: `repeat` samples of `number` calls each."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    if number is None:  # aim for ~budget seconds per sample
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        one = max(time.perf_counter() - t0, 1e-7)
        number = max(1, min(10000, int(budget / one)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - t0) / number)
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "repeat": repeat, "number": number}


def cold(cmd: list[str], repeat: int, env=None) -> dict:
    """Median wall time of a whole process (start to exit)."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        samples.append(dt)
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "repeat": repeat}


# ---- the machine ---------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
    for mod in ("numpy", "torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            info[mod] = f"unavailable ({type(e).__name__})"
    try:
        info["load_avg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


# ---- (a) cold compile ----------------------------------------------------------------------

TORCH_EXPORT_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    import torch.nn.functional as F

    class MLP(nn.Module):
        def __init__(self, d_in={d_in}, hidden={hidden}, classes={classes}):
            super().__init__()
            self.l0 = nn.Linear(d_in, hidden)
            self.l1 = nn.Linear(hidden, hidden)
            self.l2 = nn.Linear(hidden, classes)

        def forward(self, x, y):
            logits = self.l2(F.relu(self.l1(F.relu(self.l0(x)))))
            probs = F.softmax(logits, dim=-1)
            ce = F.cross_entropy(logits, y)
            acc = (logits.argmax(-1) == y).float().mean()
            return probs, ce, acc

    mode, out = sys.argv[1], sys.argv[2]
    model = MLP().eval()
    x = torch.randn({batch}, {d_in})
    y = torch.randint(0, {classes}, ({batch},))
    names = dict(input_names=["x", "y"], output_names=["probs", "ce", "acc"])
    if mode == "dynamo":
        B = torch.export.Dim("B", min=2)
        torch.onnx.export(model, (x, y), out, dynamo=True, opset_version=18,
                          dynamic_shapes={{"x": {{0: B}}, "y": {{0: B}}}}, **names)
    else:
        torch.onnx.export(model, (x, y), out, dynamo=False, opset_version=18,
                          dynamic_axes={{"x": {{0: "B"}}, "y": {{0: "B"}}}}, **names)
''').format(**SIZES)


BREAKDOWN_SCRIPT = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import compiler.api, compiler.commands.compile, compiler.commands.cli, backends.onnx  # noqa: F401
    t1 = time.perf_counter()
    from dsl import parser
    parser._lark()
    t2 = time.perf_counter()
    m = compiler.api.load(sys.argv[1])
    t3 = time.perf_counter()
    from compiler.commands.compile import compile_to
    compile_to(m, "onnx", sys.argv[2])
    t4 = time.perf_counter()
    print(json.dumps({"imports": t1 - t0, "grammar (Lark LALR tables)": t2 - t1,
                      "parse + elaborate (spec and specs/std)": t3 - t2,
                      "init + optimize + ONNX lowering + save": t4 - t3}))
''')


def cold_breakdown(tmp: Path, repeat: int) -> dict:
    """Where a cold `dlc compile --to onnx` spends its time (medians over processes)."""
    script = tmp / "breakdown.py"
    script.write_text(BREAKDOWN_SCRIPT)
    runs = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, str(script), str(SPEC), str(tmp / "b.onnx")],
                           cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))  # the script is in tmp
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-2000:])
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return {k: {"median_s": statistics.median(r[k] for r in runs)} for k in runs[0]}


def bench_cold_compile(tmp: Path, repeat: int, results: dict) -> dict:
    out = {}
    dlc_onnx = tmp / "dlc_mlp.onnx"
    # the same model as the torch script's, so that (c) compares like with like: `dlc
    # compile` builds the train block's sizes (hidden = 256) and only the `output`s
    # unless told, the torch script SIZES (hidden = 128) with probs, ce and acc
    out["dlc"] = cold([sys.executable, "-m", "compiler", "compile", str(SPEC.relative_to(ROOT)),
                       "--to", "onnx", "-o", str(dlc_onnx), "--set", f"hidden={SIZES['hidden']}",
                       "--with-losses"], repeat)
    results["paths"]["dlc_onnx"] = str(dlc_onnx)
    script = tmp / "torch_export.py"
    script.write_text(TORCH_EXPORT_SCRIPT)
    for mode in ("torchscript", "dynamo"):
        path = tmp / f"torch_{mode}.onnx"
        try:
            out[f"torch_{mode}"] = cold([sys.executable, str(script), mode, str(path)], repeat)
            results["paths"][f"torch_{mode}"] = str(path)
        except Exception as e:  # noqa: BLE001
            out[f"torch_{mode}"] = {"error": _short(e)}
    # for context: where a cold process's time goes
    out["python_import_dlc"] = cold([sys.executable, "-c", "import compiler.commands.cli, compiler.api, "
                                     "compiler.commands.compile, backends.onnx"], repeat)
    out["python_import_torch"] = cold([sys.executable, "-c", "import torch"], repeat)
    out["python_empty"] = cold([sys.executable, "-c", "pass"], repeat)
    try:
        results["details"]["(a) where dlc's cold compile goes"] = cold_breakdown(tmp, repeat)
    except Exception as e:  # noqa: BLE001
        results["details"]["(a) where dlc's cold compile goes"] = {"error": {"error": _short(e)}}
    return out


# ---- shared model setup ---------------------------------------------------------------------

def load_mlp():
    from compiler import api
    return api.load(str(SPEC))


def fixed_batch(seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SIZES["batch"], SIZES["d_in"])).astype(np.float32)
    y = rng.integers(0, SIZES["classes"], SIZES["batch"]).astype(np.int64)
    return x, y


HORIZON = 10_000   # the cosine schedule's total steps, for dlc and the eager baseline alike


def train_setup(m):
    """The training engine's step for the spec's train block (the spec's hparams, e.g.
    hidden = 256), its initial values as `dlc train` makes them, and the dense layer
    sizes [(in, out), ...] of the trained model."""
    from types import SimpleNamespace

    from compiler.training import step as training
    from compiler.transform.passes import optimize
    from compiler.training.spec import model_for, parse_train
    cfg = parse_train(m)
    m2 = model_for(m, cfg)
    sg = training.build_step(m2, cfg, cfg.groups[0], HORIZON)
    g, res = optimize(sg.graph, sg.results)
    values = training.initial_values(m2, [sg], 0)
    layers = [tuple(t.shape) for k, t in m2.params.items() if k.endswith(".W")]
    group = cfg.groups[0]
    hyper = dict(group.optimizer.kwargs)
    return SimpleNamespace(model=m2, graph=g, results=res, values=values, layers=layers,
                           lr=float(hyper.get("lr", 1e-3)), weight_decay=group.weight_decay,
                           schedule=group.schedule.name if group.schedule else "constant")


def batch_for(layers, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SIZES["batch"], layers[0][0])).astype(np.float32)
    y = rng.integers(0, layers[-1][1], SIZES["batch"]).astype(np.int64)
    return x, y


# ---- (b) torch train step ---------------------------------------------------------------------

def eager_torch_step(ts, device: str, init: dict | None = None):
    """The spec's step in eager PyTorch: nn.Linear layers with relu, torch.optim.Adam with
    L2 weight decay on the weights only (as the spec's `weight_decay`), the cosine
    schedule, cross-entropy and accuracy. ``init``: start from dlc's parameter values."""
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    mods = []
    for i, (a, b) in enumerate(ts.layers):
        mods.append(nn.Linear(a, b))
        if i < len(ts.layers) - 1:
            mods.append(nn.ReLU())
    net = nn.Sequential(*mods).to(device)
    if init is not None:
        with torch.no_grad():
            for i, lin in enumerate(m for m in net if isinstance(m, nn.Linear)):
                lin.weight.copy_(torch.as_tensor(init[f"dense{i}.W"]).T)
                lin.bias.copy_(torch.as_tensor(init[f"dense{i}.b"]))
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": ts.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=ts.lr)
    x, y = batch_for(ts.layers)
    xt, yt = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    state = {"t": 0}
    cosine = ts.schedule == "cosine"

    def step():
        t = state["t"]
        if cosine:
            lr = 0.5 * ts.lr * (1 + math.cos(math.pi * min(t, HORIZON) / HORIZON))
            for gr in opt.param_groups:
                gr["lr"] = lr
        opt.zero_grad(set_to_none=True)
        logits = net(xt)
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = (logits.argmax(-1) == yt).float().mean()
        state["t"] = t + 1
        return loss, acc

    step.net = net
    return step


def dlc_torch_step(ts, device: str):
    """The lowered train-step graph as a torch module, iterated on its own outputs, as
    `dlc train --backend torch` runs it."""
    import numpy as np
    import torch

    from backends import torch as tb
    module = tb.lower(ts.graph, ts.results, dtype="f32", device=device)
    x, y = batch_for(ts.layers)
    names = {ts.graph.node(n).attrs["name"] for n in ts.graph.inputs + ts.graph.params
             + ts.graph.states}
    feeds = {k: torch.as_tensor(np.asarray(v), device=device)
             for k, v in ts.values.items() if k in names}
    feeds["x"], feeds["y"] = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    carried = [k for k in ts.results if k.startswith("new:")]
    state = {"t": 0}

    @torch.no_grad()
    def step():
        feeds["step"] = torch.tensor(float(state["t"]), device=device)
        out = module(feeds)
        for k in carried:
            feeds[k[4:]] = out[k]
        state["t"] += 1
        return out

    step.feeds = feeds
    return step


def same_computation(ts, steps: int = 3) -> float:
    """Max |param difference| after `steps` steps of dlc's torch step and the eager step
    from the same start: the two contenders compute the same thing."""
    import torch
    dlc = dlc_torch_step(ts, "cpu")
    eager = eager_torch_step(ts, "cpu", init=ts.values)
    for _ in range(steps):
        dlc()
        eager()
    lins = [m for m in eager.net if isinstance(m, torch.nn.Linear)]
    worst = 0.0
    for i, lin in enumerate(lins):
        worst = max(worst, float((dlc.feeds[f"dense{i}.W"] - lin.weight.detach().T).abs().max()),
                    float((dlc.feeds[f"dense{i}.b"] - lin.bias.detach()).abs().max()))
    return worst


def bench_train_torch(ts, device: str, repeat: int) -> dict:
    import torch
    sync = torch.cuda.synchronize if device == "cuda" else None
    out = {"eager": timeit(eager_torch_step(ts, device), repeat=repeat, sync=sync)}
    try:
        out["dlc"] = timeit(dlc_torch_step(ts, device), repeat=repeat, sync=sync)
    except Exception as e:  # noqa: BLE001
        out["dlc"] = {"error": _short(e)}
    if device == "cpu":
        out["max_param_diff_after_3_steps"] = same_computation(ts)
    out["layers"] = str(ts.layers)
    return out


# ---- (c) onnxruntime inference ------------------------------------------------------------------

def ort_session(path_or_model, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    data = path_or_model if isinstance(path_or_model, (str, bytes)) else \
        path_or_model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def bench_ort_inference(paths: dict, threads: int, repeat: int) -> dict:
    x, y = fixed_batch()
    out = {}
    for key in ("dlc_onnx", "torch_torchscript", "torch_dynamo"):
        if key not in paths:
            out[key] = {"error": "no model (its export failed)"}
            continue
        try:
            sess = ort_session(paths[key], threads)
            names = [i.name for i in sess.get_inputs()]
            feeds = {n: v for n, v in (("x", x), ("y", y)) if n in names}
            outs = [o.name for o in sess.get_outputs()]
            out[key] = timeit(lambda: sess.run(outs, feeds), repeat=repeat)
            out[key]["outputs"] = outs
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": _short(e)}
    return out


# ---- (d) the ONNX train step in onnxruntime ----------------------------------------------------

def ort_train_step(model, init: dict, threads: int):
    """A plain onnxruntime loop over an exported train step: feeds `init` (values and a
    batch), then feeds each ``new:X`` back as ``X``. Returns the one-step callable."""
    import numpy as np
    sess = ort_session(model, threads)
    outs = [o.name for o in sess.get_outputs()]
    dtypes = {i.name: i.type for i in sess.get_inputs()}
    feeds = {k: np.asarray(init[k], np.int64 if "int64" in dtypes[k] else
                           bool if "bool" in dtypes[k] else np.float32)
             for k in dtypes if k in init}
    carried = [(i, o[4:]) for i, o in enumerate(outs) if o.startswith("new:") and o[4:] in feeds]
    state = {"t": 0}

    def step():
        feeds["step"] = np.asarray(float(state["t"]), np.float32)
        r = sess.run(outs, feeds)
        for i, name in carried:
            feeds[name] = r[i]
        state["t"] += 1

    return step


def bench_ort_train(ts, threads: int, repeat: int) -> dict:
    from backends import onnx as ob
    model = ob.lower(ts.graph, ts.results, dtype="f32", params_as="inputs", name=ts.model.name)
    x, y = batch_for(ts.layers)
    step = ort_train_step(model, {**ts.values, "x": x, "y": y}, threads)
    return {"dlc_onnx_train_step": timeit(step, repeat=repeat)}


# ---- (e) NumPy forward+backward -------------------------------------------------------------------

def numpy_hand_step(params: dict):
    """A hand-written NumPy MLP: forward, softmax cross-entropy, backward (float32)."""
    import numpy as np
    x, y = fixed_batch()
    W0, b0 = params["dense0.W"], params["dense0.b"]
    W1, b1 = params["dense1.W"], params["dense1.b"]
    W2, b2 = params["dense2.W"], params["dense2.b"]
    n = x.shape[0]
    rows = np.arange(n)

    def step():
        z0 = x @ W0 + b0
        h0 = np.maximum(z0, 0)
        z1 = h0 @ W1 + b1
        h1 = np.maximum(z1, 0)
        logits = h1 @ W2 + b2
        mx = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - mx)
        s = e.sum(axis=1, keepdims=True)
        logp = logits - mx - np.log(s)
        loss = -logp[rows, y].mean()
        d = e / s
        d[rows, y] -= 1
        d /= n
        gW2 = h1.T @ d
        gb2 = d.sum(0)
        dh1 = (d @ W2.T) * (z1 > 0)
        gW1 = h0.T @ dh1
        gb1 = dh1.sum(0)
        dh0 = (dh1 @ W1.T) * (z0 > 0)
        gW0 = x.T @ dh0
        gb0 = dh0.sum(0)
        return loss, gW0, gb0, gW1, gb1, gW2, gb2

    return step


def bench_numpy(m, repeat: int) -> dict:
    import numpy as np
    from backends import numpy as nb
    from compiler.transform.passes import optimize
    params = {k: np.asarray(v, np.float32) for k, v in m.init_params(0).items()}
    x, y = fixed_batch()
    g, res = m.gradient_results("ce")
    og, ores = optimize(g, res)
    prog = nb.lower(og, ores, dtype="f32")
    feeds = {**params, "x": x, "y": y}
    hand = numpy_hand_step(params)
    # sanity: the two compute the same gradients
    got, want = prog(feeds), hand()
    names = ["dense0.W", "dense0.b", "dense1.W", "dense1.b", "dense2.W", "dense2.b"]
    worst = max(float(np.max(np.abs(got["grad:" + k] - w))) for k, w in zip(names, want[1:]))
    return {"dlc": timeit(lambda: prog(feeds), repeat=repeat), "hand": timeit(hand, repeat=repeat),
            "max_abs_grad_diff": worst}


def graph_sizes() -> list[dict]:
    from compiler import api
    from compiler.transform.passes import count_nodes, optimize
    rows = []
    for spec in sorted((ROOT / "specs").glob("*.dl")):
        try:
            prog_models = _models_of(spec)
        except Exception as e:  # noqa: BLE001
            rows.append({"spec": spec.name, "error": _short(e)})
            continue
        for model_name in prog_models:
            try:
                m = api.load(str(spec), model=model_name)
                for loss in m.losses:
                    g = m.graph
                    fg, fres = optimize(g, {loss: g.outputs[loss]})
                    gg, gres = m.gradient_results(loss)
                    og, ores = optimize(gg, gres)
                    f_n = count_nodes(fg, fres.values())
                    g_n = count_nodes(og, ores.values())
                    rows.append({"spec": spec.name, "model": m.name, "loss": loss,
                                 "forward_nodes": f_n, "gradient_nodes": g_n,
                                 "ratio": g_n / f_n})
            except Exception as e:  # noqa: BLE001
                rows.append({"spec": spec.name, "model": model_name, "error": _short(e)})
    return rows


def _models_of(spec: Path) -> list:
    """Every model of a spec (those without a loss are skipped by the caller)."""
    from compiler.elaborate import load_program
    return list(load_program(str(spec)).models)


# ---- report --------------------------------------------------------------------------------------

def _short(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) < 600 else s[:600] + "..."


def _ms(d: dict) -> str:
    if not d or "error" in d:
        return "n/a"
    v = d["median_s"]
    return f"{v * 1e3:.1f} ms" if v >= 0.1 else (f"{v * 1e3:.3f} ms" if v >= 1e-4 else f"{v * 1e6:.1f} us")


def _ratio(a: dict, b: dict):
    if not a or not b or "error" in a or "error" in b:
        return None
    return a["median_s"] / b["median_s"]


def _verdict(r, target) -> str:
    if r is None:
        return "not measured"
    return "met" if r <= target else "**missed**"


def zoo_models(quick: bool):
    """bench/models.py in two fresh processes: everything with the allocator tuned as
    `dlc train` tunes it, then only the page faults with glibc's defaults."""
    out = []
    for extra in (["--tune-allocator"], ["--faults-only", "--quick"]):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, str(ROOT / "bench" / "models.py"), "--json", f.name] + extra
            if quick and "--quick" not in extra:
                cmd.append("--quick")
            env = dict(os.environ, PYTHONPATH=str(ROOT), DLC_MALLOC="" if len(extra) == 1 else "off")
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode:
                out.append([{"model": "error", "error": p.stderr[-500:]}])
                continue
            out.append(json.loads(Path(f.name).read_text()))
    return out[0], out[1]


def render_models(res: dict) -> list[str]:
    rows = res.get("models") or []
    if not rows:
        return []
    faults0 = {r["model"]: r.get("faults_per_step") for r in res.get("models_faults_default") or []}
    L = ["", "## Zoo models vs hand-written eager PyTorch (bench/models.py)", "",
         "Each ratio is dlc / eager (`nn.Linear`, `nn.Conv2d`, `nn.LSTM`, "
         "`nn.TransformerEncoderLayer`, `torch.optim.Adam`), same sizes as the spec's train "
         "block, same starting weights, batch 64 (mlp) or 32, 1 thread, in one run. ORT "
         "inference compares dlc's ONNX with `torch.onnx.export` of the eager model "
         "(TorchScript exporter), same outputs. Page faults are minor faults per dlc step "
         "(`resource.getrusage`) with glibc's defaults and with `compiler.training.memory."
         "tune_allocator()` (what `dlc train` applies; `DLC_MALLOC=off` opts out).", "",
         "The torch.compile column is `dlc train --compile`'s step (its compile time in "
         "parentheses); `dlc train` round / step is one round of the Trainer's loop (noise, "
         "the step, the loss read and checked, the whole state checked every 16 rounds, "
         "bookkeeping) over the bare generated step on the same batch (target <= 1.05x). "
         "Peak step memory is the resident memory one train step adds over what is resident "
         "before it (params, slots, batch), each side in a fresh process "
         "(`bench/models.py --peak`: malloc_trim, /proc/self/clear_refs, VmHWM).", "",
         "| model | eager step | dlc torch step | ratio | torch.compile step (compile) | ratio | "
         "`dlc train` round / step | dlc ONNX train step (ORT) | ratio | "
         "ORT inference dlc / torch-exported | faults/step default → tuned (eager) | "
         "peak step memory dlc / eager | losses over 3 steps: dlc / eager |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "error" in r:
            L.append(f"| {r['model']} | error: {r['error'][:200]} |||||||||||||")
            continue
        ld = ", ".join(f"{x:.6f}" for x in r["losses_dlc"])
        le = ", ".join(f"{x:.6f}" for x in r["losses_eager"])
        infer = _ratio(r.get("dlc_onnx_infer"), r.get("torch_onnx_infer"))
        comp = r.get("dlc_torch_compiled")
        cs = r.get("compile_s")
        comp_cell = (f"{_ms(comp)} ({cs:.1f} s)" if isinstance(cs, (int, float)) else _ms(comp))
        lvs = r.get("loop_vs_step") or {}
        loop_ratio = _ratio(lvs.get("loop"), lvs.get("step")) if "loop" in lvs else None
        loop_cell = "n/a" if loop_ratio is None else (
            f"**{loop_ratio:.2f}x**" if loop_ratio > 1.05 else f"{loop_ratio:.2f}x")
        L.append(f"| {r['model']} | {_ms(r['eager'])} | {_ms(r['dlc_torch'])} | "
                 f"{_fmt_ratio(_ratio(r['dlc_torch'], r['eager']))} | {comp_cell} | "
                 f"{_fmt_ratio(_ratio(comp, r.get('eager_vs_compiled') or r['eager']))} | {loop_cell} | {_ms(r.get('dlc_ort_train'))} | "
                 f"{_fmt_ratio(_ratio(r.get('dlc_ort_train'), r.get('eager_vs_ort') or r['eager']))} | "
                 f"{_fmt_ratio(infer)} ({_ms(r.get('dlc_onnx_infer'))} / {_ms(r.get('torch_onnx_infer'))}) | "
                 f"{faults0.get(r['model'], '?')} → {r['faults_per_step']} ({r['eager_faults_per_step']}) | "
                 f"{_peak_cell(r.get('peak_step_kib'))} | {ld} / {le} |")
    return L


def _peak_cell(p):
    if not isinstance(p, dict) or "dlc" not in p:
        return "n/a" if p is None else f"error: {str(p.get('error', p))[:80]}"
    return (f"{p['dlc'] / 1024:.1f} MB / {p['eager'] / 1024:.1f} MB "
            f"({p['dlc'] / max(p['eager'], 1):.2f}x)")


def _fmt_ratio(x):
    return "n/a" if x is None else (f"**{x:.2f}x**" if x > 1.0 else f"{x:.2f}x")


def render(res: dict) -> str:
    m = res["machine"]
    L = ["# dlc benchmarks", "",
         f"Generated by `python bench/run.py{' ' + ' '.join(res['argv']) if res['argv'] else ''}` "
         f"on {m['date']}. Sizes: specs/mlp.dl as compiled, 64 -> 128 -> 128 -> 10, for "
         f"(a), (c), (e); its `train` block's model (`hidden = 256`: "
         f"{res['details'].get('(b) torch train step (cpu)', {}).get('layers', '?')}) for (b), "
         f"(d); batch {SIZES['batch']}, float32. Times are medians over repeats after warm-up; in-process "
         f"measurements use {res['threads']} thread(s) for every contender. The machine may be "
         "shared with other jobs (see the load average): the contenders of each ratio are "
         "measured back to back in the same run, so ratios are steadier than absolute "
         "times.", "",
         "## Machine", "",
         f"* CPU: {m['cpu']} ({m['cores']} logical cores visible; load average at start "
         f"{m.get('load_avg', '?')})",
         f"* Python {m['python']} on {m['platform']}",
         f"* numpy {m['numpy']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime "
         f"{m['onnxruntime']}, onnxscript {m['onnxscript']}",
         f"* device for (b): {res['device']}", "",
         "## Summary", "",
         "| | measurement | dlc | baseline | ratio | target | |",
         "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    rows = res["summary"]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        L.append(f"| {r['id']} | {r['what']} | {r['dlc']} | {r['base']} | {ratio} | "
                 f"<= {r['target']}x | {_verdict(r['ratio'], r['target'])} |")
    L += render_models(res)
    L += ["", "## Gradient graph size (nodes after the passes)", "",
          "| spec | model | loss | forward | forward + gradient | ratio | target <= 3x |",
          "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for r in res["graph_sizes"]:
        if "error" in r:
            L.append(f"| {r['spec']} | {r.get('model') or ''} | | | | | error: {r['error']} |")
        else:
            L.append(f"| {r['spec']} | {r['model']} | {r['loss']} | {r['forward_nodes']} | "
                     f"{r['gradient_nodes']} | {r['ratio']:.2f}x | "
                     f"{'met' if r['ratio'] <= 3 else '**missed**'} |")
    L += ["", "## Details", ""]
    for k, v in res["details"].items():
        L.append(f"* **{k}**: " + ", ".join(
            f"{n}: {_ms(d) if isinstance(d, dict) else d}"
            + (f" (error: {d['error']})" if isinstance(d, dict) and "error" in d else "")
            for n, d in v.items()))
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"* {n}" for n in res["notes"]]
    return "\n".join(L) + "\n"


def notes(res: dict) -> list[str]:
    """What each missed target would need (from profiling these measurements)."""
    out = []
    missed = {r["id"] for r in res["summary"] if r["ratio"] is not None and r["ratio"] > r["target"]}
    d = res["details"]
    if "a" in missed:
        bd = d.get("(a) where dlc's cold compile goes", {})
        parts = ", ".join(f"{k} {_ms(v)}" for k, v in bd.items() if isinstance(v, dict)
                          and "median_s" in v)
        out.append("(a) missed: a cold `dlc compile` is Python start-up plus " + (parts or "?")
                   + ". The dlc side compiles the same model as the torch script (hidden = 128, "
                   "with its losses and metric: `--set hidden=128 --with-losses`), a little more "
                   "work than the inference-only model it compiled before; the LALR tables are "
                   "built at install time and the standard library's AST is cached, so what is "
                   "left is imports (see `python_import_dlc`) and elaboration.")
    if "b" in missed:
        out.append("(b) missed: the optimizer's per-parameter updates run as grouped "
                   "`torch._foreach_*` calls (backends/torch/foreach.py) and the loss as a "
                   "fused `F.cross_entropy`; what is left is one tensor op per remaining "
                   "graph node (the L2 term, the schedule's scalar ops). `dlc train "
                   "--compile` (the torch.compile column of the zoo table) removes it.")
    if "c" in missed:
        out.append("(c) missed: both models are compiled at the same sizes with the same "
                   "outputs (`--set hidden=128 --with-losses`: probs, ce and acc). After "
                   "onnxruntime's own optimisation dlc's graph and the torch export run the "
                   "same Gemm/Relu/Softmax kernels (dlc now writes `Gemm` itself, "
                   "backends/onnx/peephole.py); what is left is dlc's loss semantics: the "
                   "out-of-range label guard of the cross-entropy and a mean as ReduceSum / "
                   "count (an empty batch gives NaN, not an error), a few nodes the torch "
                   "export does not have. On this shared machine the row moves by ~5% "
                   "between runs (bench/onnx_infer.py measures the peepholes alone).")
    if "e" in missed:
        out.append("(e) missed: the loss and its VJP already share one softmax "
                   "(`sce_parts`), dead temporaries are written in place and transposes "
                   "inlined; what is left is per-call overhead the hand-written step skips "
                   "(each feed's `np.asarray(..., dtype=...)`, relu's VJP as a bit mask that "
                   "keeps a NaN cotangent at an inactive unit at 0 where the hand-written "
                   "`g * (z > 0)` would not).")
    if res.get("device") != "cuda":
        out.append("(b) on a GPU: not measured in this run (`python bench/run.py --device cuda` "
                   "adds it on a machine with CUDA).")
    big = [r for r in res.get("graph_sizes", []) if "ratio" in r and r["ratio"] > 3]
    if big:
        names = ", ".join(f"{r['spec']} ({r['ratio']:.2f}x)" for r in big)
        out.append(f"Gradient graph size over 3x for {names}: a max reduction's VJP "
                   "splits the cotangent evenly among ties (as JAX and torch's amax do), "
                   "about seven nodes per max (the mask, its count, the division); layer "
                   "norm and attention have fused VJP composites now (`layer_norm_grad`, "
                   "`attention_grad`), and the recurrent models' backward scans read "
                   "residuals and hoist the weight gradients.")
    out += model_notes(res)
    return out


def model_notes(res: dict) -> list[str]:
    rows = {r["model"]: r for r in res.get("models") or [] if "error" not in r}
    out = []
    lstm = [r for k, r in rows.items() if k.startswith("lstm")]
    if lstm:
        ratios = ", ".join(f"{r['model']}: {_ratio(r['dlc_torch'], r['eager']):.2f}x" for r in lstm)
        out.append(f"LSTM ({ratios}, PyTorch backend): the std `LSTM` layer is the "
                   "composite `lstm` (compiler/primitives/recurrent.py): its decomposition is "
                   "the `LSTMCell` scan (NumPy runs it, and ONNX in float64), its torch "
                   "lowering `torch._VF.lstm`, and its fused VJP one `torch.autograd.grad` on "
                   "the forward's tape (no second forward). On ONNX in float32 the forward is "
                   "onnxruntime's `LSTM` op (gates reordered to i, o, f, c, weights transposed, "
                   "the forget bias folded into Wb) and `lstm_grad` a backward `Scan` of the "
                   "recurrence alone (backends/onnx/rnn_grad.py): gate pre-activations, "
                   "per-step factors and the weight gradients are batched over [T*B, .] "
                   "outside it. The torch.compile column graph-breaks at the fused kernel.")
    t200 = rows.get("lstm T=200")
    if t200 and (_ratio(t200.get("dlc_ort_train"), t200.get("eager_vs_ort") or t200["eager"]) or 0) > 1.0:
        out.append("lstm T=200, ONNX train step missed: the profile (the step cut off after "
                   "each stage, cumulative, 1 thread, quiet machine, bench/rnn_onnx.py): "
                   "forward with the `LSTM` op 1.9 ms (the op alone 1.8 ms, torch's forward "
                   "1.5 ms); the gate pre-activations of all steps recomputed at once +0.4 ms; "
                   "the per-step cell-state `Scan` +1 ms; the backward's per-step factors "
                   "+0.5 ms; the backward `Scan` +3.4 ms (alone on its inputs 1.8 ms: ~9 us a "
                   "step for 6 nodes, onnxruntime's per-iteration cost); weight gradients and "
                   "Adam the rest (~8.8 ms against eager's 6.7 ms). The recompute and the "
                   "cell Scan exist because the ONNX `LSTM` op outputs the hidden states but "
                   "neither the gates nor the cell states; a forward `Scan` that outputs them "
                   "(2.6 ms against the op's 1.5 ms) would save ~1.8 ms, ~1.1x, still above "
                   "1.0x: the backward recurrence is a per-step matrix product that no ONNX "
                   "op fuses.")
    c = rows.get("cnn")
    if c:
        out.append("cnn: profiled against eager; the gap was the max-pool VJP (it "
                   "re-ran the forward pooling: 400 `max_pool2d_with_indices` calls against "
                   "eager's 200), not the convolutions (dlc's two VJP convolutions cost "
                   "~49 ms per 100 steps, eager's `convolution_backward` ~65 ms). The "
                   "pooling now returns its argmax indices once and the gradient routes "
                   "through `aten.max_pool2d_with_indices_backward`.")
    t = rows.get("transformer")
    if t:
        out.append("transformer: layer norm, softmax cross-entropy and attention run as "
                   "`F.layer_norm`, `F.cross_entropy`, `F.scaled_dot_product_attention`, and "
                   "their VJPs as torch's fused backwards on the forward's saved statistics "
                   "or autograd tape (`aten.native_layer_norm_backward`, the SDPA backward); "
                   "the page faults (thousands per step with glibc's defaults) are gone with "
                   "`tune_allocator` (`dlc train` applies it), and the generated step frees "
                   "each temporary after its last use (backends/liveness.py: its peak memory "
                   "was 4.3x eager's before). ORT inference: onnxruntime fuses Add + "
                   "LayerNormalization into its contrib `SkipLayerNormalization` when shapes "
                   "are known (dlc's `value_info`), a kernel 3.5-6x slower than the pair on "
                   "the CPU; dlc writes that Add as `Sum`, which it does not fuse "
                   "(docs/ort_bugs.md).")
    out.append("Noise: on this shared 2-core host the same ratio moves by about ±5% from "
               "run to run (three runs of this script today: lstm T=200 torch step 1.13x, "
               "1.04x, 1.05x before and after the matmul fix; mlp loop 1.08x, 1.12x, 1.06x); "
               "a row within 5% of its target is within that noise, the ONNX LSTM T = 200 "
               "train step and (e) are not. (e)'s two sides are timed apart, not "
               "interleaved: interleaved 1-thread runs measured 1.02-1.04x.")
    out.append("The zoo-model table comes from `bench/models.py` in the same run "
               "(eager and dlc samples interleaved); torch.compile times include inductor's "
               "C++ compilation with a cold cache.")
    out.append("Not done: a fused GRU on the CPU for torch (torch's CPU GRU kernel is "
               "itself a per-step loop and measured slower than dlc's scan, so the std GRU "
               "stays a scan there; ONNX runs the `GRU` op), batch norm as a composite (no "
               "zoo model of this table uses it), and the CUDA rows (no GPU was lent).")
    return out


def _write_keeping_scale(path: Path, text: str) -> None:
    """Write the report, keeping the section bench/scale.py wrote into the old file
    (between its markers): the two scripts share RESULTS.md."""
    begin, end = "<!-- bench/scale.py: begin -->", "<!-- bench/scale.py: end -->"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old and begin not in text:
        block = begin + old.split(begin, 1)[1].split(end, 1)[0] + end
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--cold-repeat", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--from-json", default=None,
                    help="re-render RESULTS.md from a --json file, measuring nothing")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        res["notes"] = notes(res)
        _write_keeping_scale(Path(args.out), render(res))
        return 0
    _set_threads_env(args.threads)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    repeat = 5 if args.quick else 15
    cold_repeat = args.cold_repeat or (2 if args.quick else 5)

    import torch
    torch.set_num_threads(args.threads)
    res = {"argv": argv, "threads": args.threads, "device": args.device, "machine": machine(),
           "paths": {}, "details": {}, "summary": [], "notes": []}
    m = load_mlp()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)

        def attempt(key, fn, *a):
            print(f"[bench] {key} ...", file=sys.stderr, flush=True)
            try:
                res["details"][key] = fn(*a)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                res["details"][key] = {"error": {"error": _short(e)}}

        attempt("(a) cold process", bench_cold_compile, tmp, cold_repeat, res)
        ts = train_setup(m)
        attempt("(b) torch train step (cpu)", bench_train_torch, ts, "cpu", repeat)
        if args.device == "cuda":
            attempt("(b) torch train step (cuda)", bench_train_torch, ts, "cuda", repeat)
        attempt("(c) onnxruntime inference", bench_ort_inference, res["paths"], args.threads, repeat)
        attempt("(d) onnxruntime train step", bench_ort_train, ts, args.threads, repeat)
        attempt("(e) numpy forward+backward", bench_numpy, m, repeat)
    print("[bench] zoo models (bench/models.py) ...", file=sys.stderr, flush=True)
    res["models"], res["models_faults_default"] = zoo_models(args.quick)
    print("[bench] graph sizes ...", file=sys.stderr, flush=True)
    res["graph_sizes"] = graph_sizes()

    d = res["details"]
    a, b = d.get("(a) cold process", {}), d.get("(b) torch train step (cpu)", {})
    c, dd = d.get("(c) onnxruntime inference", {}), d.get("(d) onnxruntime train step", {})
    e = d.get("(e) numpy forward+backward", {})
    S = res["summary"]
    for mode, label in (("torchscript", "TorchScript exporter, dynamo=False"),
                        ("dynamo", "dynamo exporter, dynamo=True")):
        S.append({"id": "a", "what": f"cold `dlc compile --to onnx` vs cold `torch.onnx.export` "
                  f"({label})", "dlc": _ms(a.get("dlc")), "base": _ms(a.get(f"torch_{mode}")),
                  "ratio": _ratio(a.get("dlc"), a.get(f"torch_{mode}")), "target": 0.2})
    S.append({"id": "b", "what": "train step, dlc PyTorch backend vs eager PyTorch (CPU)",
              "dlc": _ms(b.get("dlc")), "base": _ms(b.get("eager")),
              "ratio": _ratio(b.get("dlc"), b.get("eager")), "target": 1.0})
    if args.device == "cuda":
        bc = d.get("(b) torch train step (cuda)", {})
        S.append({"id": "b", "what": "train step, dlc PyTorch backend vs eager PyTorch (CUDA)",
                  "dlc": _ms(bc.get("dlc")), "base": _ms(bc.get("eager")),
                  "ratio": _ratio(bc.get("dlc"), bc.get("eager")), "target": 1.0})
    for mode in ("torchscript", "dynamo"):
        S.append({"id": "c", "what": f"onnxruntime inference, dlc ONNX vs torch-exported ONNX "
                  f"({mode})", "dlc": _ms(c.get("dlc_onnx")), "base": _ms(c.get(f"torch_{mode}")),
                  "ratio": _ratio(c.get("dlc_onnx"), c.get(f"torch_{mode}")), "target": 1.0})
    S.append({"id": "d", "what": "train step, dlc ONNX train-step model in onnxruntime vs eager "
              "PyTorch (b)", "dlc": _ms(dd.get("dlc_onnx_train_step")), "base": _ms(b.get("eager")),
              "ratio": _ratio(dd.get("dlc_onnx_train_step"), b.get("eager")), "target": 1.0})
    S.append({"id": "e", "what": "forward+backward, dlc NumPy backend vs hand-written NumPy",
              "dlc": _ms(e.get("dlc")), "base": _ms(e.get("hand")),
              "ratio": _ratio(e.get("dlc"), e.get("hand")), "target": 1.0})
    res["notes"] = notes(res)
    text = render(res)
    _write_keeping_scale(Path(args.out), text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
