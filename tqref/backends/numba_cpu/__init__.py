"""The Numba CPU backend: the reference operations as multi-core SIMD kernels.

Integer outputs (packed codes, sign bits) equal the reference's bit for bit; see
docs/backends.md "Numba" for the design and the exactness argument. Each kernel lives in
:mod:`.kernels` / :mod:`.estimators` and mirrors the reference function it names.
"""

from __future__ import annotations

import sys

import numba  # noqa: F401  (ImportError here makes the backend unavailable, by name)

if sys.byteorder != "little":  # the packers read 8-index groups as little-endian words
    raise ImportError("the numba backend needs a little-endian CPU")

from .backend import NumbaBackend

__all__ = ["NumbaBackend"]
