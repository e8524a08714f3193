"""QJL: the 1-bit sign sketch of a residual (paper Definition 1, Lemma 4).

Q_qjl(r) = sign(S r) ∈ {−1, +1}^d with sign(0) = +1, stored as packed bits
(bit i = 1 for a non-negative projection, packing.py layout, ceil(d/8) bytes), together with
γ = ‖r‖₂. For an unquantized query y the estimator

    ⟨y, r⟩ ≈ κ · γ · ⟨S y, z⟩,   z_i = 2·bit_i − 1,

is unbiased for Gaussian and orthogonal S with the constants below.

Projection matrices S (d×d, float32; rows indexed by sketch coordinate i):

* ``"gaussian"`` — i.i.d. N(0, 1) generator Gaussians (stream STREAM_QJL_GAUSSIAN), the
  paper's choice. E[sign(s·r) (s·y)] = sqrt(2/π) ⟨r̂, y⟩, so κ = sqrt(π/2) / d.
* ``"orthogonal"`` — the rows of a Haar orthogonal matrix (unit rows; stream
  STREAM_QJL_ORTHOGONAL). Each row is uniform on the sphere, so
  E[sign(q·r) (q·y)] = E|q_1| ⟨r̂, y⟩ with E|q_1| = Γ(d/2) / (sqrt(π) Γ((d+1)/2)), hence
  κ = 1 / (d · E|q_1|) = sqrt(π) Γ((d+1)/2) / (d Γ(d/2)) — exactly unbiased at every d
  (≈ sqrt(π/2)/sqrt(d) · (1 − 1/(4d)) for large d).
* ``"rademacher"`` — entries ±1 from the portable generator (stream STREAM_QJL_RADEMACHER),
  portable tier. κ = sqrt(π/2) / d as for Gaussian rows; s·r is a sum of d signed terms, so
  the estimator is unbiased only as the residual spreads over many coordinates (the
  rotated residual does). The measured relative bias is in docs/decisions.md.

The projection S r uses the written-order dot product (reduction.ordered_matvec), so given
S the sign bits are exact in every backend.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import packing, prng
from .reduction import ordered_matvec, ordered_norm
from .rotation import haar_matrix

PROJECTIONS = ("gaussian", "orthogonal", "rademacher")
_F32 = np.float32


@functools.lru_cache(maxsize=32)
def projection_matrix(kind: str, dim: int, seed: int) -> np.ndarray:
    """S as float32 (dim, dim), read-only. See the module docstring for each kind."""
    if kind == "gaussian":
        s = prng.gaussian(seed, prng.STREAM_QJL_GAUSSIAN, dim * dim).reshape(dim, dim).astype(_F32)
    elif kind == "orthogonal":
        s = np.array(haar_matrix(dim, seed, prng.STREAM_QJL_ORTHOGONAL))
    elif kind == "rademacher":
        s = prng.rademacher(seed, prng.STREAM_QJL_RADEMACHER, dim * dim).reshape(dim, dim)
    else:
        raise ValueError(f"projection: expected one of {PROJECTIONS}, got {kind!r}")
    s.setflags(write=False)
    return s


def estimator_scale(kind: str, dim: int) -> float:
    """κ, the constant that makes κ·γ·⟨S y, z⟩ unbiased for ⟨y, r⟩ (float64)."""
    if kind == "orthogonal":
        return math.exp(0.5 * math.log(math.pi) + math.lgamma((dim + 1) / 2.0) - math.lgamma(dim / 2.0)) / dim
    return math.sqrt(math.pi / 2.0) / dim


def sketch(residual: np.ndarray, s: np.ndarray):
    """Packed sign bits uint8 (n, ceil(d/8)) and γ float32 (n,) of residuals float32 (n, d)."""
    projected = ordered_matvec(s, residual)
    bits = (projected >= 0).astype(np.uint8)  # sign(0) = +1; −0.0 >= 0 is true
    return packing.pack_bits(bits, 1), ordered_norm(residual)


def signs_of(packed: np.ndarray, dim: int) -> np.ndarray:
    """z = 2·bit − 1 as float32 (n, d) from packed sign bits."""
    return packing.unpack_bits(packed, 1, dim).astype(_F32) * _F32(2.0) - _F32(1.0)

