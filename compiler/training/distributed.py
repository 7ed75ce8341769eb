"""Data-parallel training on `torch.distributed` (docs/distributed.md).

A `Comm` is this process's place in the job: rank, world size and the process group.
`from_env` reads the variables every torch launcher sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: `torchrun`, `dlc train --nproc N`,
SLURM wrappers) and joins the group: ``gloo`` on CPU, ``nccl`` on CUDA, with a timeout
so that a dead or stuck rank fails the job instead of hanging it.

Semantics (the same whatever the world size, up to the order of float sums):
* the spec's ``batch`` is the GLOBAL batch: every rank draws the same seeded shuffle
  and takes its contiguous slice of each global batch (`shard`);
* the gradient results of the split step (``grad:P``, SVRG's ``gsnap:P``), the new
  values of states and update rules, and the logged metrics are averaged over ranks,
  weighted by the rows each rank holds, in ONE flat all-reduce per step (a single
  bucket; `reduce_mean`), so every rank applies the same update to the same params.
"""
from __future__ import annotations

import copy
import datetime
import os
from dataclasses import dataclass

import numpy as np

DEFAULT_TIMEOUT = 300.0  # seconds a collective waits for a missing rank


class DistributedError(Exception):
    """A collective failed: another rank died, hung past the timeout, or never joined."""


@dataclass
class Comm:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None   # the process-group backend, None when alone
    timeout: float = DEFAULT_TIMEOUT

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes files and prints."""
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a global batch of n rows (contiguous, sizes
        differing by at most one)."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def shard(self, batch: dict) -> tuple[dict, int]:
        """(this rank's rows of a global batch, their weight). A rank left without rows
        (a last batch smaller than the world) computes on one row with weight 0, so it
        still takes part in every collective but adds nothing to the averages."""
        n = len(next(iter(batch.values())))
        if not self.active:
            return batch, n
        lo, hi = self.bounds(n)
        if hi == lo:
            return {k: v[:1] for k, v in batch.items()}, 0
        return {k: v[lo:hi] for k, v in batch.items()}, hi - lo

    def noise_seed(self, seed: int) -> int:
        """Host noise differs between ranks but is reproducible: rank 0 keeps the
        single-process stream, rank r draws from seed + r * 2**32."""
        return seed + (self.rank << 32)

    def reduce_mean(self, values: dict, n: int) -> tuple[dict, int]:
        """(sum over ranks of n_r * v_r / N, N = sum of n_r), values given as NumPy arrays
        or torch tensors (returned as the same kind, dtype and device). A rank with no
        rows passes n=0 (its values are ignored)."""
        if not self.active:
            return values, n
        import torch
        keys = list(values)
        dev = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")
        # float64 for the sum: exact for f32 inputs, and what the f64 runs need
        parts = [torch.tensor([float(n)], dtype=torch.float64, device=dev)]
        for k in keys:
            v = values[k]
            t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
            t = t.detach().to(dev, torch.float64).reshape(-1)
            parts.append(t * n if n else torch.zeros_like(t))
        buf = torch.cat(parts)
        self._all_reduce(buf)
        total = int(round(buf[0].item()))
        out, at = {}, 1
        for k in keys:
            v = values[k]
            size = int(np.prod(np.shape(v))) if not isinstance(v, torch.Tensor) else v.numel()
            mean = buf[at:at + size] / max(total, 1)
            at += size
            if isinstance(v, torch.Tensor):
                out[k] = mean.to(v.device, v.dtype).reshape(v.shape)
            else:
                a = np.asarray(v)
                out[k] = mean.cpu().numpy().astype(a.dtype).reshape(a.shape)
        return out, total

    def reduce_sums(self, sums: dict, n: int) -> tuple[dict, int]:
        """Plain sums of scalars over ranks (evaluation: sum of value*rows, and rows)."""
        if not self.active:
            return sums, n
        import torch
        keys = list(sums)  # the same order on every rank (the caller's)
        buf = torch.tensor([float(n)] + [float(sums[k]) for k in keys], dtype=torch.float64)
        if self.backend == "nccl":
            buf = buf.cuda()
        self._all_reduce(buf)
        buf = buf.cpu()
        return {k: float(buf[i + 1]) for i, k in enumerate(keys)}, int(round(buf[0].item()))

    def _all_reduce(self, buf):
        import torch.distributed as dist
        try:
            dist.all_reduce(buf)
        except Exception as e:  # gloo: RuntimeError; nccl: DistBackendError
            raise DistributedError(
                f"rank {self.rank} of {self.world}: an all-reduce failed, so another rank "
                f"died or stopped answering (process-group timeout {self.timeout:g} s; "
                f"set --dist-timeout to change it): {str(e).splitlines()[0]}") from None

    def close(self):
        if self.active:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def launched() -> bool:
    """Started by a torch launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_env(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> Comm:
    """Join the job the launcher describes (or a world of one without a launcher)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Comm(timeout=timeout)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise DistributedError("data-parallel training needs PyTorch (torch.distributed); "
                               "install torch or run one process") from None
    backend = "nccl" if device == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)  # `cuda` in the generated code is this rank's GPU
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except Exception as e:
        raise DistributedError(f"rank {rank} of {world} could not join the process group "
                               f"({backend}): {str(e).splitlines()[0]}") from None
    return Comm(rank, world, local, backend, timeout)


def launch(argv: list[str], nproc: int) -> int:
    """`dlc train --nproc N`: run `python -m compiler ARGV` in N local workers through
    torch's elastic launcher (what `torchrun --standalone --nproc_per_node N` does)."""
    try:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import get_args_parser, run
    except ImportError:
        raise DistributedError("--nproc needs PyTorch (torch.distributed.run)") from None
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc_per_node", str(nproc), "--max_restarts", "0",
         "-m", "compiler", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        failures = sorted(e.failures.items())
        who = ", ".join(f"rank {r} (exit code {f.exitcode})" for r, f in failures)
        raise DistributedError(f"the data-parallel job failed: {who}; "
                               "the failing rank's error is printed above") from None
    return 0


def strip_nproc(argv: list[str]) -> list[str]:
    """argv without `--nproc N` / `--nproc=N` (the workers must not launch again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def export_split_step_onnx(model, grad_path, update_path, *, dtype: str = "f32",
                           player: str | None = None) -> tuple:
    """The train step as two ONNX models for a user's own data-parallel loop:
    the gradient model (data, params, states, slots -> loss, metrics, new states,
    ``grad:P``) and the update model (params, slots, ``step``, ``grad:P`` -> ``new:P``,
    new slots, ``lr``). Between them, average each ``grad:P`` over the workers
    (weighted by their rows). Returns the two `onnx.ModelProto`s."""
    import onnx

    from compiler.core import backend_registry
    from compiler.training.step import build_split_step
    from compiler.transform.passes import optimize
    g, grad_res, upd_res = build_split_step(model, player=player)
    ug = copy.copy(g)
    ug.updates = {}  # the update model needs no forward pass (see Trainer._lower_halves)
    onnx_backend = backend_registry.load("onnx")
    models = []
    for graph, res, path, part in ((g, grad_res, grad_path, "grad"),
                                   (ug, upd_res, update_path, "update")):
        og, ores = optimize(graph, res)
        m = onnx_backend.lower(og, ores, dtype=dtype, params_as="inputs",
                               name=f"{model.name}_{part}")
        onnx.save(m, str(path))
        models.append(m)
    return tuple(models)
