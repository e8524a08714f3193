"""Inner-product estimators for an unquantized query against quantized vectors (docs/algorithm.md §9).

For query q (m, d) and n quantized vectors, each estimator rotates the query once
(q_rot = Π q) and works in the rotated domain, where ⟨q, x⟩ = ‖x‖ ⟨q_rot, y⟩:

* mse, plain:      ‖x‖ · ⟨q_rot, ŷ⟩ — biased: E = α ⟨q, x⟩ with α = codebook.shrinkage
  (≈ 1 − D_mse; 0.64, 0.88, 0.97, 0.99 for b = 1..4 at d = 128).
* mse, debiased:   the plain estimate divided by α. Unbiased (for Haar Π) without spending
  a bit; at equal bits its variance is about a fifth of prod's (`tqref reproduce` measures
  it; docs/algorithm.md §9).
* prod (Algorithm 2): ‖x‖ · (⟨q_rot, ŷ⟩ + κ γ ⟨S q_rot, z⟩) — unbiased over S.

The sums here are float outputs: matmuls, compared across backends with a tolerance
(docs/compatibility.md). Shapes: queries (m, d) float32 -> estimates (m, n) float32.
"""

from __future__ import annotations

import numpy as np

from . import mse, qjl, rotation

_F32 = np.float32


def rotate_queries(queries: np.ndarray, plan) -> np.ndarray:
    """Π q for float32 queries (m, d)."""
    return rotation.apply(np.asarray(queries, dtype=_F32), plan.signs, plan.matrix)


def mse_inner_product(queries, packed, norms, plan, *, unbiased: bool = False) -> np.ndarray:
    """mse estimator (plain or debiased): (m, n) float32."""
    q_rot = rotate_queries(queries, plan)
    y_hat = mse.centroids_of(packed, plan)
    est = (q_rot @ y_hat.T) * np.asarray(norms, dtype=_F32)[None, :]
    if unbiased:
        est = est / _F32(plan.alpha)
    return est.astype(_F32)


def prod_inner_product(queries, packed, norms, signs, gammas, plan) -> np.ndarray:
    """Algorithm 2 estimator: (m, n) float32."""
    q_rot = rotate_queries(queries, plan)
    y_hat = mse.centroids_of(packed, plan)
    q_proj = q_rot @ plan.projection.T  # S q_rot, (m, d)
    z = qjl.signs_of(signs, plan.dim)
    base = q_rot @ y_hat.T
    corr = (q_proj @ z.T) * (_F32(plan.qjl_scale) * np.asarray(gammas, dtype=_F32))[None, :]
    return ((base + corr) * np.asarray(norms, dtype=_F32)[None, :]).astype(_F32)
