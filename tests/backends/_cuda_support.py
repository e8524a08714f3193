"""Shared set-up of the CUDA backend tests (tests/backends/test_cuda_*.py).

Where these tests run:

* on a machine with an NVIDIA GPU and numba-cuda: on the GPU, in the ordinary pytest run;
* without a GPU: in Numba's CUDA simulator, in a *separate* pytest invocation with the
  variable set before anything imports numba.cuda::

      NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/backends/test_cuda_*.py

  (the simulator is chosen when numba.cuda is first imported, so it cannot be switched on
  inside a run that already imported it, and switching it on for the whole suite would
  make the registry's "auto" backend pick the slow simulator);
* otherwise the kernel tests skip with that instruction, and only the PTX test
  (test_cuda_ptx.py, which needs no GPU) runs.
"""

from __future__ import annotations

import importlib
import sys

import pytest

SIM_COMMAND = "NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/backends/test_cuda_*.py"


def load_backend():
    """The tqref.backends.cuda module, or skip the calling test module with the reason."""
    try:
        mod = importlib.import_module("tqref.backends.cuda")
    except Exception as exc:  # numba-cuda missing or broken
        pytest.skip(f"tqref.backends.cuda does not import: {type(exc).__name__}: {exc}", allow_module_level=True)
    if not mod.SIMULATOR and not mod.available():
        pytest.skip(f"no CUDA GPU here; the simulator run is: {SIM_COMMAND}", allow_module_level=True)
    if mod.SIMULATOR:
        # Simulated threads meet at a barrier for every shuffle; a shorter GIL switch
        # interval makes those hand-offs about 4x faster.
        sys.setswitchinterval(5e-4)
    return mod


def host(a):
    from tqref.backends.cuda._arrays import to_host

    return to_host(a)


def same_bits(a, b) -> bool:
    """Bitwise equality of float32 arrays (distinguishes −0.0 and +0.0; NaN payloads)."""
    import numpy as np

    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def edge_rows(rng, n, d):
    """float32 (n, d): Gaussian rows with a zero row, a subnormal-scale row, a huge row,
    a one-hot row and a row with ties in |x| (when n allows)."""
    import numpy as np

    x = rng.standard_normal((n, d)).astype(np.float32)
    if n > 1:
        x[1] = 0.0
    if n > 2:
        x[2] *= np.float32(1e-41)  # subnormal inputs: exact power-of-two scaling matters
    if n > 3:
        x[3] *= np.float32(3e37)
    if n > 4:
        x[4] = 0.0
        x[4, d // 2] = -2.5
    if n > 5:
        x[5] = np.where(np.arange(d) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return x
