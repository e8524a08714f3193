"""TurboQuant_prod (paper Algorithm 2): a (b−1)-bit mse stage plus QJL on the residual.

Normative order for one float32 vector x (docs/compatibility.md §"prod"):

1. mse steps 1–3 with b − 1 bits (mse.quantize_rotated): unit vector u, norm,
   rotated y = Π u, indices idx.
2. Residual **in the rotated domain**: r = y − float32(c[idx]) (float32 subtraction).
   Because Π is orthogonal, ⟨Πᵀ r, ·⟩ sketched with S equals r sketched with S Π ᵀ, which
   has the same law as S for Gaussian and Haar S; computing in the rotated domain saves an
   inverse rotation and lets queries be rotated once (docs/decisions.md).
3. γ = ordered_norm(r); signs = [ordered_dot(S_i, r) >= 0] packed LSB-first (qjl.sketch).

Stored: mse packed indices (b − 1 bits), norm, packed signs (ceil(d/8) bytes), γ (unit scale;
multiply by the norm for the original scale).

Dequantize: x̃ = norm · Πᵀ(ŷ + κ γ Sᵀ z).
"""

from __future__ import annotations

import numpy as np

from . import mse, packing, qjl, rotation

_F32 = np.float32


def quantize(x: np.ndarray, plan):
    """x float32 (n, d) -> (packed (n, nb), norms (n,), signs (n, ceil(d/8)), gammas (n,))."""
    y, idx, norms = mse.quantize_rotated(x, plan)
    residual = y - plan.codebook.centroids_f32[idx]
    signs, gammas = qjl.sketch(residual, plan.projection)
    return packing.pack_bits(idx, plan.bits), norms, signs, gammas


def rotated_reconstruction(packed, signs, gammas, plan) -> np.ndarray:
    """ŷ + κ γ Sᵀ z in the rotated domain, float32 (n, d) (matmul: statistical order)."""
    z = qjl.signs_of(signs, plan.dim)
    correction = (z @ plan.projection) * (_F32(plan.qjl_scale) * np.asarray(gammas, _F32))[..., None]
    return mse.centroids_of(packed, plan) + correction.astype(_F32)


def dequantize(packed, norms, signs, gammas, plan) -> np.ndarray:
    """Algorithm 2 DeQuant: float32 (n, d)."""
    y = rotated_reconstruction(packed, signs, gammas, plan)
    x = rotation.apply_inverse(y, plan.signs, plan.matrix)
    return x * np.asarray(norms, dtype=_F32)[..., None]
