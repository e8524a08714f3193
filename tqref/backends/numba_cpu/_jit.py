"""Numba compilation options for the CPU backend — the one place they are set.

* ``fastmath=False``: no reassociation, no reciprocal approximations, no FMA contraction.
  Numba emits plain ``fmul``/``fadd`` LLVM instructions without the ``contract`` flag, so
  LLVM never fuses ``a * b + c`` into an FMA even on CPUs that have one
  (tests/backends/test_numba_kernels.py::test_no_fma_in_machine_code checks the assembly).
* ``error_model="numpy"``: division follows IEEE (no ZeroDivisionError branch in hot loops).
* ``cache=True``: compiled machine code is cached next to the sources (``__pycache__``).
* ``nogil=True``: kernels release the GIL, so dask's threaded workers run them concurrently.
* ``boundscheck=False``: every index is computed from validated shapes.

Each kernel exists in two variants built from the same Python function: ``serial`` (for small
batches and for callers that parallelise themselves, e.g. dask workers) and ``parallel``
(``prange`` over blocks of rows, one scratch buffer per thread).
"""

from __future__ import annotations

import types as pytypes

import numba

OPTIONS = dict(cache=True, fastmath=False, nogil=True, error_model="numpy", boundscheck=False)

#: vectors processed together by one SIMD tile (lane l of every tile row is vector l).
TILE = 16

#: batches with fewer rows than this use the serial variant (thread start-up costs ~10 µs).
PARALLEL_MIN_ROWS = 512


def jit(fn):
    """Compile ``fn`` serially (inlined helpers and serial kernels)."""
    return numba.njit(**OPTIONS)(fn)


def jit_inline(fn):
    """Like :func:`jit`, but inlined into each caller at Numba IR level, so that constant
    arguments fold as if the body were written at the call site (LLVM does not inline a
    helper with loops, and its loop bounds and shifts would stay run-time values)."""
    return numba.njit(inline="always", **OPTIONS)(fn)


def _renamed(fn, suffix: str):
    """A copy of ``fn`` under another qualified name.

    Numba's on-disk cache is keyed by the function's qualified name, code and signature —
    not by the compilation flags — so a serial and a parallel dispatcher of one Python
    function would share (and overwrite) one cache entry: whichever compiled first would be
    loaded by both. The parallel variant therefore compiles a renamed copy.
    """
    copy = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


class Kernel:
    """A kernel compiled twice: ``serial`` and ``parallel`` (``prange`` becomes ``range``)."""

    def __init__(self, fn):
        self.serial = numba.njit(**OPTIONS)(fn)
        self.parallel = numba.njit(parallel=True, **OPTIONS)(_renamed(fn, "__parallel"))
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__


def kernel(fn) -> Kernel:
    return Kernel(fn)


def num_threads() -> int:
    return numba.get_num_threads()
