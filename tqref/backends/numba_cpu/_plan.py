"""Arrays the kernels need, derived once per configuration from a reference Plan."""

from __future__ import annotations

import dataclasses
import numpy as np

from ...reference import codebook as cb
from ...reference import rotation

_F32 = np.float32


def thresholds(boundaries: np.ndarray) -> np.ndarray:
    """float32 thresholds t_k with (v > t_k) ⟺ (v > b_k) for every float32 v: the float64
    boundaries rounded toward −∞ (codebook.float32_round_down, Codebook.thresholds_f32).

    If b_k is a float32, t_k = b_k. Otherwise t_k < b_k < nextafter(t_k, +∞) and no float32
    lies strictly between, so v > b_k ⟺ v ≥ nextafter(t_k, +∞) ⟺ v > t_k: the reference's
    exact comparison (ties to the lower cell) becomes a float32 comparison.
    """
    return np.ascontiguousarray(cb.float32_round_down(np.asarray(boundaries, dtype=np.float64)), dtype=_F32)


def hadamard_factors(d: int, seed: int):
    """Fused sign/normalisation tables for rotation.hadamard_forward and hadamard_inverse.

    The reference runs steps s = 0 .. S−1 (rotation.hadamard_steps): multiply the whole
    vector by signs[s], then the normalised FWHT on block s (the inverse runs the steps in
    reverse, each FWHT followed by its signs). Between two FWHTs that read a row, the row is
    only multiplied by inv = 1/√m once and by some ±1, and (y·inv)·s = y·(inv·s) exactly for
    s = ±1 (rounding is sign-symmetric). So each row gets one multiply after each FWHT it
    takes part in — inv times every sign it receives before it is next read (or before the
    end) — and the product of the signs it receives before its first FWHT ("pre").
    Bit-identical to the reference, step by step.

    Returns (fwd_pre (d,), fwd_offsets (S,), fwd_factors (S, m), inv_pre (d,),
    inv_offsets (S,), inv_factors (S, m)): float32 tables, int64 block offsets, both in
    execution order.
    """
    m = rotation.hadamard_block(d)
    inv = float(rotation.inverse_sqrt(m))
    signs = rotation.hadamard_signs(d, seed).astype(np.float64)
    steps = rotation.hadamard_steps(d)

    def tables(order, sign_before):
        pre = np.ones(d, _F32)
        factors = np.zeros((len(order), m), _F32)
        offsets = np.array([steps[k][0] for k in order], np.int64)
        for j in range(d):
            acc, last = 1.0, None
            for pos, k in enumerate(order):
                lo, hi = steps[k]
                if sign_before:
                    acc *= signs[k, j]
                if lo <= j < hi:  # row j is read by this step's FWHT
                    if last is None:
                        pre[j] = acc
                    else:
                        factors[last, j - offsets[last]] = _F32(inv) * _F32(acc)
                    acc, last = 1.0, pos
                if not sign_before:
                    acc *= signs[k, j]
            factors[last, j - offsets[last]] = _F32(inv) * _F32(acc)
        return pre, offsets, factors

    n = len(steps)
    return tables(list(range(n)), True) + tables(list(reversed(range(n))), False)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelPlan:
    dim: int
    bits: int
    m: int
    haar: bool
    sign0: np.ndarray  # forward "pre" signs (ones for Haar)
    fwd_offsets: np.ndarray
    fwd_factors: np.ndarray
    inv_pre: np.ndarray
    inv_offsets: np.ndarray
    inv_factors: np.ndarray
    pi: np.ndarray  # Haar Π (d, d) or an empty (0, d) placeholder
    pi_t: np.ndarray  # Πᵀ, C-contiguous
    thresholds: np.ndarray
    centroids: np.ndarray  # float32 (K,)
    projection: np.ndarray  # QJL S (d, d) or (0, d)
    qjl_scale: np.float32
    shrinkage: np.float32


_CACHE: dict = {}


def _build(plan) -> KernelPlan:
    d = plan.dim
    sign0, fo, ff, ip, io, if_ = hadamard_factors(d, plan.seed)
    haar = plan.rotation == "haar"
    if haar:  # the Haar path applies Π to u itself: no Hadamard signs
        sign0 = np.ones(d, _F32)
    empty = np.zeros((0, d), _F32)
    pi = np.ascontiguousarray(plan.haar) if haar else empty
    pi_t = np.ascontiguousarray(plan.haar.T) if haar else empty
    proj = np.ascontiguousarray(plan.projection, dtype=_F32) if plan.projection is not None else empty
    return KernelPlan(
        d, plan.bits, rotation.hadamard_block(d), haar, sign0, fo, ff, ip, io, if_, pi, pi_t,
        thresholds(plan.codebook.boundaries), plan.codebook.centroids_f32.copy(), proj,
        _F32(plan.qjl_scale), _F32(cb.shrinkage(plan.codebook)),
    )


def kernel_plan(plan) -> KernelPlan:
    """The KernelPlan of a reference Plan, built once per (hashable) Config."""
    kp = _CACHE.get(plan.config)
    if kp is None:
        if len(_CACHE) >= 64:
            _CACHE.clear()
        kp = _CACHE[plan.config] = _build(plan)
    return kp
