"""The Numba CPU backend: the reference operations as multi-core SIMD kernels.

Integer outputs (packed codes, sign bits) equal the reference's bit for bit; see
docs/backends.md "Numba" for the design and the exactness argument. Each kernel lives in
:mod:`.kernels` / :mod:`.estimators` and mirrors the reference function it names.
"""

from __future__ import annotations

import os
import sys

#: Numba's default threading layer is GNU OpenMP, whose idle workers spin after every
#: parallel region. The kernels here are short and alternate with the caller's NumPy/BLAS
#: steps (a model's forward, the cache's rotations), so on a machine with few cores the
#: spinning workers took the cores those steps needed: decode attention at 8k tokens ran
#: in 8.4 ms instead of 4.3, and NumPy work right after it slowed by half (one run,
#: benchmarks/bench_api.py conditions). Passive waiting is read when OpenMP starts, i.e.
#: the first parallel kernel; an explicit OMP_WAIT_POLICY is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402, F401  (ImportError here makes the backend unavailable, by name)

if sys.byteorder != "little":  # the packers read 8-index groups as little-endian words
    raise ImportError("the numba backend needs a little-endian CPU")

from .backend import NumbaBackend  # noqa: E402

__all__ = ["NumbaBackend"]
