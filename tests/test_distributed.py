"""Data-parallel `dlc train` on torch.distributed (gloo, 2 CPU ranks), through the real
launcher (`python -m torch.distributed.run`, i.e. torchrun, and `dlc train --nproc`).

Each launch costs a few seconds (two Python processes importing torch), so the
specs are tiny: a 16-unit MLP on digits, 20 steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch.distributed")

from compiler import api  # noqa: E402
from compiler.commands.cli import main  # noqa: E402
from compiler.training import checkpoint  # noqa: E402
from compiler.training.distributed import Comm, strip_nproc  # noqa: E402
from compiler.training.spec import model_for, parse_train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = """
model M(hidden = 16) {
  input x: f32[B, 64]
  input y: i64[B]
  logits = x |> Dense(hidden, relu) |> Dense(10)
  loss ce = cross_entropy(logits, y)
  metric acc = accuracy(logits, y)
}

train M on digits {
  split 0.8 0.1 0.1
  batch 16
  epochs 1
  OPTIMIZER
}
"""
ADAM = "optimizer adam(lr = 1e-2)\n  schedule cosine\n  weight_decay 1e-4\n  clip_grad_norm 0.5"
SVRG = "optimizer svrg(lr = 5e-2)"


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def torchrun(*args, timeout=180, env=None):
    """`torchrun --standalone --nproc_per_node 2 ARGS`, as a user would type it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**_env(), **(env or {})})


def spec(tmp_path, opt=ADAM) -> Path:
    p = tmp_path / "m.dl"
    p.write_text(SPEC.replace("OPTIMIZER", opt))
    return p


def tensors(run: Path) -> dict:
    # the training state (`train/` namespace): what a resume continues from
    return checkpoint.namespace(checkpoint.load(run / "checkpoint.safetensors")[0], checkpoint.TRAIN)


@pytest.mark.parametrize("opt", [ADAM, SVRG], ids=["adam-clip-cosine", "svrg"])
def test_two_ranks_equal_one_rank_with_the_global_batch(tmp_path, capsys, opt):
    """2 ranks x 8 rows == 1 rank x 16 rows (the spec's global batch) after 20 steps, on
    the same samples, in float64: 1e-6 leaves room only for the order of float sums
    (measured: ~1e-16). A missing or wrong reduction (a sum, no division, one rank's
    gradient, an unclipped or per-rank-clipped gradient) is off by far more."""
    s = spec(tmp_path, opt)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", str(s), "--steps", "20", "--dtype", "f64", "--quiet",
                 "--out", str(one)]) == 0
    capsys.readouterr()
    res = torchrun("-m", "compiler", "train", s, "--steps", "20", "--dtype", "f64",
                   "--out", two, "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.stdout.count('"model"') == 1, "only rank 0 reports"
    assert payload["processes"] == 2 and payload["steps"] == 20
    a, b = tensors(one), tensors(two)
    assert sorted(a) == sorted(b)
    for k in a:
        # (SVRG's first snapshot is taken before any step, of the f32 initial values)
        assert a[k].dtype == np.float64 or k.startswith(("snapshot:", "opt.")), k
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    # and the run really moved: 20 steps are far from the start
    m = api.load(str(s))
    init = model_for(m, parse_train(m)).init_params(0)
    assert max(float(np.abs(a[k] - init[k]).max()) for k in init) > 1e-2


def test_nproc_resume_matches_one_uninterrupted_run(tmp_path, capsys):
    """`dlc train --nproc 2` for 10 steps, then `--resume` to 20, equals the same in one
    process (a cosine schedule's horizon is the run's length, so the reference is
    resumed too); only rank 0 writes the run directory and prints the summary."""
    s = spec(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    for extra in (["--steps", "10"], ["--steps", "20", "--resume"]):
        assert main(["train", str(s), "--dtype", "f64", "--quiet", "--out", str(one),
                     *extra]) == 0
    capsys.readouterr()
    base = [sys.executable, "-m", "compiler", "train", str(s), "--dtype", "f64",
            "--out", str(two), "--nproc", "2"]
    r = subprocess.run(base + ["--steps", "10"], capture_output=True, text=True,
                       timeout=180, env=_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("trained M") == 1
    assert sorted(p.name for p in two.iterdir()) == [
        "checkpoint.safetensors", "curves.png", "metrics.csv", "model.onnx"]
    r = subprocess.run(base + ["--steps", "20", "--resume"], capture_output=True, text=True,
                       timeout=180, env=_env())
    assert r.returncode == 0, r.stderr
    a, b = tensors(one), tensors(two)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)


def test_a_dead_rank_fails_the_job(tmp_path):
    """Rank 1 exits at round 3: the job fails (no hang) and the launcher names it."""
    t = time.monotonic()
    res = torchrun(ROOT / "tests" / "ddp_fault.py", "train", spec(tmp_path), "--steps", "20",
                   "--quiet", "--out", tmp_path / "run", "--dist-timeout", "30",
                   env={"DLC_FAULT": "die"}, timeout=120)
    assert res.returncode != 0
    assert "exitcode  : 7" in res.stderr and "rank      : 1" in res.stderr
    assert time.monotonic() - t < 100


def test_a_stuck_rank_times_out_with_a_clear_message(tmp_path):
    """Rank 1 hangs at round 3: rank 0's all-reduce gives up after the process-group
    timeout (3 s here) with a message naming the cause, and the job fails."""
    res = torchrun(ROOT / "tests" / "ddp_fault.py", "train", spec(tmp_path), "--steps", "20",
                   "--quiet", "--out", tmp_path / "run", "--dist-timeout", "3",
                   env={"DLC_FAULT": "hang"}, timeout=120)
    assert res.returncode != 0
    assert "rank 0 of 2: an all-reduce failed, so another rank died or stopped " \
           "answering (process-group timeout 3 s" in res.stderr


def test_onnx_split_step_with_an_external_all_reduce(tmp_path):
    """Two processes drive the split ONNX step (gradient model, all-reduce, update
    model) in onnxruntime; the params equal the fused ONNX step on the whole batch.
    float32: 1e-5 absolute covers the different order of the gradient sums."""
    import onnxruntime as ort
    s = spec(tmp_path)
    res = torchrun(ROOT / "tests" / "ddp_onnx_worker.py", s, tmp_path, 5, 32)
    assert res.returncode == 0, res.stderr
    got = dict(np.load(tmp_path / "params.npz"))
    m = api.load(str(s))
    m = model_for(m, parse_train(m))
    m.export_onnx(tmp_path / "step.onnx", train_step=True)
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"])
    state = dict(m.init_params(0))
    for i in sess.get_inputs():
        if i.name.startswith("opt."):
            state[i.name] = np.zeros([int(d) for d in i.shape], np.float32)
    from compiler.training import datasets
    data = datasets.load("digits")
    names = [o.name for o in sess.get_outputs()]
    for t in range(5):
        feeds = {"x": data.x[:32], "y": data.y[:32], "step": np.asarray(t, np.float32), **state}
        out = dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))
        state.update({k[4:]: v for k, v in out.items() if k.startswith("new:")})
    for k in m.params:
        np.testing.assert_allclose(got[k], state[k], rtol=0, atol=1e-5, err_msg=k)
        assert float(np.abs(state[k] - m.init_params(0)[k]).max()) > 1e-3


def test_shards_cover_each_global_batch_once():
    for world in (1, 2, 3, 5):
        for n in (1, 2, 7, 16):
            rows = []
            for r in range(world):
                part, w = Comm(r, world).shard({"i": np.arange(n)})
                assert w == len(part["i"]) or (w == 0 and len(part["i"]) == 1)
                rows += list(part["i"][:w])
            assert rows == list(range(n))


def test_strip_nproc():
    assert strip_nproc(["train", "a.dl", "--nproc", "2", "--quiet"]) == ["train", "a.dl", "--quiet"]
    assert strip_nproc(["train", "--nproc=4", "a.dl"]) == ["train", "a.dl"]
