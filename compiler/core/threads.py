"""CPU thread limits for small-tensor work (training steps, backend comparisons).

The tensors of a train step or an equivalence check are small: BLAS and torch
worker threads cost more in synchronisation than they gain, and on a busy 2-core
machine their spin-waiting made steps 10-20x slower in measurements. One thread
also keeps summation orders reproducible. ``DLC_CPU_THREADS`` overrides the count.
"""
from __future__ import annotations

import contextlib
import os


def thread_limit() -> int | None:
    """The configured CPU thread count (``DLC_CPU_THREADS``, default 1), or None for no limit."""
    limit = os.environ.get("DLC_CPU_THREADS", "1")
    return int(limit) if limit.isdigit() and int(limit) >= 1 else None


@contextlib.contextmanager
def limit_cpu_threads(n: int | None, *, torch: bool = False):
    """NumPy's BLAS (and torch's intra-op pool when `torch`) limited to `n` threads."""
    if n is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
        if torch:
            import torch as _torch
            saved = _torch.get_num_threads()
            _torch.set_num_threads(n)
            stack.callback(_torch.set_num_threads, saved)
        yield
