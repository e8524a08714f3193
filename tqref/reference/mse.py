"""TurboQuant_mse (paper Algorithm 1): norm, normalise, rotate, nearest centroid, pack.

Normative order for one float32 vector x of dimension d (docs/compatibility.md §"mse"):

1. **Split norm** (:func:`split_norm`). m = max_j |x_j|. If m = 0 the vector is zero:
   norm = 0 and u = 0. Otherwise E = frexp exponent of m (m = f·2^E, f in [0.5, 1)),
   xs = ldexp(x, −E) (an exact power-of-two scaling: no overflow for huge x, no underflow
   for subnormal x), s = ordered_dot(xs, xs) (32-lane order, reduction.py),
   ns = sqrt(s) (float32, correctly rounded), u = xs / ns (float32 division, correctly
   rounded), norm = ldexp(ns, E) (float32).
2. **Rotate**: y = Π u (rotation.py).
3. **Nearest centroid**: idx_j = #{boundaries < y_j} (codebook.nearest_index; ties to the
   lower cell). Defined as the exact comparison of y_j with the float64 boundaries, which
   equals comparing in float32 with the boundaries rounded down to float32
   (Codebook.thresholds_f32) — what the code and the kernels do.
4. **Pack** idx with b bits per index (packing.py): ceil(d·b/8) bytes.

Dequantize: ŷ_j = float32(c[idx_j]); x̂ = Πᵀ ŷ; out = x̂ · norm (one float32 multiply).
Zero vectors decode to zeros (every index is K/2 − 1 and the norm is 0).

Shapes: x (n, d) float32 -> packed uint8 (n, ceil(d·b/8)), norms float32 (n,).
"""

from __future__ import annotations

import numpy as np

from . import codebook as cb
from . import packing, rotation
from .reduction import ordered_dot

_F32 = np.float32


def split_norm(x: np.ndarray):
    """Scale-safe norm and unit vector in the written order (step 1 above).

    ``x``: float32 (n, d), finite. Returns (u float32 (n, d), norm float32 (n,)); ``norm``
    is +inf where the true norm exceeds float32's range (callers reject that).
    """
    x = np.asarray(x, dtype=_F32)
    m = np.max(np.abs(x), axis=-1)
    _, exponent = np.frexp(m)
    exponent = np.where(m > 0, exponent, 0).astype(np.int32)
    xs = np.ldexp(x, -exponent[..., None]).astype(_F32)
    ns = np.sqrt(ordered_dot(xs, xs))
    safe = np.where(ns > 0, ns, _F32(1.0))
    u = np.where((ns > 0)[..., None], xs / safe[..., None], _F32(0.0)).astype(_F32)
    with np.errstate(over="ignore"):
        norm = np.ldexp(ns, exponent).astype(_F32)
    return u, norm


def quantize_rotated(x: np.ndarray, plan):
    """Steps 1–3: returns (rotated unit vectors y float32 (n, d), idx (n, d), norms (n,))."""
    u, norms = split_norm(x)
    y = rotation.apply(u, plan.signs, plan.matrix)
    idx = cb.nearest_index(y, plan.codebook.boundaries)
    return y, idx, norms


def quantize(x: np.ndarray, plan):
    """Algorithm 1 Quant: float32 (n, d) -> (packed uint8 (n, nbytes), norms float32 (n,))."""
    _, idx, norms = quantize_rotated(x, plan)
    return packing.pack_bits(idx, plan.bits), norms


def centroids_of(packed: np.ndarray, plan) -> np.ndarray:
    """Rotated-domain reconstruction ŷ = float32(c[idx]) from packed codes: (n, d) float32."""
    idx = packing.unpack_bits(packed, plan.bits, plan.dim)
    return plan.codebook.centroids_f32[idx]


def dequantize(packed: np.ndarray, norms: np.ndarray, plan) -> np.ndarray:
    """Algorithm 1 DeQuant: x̂ = (Πᵀ ŷ) · norm, float32 (n, d)."""
    y_hat = centroids_of(packed, plan)
    x_hat = rotation.apply_inverse(y_hat, plan.signs, plan.matrix)
    return x_hat * np.asarray(norms, dtype=_F32)[..., None]
