"""specs/lstm.dl on onnxruntime: dlc's ONNX inference vs torch.onnx.export of eager
nn.LSTM, and dlc's ONNX train step vs the eager PyTorch step, one thread each, the two
contenders' samples interleaved (models.py's `paired`), medians.

    python bench/rnn_onnx.py [--T 50,200] [--repeat 7] [--what infer,train]

A quicker view of bench/models.py's ort_infer / ort_train columns for the LSTM alone
(issue 11: the ONNX LSTM / GRU lowerings).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from models import (EagerLSTM, batch_of, dlc_ort_infer, dlc_ort_train, dlc_setup,  # noqa: E402
                    eager_step, paired, torch_export)
from run import ort_session  # noqa: E402


def case(T, repeat, what, tmp):
    import numpy as np
    batch = batch_of("lstm", np.random.default_rng(0), T)
    m2, cfg, g, res, values = dlc_setup("lstm.dl")
    grp = cfg.groups[0]
    net = EagerLSTM({k: np.array(v, copy=True) for k, v in values.items()})
    r = {"T": T}
    if "infer" in what:
        path = torch_export(net, batch, lambda z: z, Path(tmp) / f"lstm{T}.onnx")
        sess = ort_session(str(path), 1)
        feeds = {"x": batch["x"]}
        torch_inf = lambda: sess.run(None, feeds)  # noqa: E731
        dlc, ref = paired(dlc_ort_infer(m2, values, batch), torch_inf, repeat)
        r["infer_ms"] = {"dlc_onnx": dlc["median_s"] * 1e3, "torch_onnx": ref["median_s"] * 1e3,
                         "ratio": dlc["median_s"] / ref["median_s"]}
    if "train" in what:
        e_step = eager_step(net, batch, kind="mse", lr=float(grp.optimizer.kwargs.get("lr", 1e-3)),
                            wd=grp.weight_decay, schedule="constant", clip=grp.clip_grad_norm)
        dlc, ref = paired(dlc_ort_train(m2, g, res, values, batch), e_step, repeat)
        r["train_ms"] = {"dlc_ort": dlc["median_s"] * 1e3, "eager": ref["median_s"] * 1e3,
                         "ratio": dlc["median_s"] / ref["median_s"]}
    return r


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", default="50,200")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--what", default="infer,train")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for T in (int(t) for t in a.T.split(",")):
            print(json.dumps(case(T, a.repeat, a.what.split(","), tmp)), flush=True)


if __name__ == "__main__":
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    main()
