"""Arrays the kernels need, laid out once per reference Plan (the data contract).

Every value comes from the Plan: the Hadamard signs (``plan.signs``), the Haar Π
(``plan.matrix``), the QJL S and κ, the codebook's float32 thresholds and centroids and the
shrinkage α (``plan.alpha``). Nothing is re-derived from the seed here, so a plan with given
arrays (:meth:`Plan.with_data`) runs with exactly those arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...reference import codebook as cb
from ...reference import rotation
from .._plan_cache import PlanCache

_F32 = np.float32


def thresholds(boundaries: np.ndarray) -> np.ndarray:
    """The kernels' float32 thresholds of float64 ``boundaries`` (K − 1,): the one rule of
    :attr:`Codebook.thresholds_f32` (codebook.float32_round_down, round toward −∞, so that
    the float32 test ``v > t_k`` equals the reference's exact ``v > b_k``), C-contiguous —
    for the nearest-index step, which is given boundaries rather than a plan."""
    return np.ascontiguousarray(cb.float32_round_down(np.asarray(boundaries, dtype=np.float64)), dtype=_F32)


def hadamard_factors(signs: np.ndarray):
    """Fused sign/normalisation tables for rotation.hadamard_forward and hadamard_inverse.

    The reference runs steps s = 0 .. S−1 (rotation.hadamard_steps): multiply the whole
    vector by signs[s], then the normalised FWHT on block s (the inverse runs the steps in
    reverse, each FWHT followed by its signs). Between two FWHTs that read a row, the row is
    only multiplied by inv = 1/√m once and by some ±1, and (y·inv)·s = y·(inv·s) exactly for
    s = ±1 (rounding is sign-symmetric). So each row gets one multiply after each FWHT it
    takes part in — inv times every sign it receives before it is next read (or before the
    end) — and the product of the signs it receives before its first FWHT ("pre").
    Bit-identical to the reference, step by step.

    ``signs``: the plan's float32 (S, d) step signs (``Plan.signs``). Returns (fwd_pre (d,),
    fwd_offsets (S,), fwd_factors (S, m), inv_pre (d,), inv_offsets (S,), inv_factors (S, m)):
    float32 tables, int64 block offsets (the ``lo`` of rotation.hadamard_steps), both in
    execution order.
    """
    d = signs.shape[1]
    m = rotation.hadamard_block(d)
    inv = float(rotation.inverse_sqrt(m))
    signs = np.asarray(signs, dtype=np.float64)
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


def _haar_tables(d: int):
    """The Hadamard tables of a Haar plan, never read by the kernels (they branch on
    ``haar``) but typed alike: ones as the "pre" signs (load_split_norm multiplies by them),
    no steps."""
    m = rotation.hadamard_block(d)
    none = np.zeros(0, np.int64), np.zeros((0, m), _F32)
    return (np.ones(d, _F32),) + none + (np.ones(d, _F32),) + none


def _build(plan) -> KernelPlan:
    d = plan.dim
    haar = plan.matrix is not None
    sign0, fo, ff, ip, io, if_ = _haar_tables(d) if haar else hadamard_factors(plan.signs)
    empty = np.zeros((0, d), _F32)
    pi = np.ascontiguousarray(plan.matrix, dtype=_F32) if haar else empty
    pi_t = np.ascontiguousarray(plan.matrix.T, dtype=_F32) if haar else empty
    proj = np.ascontiguousarray(plan.projection, dtype=_F32) if plan.projection is not None else empty
    book = plan.codebook
    return KernelPlan(
        d, plan.bits, rotation.hadamard_block(d), haar, sign0, fo, ff, ip, io, if_, pi, pi_t,
        np.ascontiguousarray(book.thresholds_f32, dtype=_F32), np.ascontiguousarray(book.centroids_f32),
        proj, _F32(plan.qjl_scale), _F32(plan.alpha),
    )


#: The KernelPlan of a reference Plan: per Config for a derived plan, per plan object for one
#: with given arrays (backends/_plan_cache.py; never the tables of another plan).
kernel_plan = PlanCache(_build)
