"""Float32 helpers shared by the profiles: an exactly rounded fused multiply-add.

NumPy has no float32 fma. ``fma_f32`` computes a·b exactly in float64 (24 + 24 bits fit in
53), adds c with round-to-odd (TwoSum gives the rounding error; an inexact even result is
moved one ulp toward the exact sum), then rounds once to float32. Round-to-odd at 53 bits
followed by round-to-nearest at 24 bits equals a single correct rounding, so the result is
the IEEE fusedMultiplyAdd of the float32 inputs (overflow to ±inf and NaN propagate).
"""

from __future__ import annotations

import numpy as np


def fma_f32(a, b, c) -> np.ndarray:
    """round_f32(a·b + c) with a single rounding, elementwise (broadcasting)."""
    p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
    c64 = np.asarray(c, np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        s = p + c64
        bv = s - p
        err = (p - (s - bv)) + (c64 - bv)
        even = (np.asarray(s).view(np.uint64) & np.uint64(1)) == 0
        fix = np.isfinite(err) & (err != 0) & even
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return np.asarray(s).astype(np.float32)
