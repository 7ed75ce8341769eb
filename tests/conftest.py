"""Suite-wide settings.

One BLAS/OpenMP thread per test process: CI runs `pytest -n 2` on 2 cores, and
multi-threaded BLAS under that load slows small matrix work ~20x (measured by the
training engine, see compiler/core/threads.py)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(1)

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency
    pass
