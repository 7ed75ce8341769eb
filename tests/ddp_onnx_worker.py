"""One worker of the external data-parallel loop over the split ONNX train step
(tests/test_distributed.py, docs/distributed.md): launched by torch.distributed.run;
each rank runs the gradient model on its half of the batch in onnxruntime, the grads
are averaged with torch.distributed (gloo), and the update model applies them.
Rank 0 saves the final params to OUT/params.npz."""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.distributed as dist

from compiler import api
from compiler.training import datasets
from compiler.training.distributed import export_split_step_onnx
from compiler.training.spec import model_for, parse_train

spec, out, steps, rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
m = api.load(spec)
m = model_for(m, parse_train(m))
gpath, upath = out / f"grad{rank}.onnx", out / f"update{rank}.onnx"
export_split_step_onnx(m, gpath, upath)
gs = ort.InferenceSession(str(gpath), providers=["CPUExecutionProvider"])
us = ort.InferenceSession(str(upath), providers=["CPUExecutionProvider"])
state = dict(m.init_params(0))
for i in us.get_inputs():
    if i.name.startswith("opt."):
        state[i.name] = np.zeros([int(d) for d in i.shape], np.float32)
data = datasets.load("digits")
lo, hi = rank * rows // world, (rank + 1) * rows // world
x, y = data.x[lo:hi], data.y[lo:hi]
gnames = [o.name for o in gs.get_outputs()]
unames = [o.name for o in us.get_outputs()]
for t in range(steps):
    feeds = {"x": x, "y": y, **state}
    g = dict(zip(gnames, gs.run(gnames, {i.name: feeds[i.name] for i in gs.get_inputs()})))
    grads = {}
    for k in gnames:
        if k.startswith("grad:"):  # the external all-reduce: the mean over equal shards
            buf = torch.from_numpy(np.ascontiguousarray(g[k]))
            dist.all_reduce(buf)
            grads[k] = (buf / world).numpy()
    feeds = {**state, **grads, "step": np.asarray(t, np.float32)}
    u = dict(zip(unames, us.run(unames, {i.name: feeds[i.name] for i in us.get_inputs()})))
    state.update({k[4:]: v for k, v in u.items() if k.startswith("new:")})
if rank == 0:
    np.savez(out / "params.npz", **state)
dist.destroy_process_group()
