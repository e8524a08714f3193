"""Random rotations Π (paper Algorithm 1, line 1; design.md §3).

Two kinds, both defined for every dimension d ≥ 2:

* ``"hadamard"`` (portable tier, the default). ``HADAMARD_ROUNDS`` rounds of
  "random signs, then normalised Walsh–Hadamard". For d a power of two the transform of a
  round is ``H_d · diag(s_r)``. For other d, let m be the largest power of two below d; a
  round applies the signs, then ``H_m`` to coordinates [0, m), then ``H_m`` to coordinates
  [d − m, d) (two overlapping blocks, so every output coordinate mixes every input). Each
  step is orthogonal, so the whole rotation is. Only sign flips, add/sub butterflies and one
  multiply by ``float32(1) / sqrt(float32(m))`` per block are used: bit-exact everywhere.

  Why three rounds: one round maps a one-hot input to a vector whose coordinates are all
  ±1/√d — two values, far from the Beta marginal that the codebook assumes. Two rounds make
  each coordinate a normalised sum of d random signs; three rounds (as in Andoni et al.'s
  cross-polytope LSH) remove the remaining lattice structure. docs/decisions.md has the
  measured distortions.

* ``"haar"`` (statistical tier). Π = Q · diag(sign(diag R)) from the QR decomposition of a
  d×d matrix of generator Gaussians (stream ``STREAM_HAAR``), the strict Haar construction
  the paper's theory assumes. LAPACK's QR is not bit-portable; Π is shipped as data in the
  conformance vectors. Applying Π uses the written-order dot product
  (:func:`tqref.reference.reduction.ordered_matvec`), so given Π the codes are exact.

Signs for round r are ``prng.rademacher(seed, STREAM_ROTATION_SIGNS, d, start=r * d)``.
"""

from __future__ import annotations

import functools

import numpy as np

from . import prng
from .reduction import ordered_matvec

HADAMARD_ROUNDS = 3
ROTATIONS = ("hadamard", "haar")
_F32 = np.float32


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def hadamard_block(d: int) -> int:
    """Block size m of the Hadamard rotation for dimension d: largest power of two ≤ d."""
    return 1 << (int(d).bit_length() - 1)


def inverse_sqrt(n: int) -> np.float32:
    """``float32(1) / sqrt(float32(n))``: correctly rounded sqrt, then correctly rounded division."""
    return _F32(1.0) / np.sqrt(_F32(n))


def fwht(x: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Walsh–Hadamard transform over the last axis (Sylvester / natural order), float32.

    ``x``: float32 (..., n) with n a power of two. Stages h = 1, 2, 4, ..., n/2; in stage h
    every pair (j, j + h) with ``j mod 2h < h`` becomes ``(x_j + x_{j+h}, x_j - x_{j+h})``.
    With ``normalize`` every element is then multiplied by ``inverse_sqrt(n)``, giving the
    orthonormal, symmetric, self-inverse H_n. Returns a new float32 array.

    >>> fwht(np.array([1, 0, 0, 0], np.float32)).tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    y = np.array(x, dtype=_F32, copy=True)
    n = y.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"fwht: last axis must be a power of two, got {n}")
    lead = y.shape[:-1]
    h = 1
    while h < n:
        v = y.reshape(lead + (n // (2 * h), 2, h))
        a = v[..., 0, :]
        b = v[..., 1, :]
        y = np.stack((a + b, a - b), axis=-2).reshape(lead + (n,))
        h *= 2
    if normalize:
        y *= inverse_sqrt(n)
    return y


@functools.lru_cache(maxsize=256)
def hadamard_signs(d: int, seed: int) -> np.ndarray:
    """Random signs of all rounds: float32 (HADAMARD_ROUNDS, d), read-only."""
    signs = prng.rademacher(seed, prng.STREAM_ROTATION_SIGNS, HADAMARD_ROUNDS * d)
    signs = signs.reshape(HADAMARD_ROUNDS, d)
    signs.setflags(write=False)
    return signs


def _block_transform(y: np.ndarray, d: int) -> np.ndarray:
    """Orthonormal H_m on [0, m) then on [d − m, d) (one block when d is a power of two)."""
    m = hadamard_block(d)
    y[..., :m] = fwht(y[..., :m])
    if m != d:
        y[..., d - m :] = fwht(y[..., d - m :])
    return y


def _block_transform_inverse(y: np.ndarray, d: int) -> np.ndarray:
    m = hadamard_block(d)
    if m != d:
        y[..., d - m :] = fwht(y[..., d - m :])
    y[..., :m] = fwht(y[..., :m])
    return y


def hadamard_forward(x: np.ndarray, seed: int) -> np.ndarray:
    """Π x for the randomized Hadamard rotation: float32 (..., d) -> float32 (..., d)."""
    d = x.shape[-1]
    signs = hadamard_signs(d, seed)
    y = np.array(x, dtype=_F32, copy=True)
    for r in range(HADAMARD_ROUNDS):
        y *= signs[r]
        y = _block_transform(y, d)
    return y


def hadamard_inverse(y: np.ndarray, seed: int) -> np.ndarray:
    """Πᵀ y, undoing :func:`hadamard_forward` step by step in reverse order."""
    d = y.shape[-1]
    signs = hadamard_signs(d, seed)
    x = np.array(y, dtype=_F32, copy=True)
    for r in reversed(range(HADAMARD_ROUNDS)):
        x = _block_transform_inverse(x, d)
        x *= signs[r]
    return x


@functools.lru_cache(maxsize=32)
def haar_matrix(d: int, seed: int, stream: int = prng.STREAM_HAAR) -> np.ndarray:
    """Haar-random orthogonal Π, float32 (d, d), read-only (statistical tier).

    G = generator Gaussians (``stream``, STREAM_HAAR for rotations) laid out row-major as
    (d, d), float64;
    G = Q R (LAPACK); Π = Q · diag(sign(diag R)), with sign(0) taken as +1; cast to float32.
    """
    g = prng.gaussian(seed, stream, d * d).reshape(d, d)
    q, r = np.linalg.qr(g)
    diag = np.sign(np.diag(r))
    diag[diag == 0] = 1.0
    pi = (q * diag[None, :]).astype(_F32)
    pi.setflags(write=False)
    return pi


def haar_forward(x: np.ndarray, seed: int) -> np.ndarray:
    """Π x with the written-order dot product: float32 (..., d) -> (..., d)."""
    return ordered_matvec(haar_matrix(x.shape[-1], seed), x)


def haar_inverse(y: np.ndarray, seed: int) -> np.ndarray:
    """Πᵀ y with the written-order dot product (rows of Πᵀ are columns of Π)."""
    pi_t = np.ascontiguousarray(haar_matrix(y.shape[-1], seed).T)
    return ordered_matvec(pi_t, y)


def rotate(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Apply Π of the given kind ("hadamard" or "haar") over the last axis."""
    return hadamard_forward(x, seed) if kind == "hadamard" else haar_forward(x, seed)


def rotate_inverse(y: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Apply Πᵀ of the given kind over the last axis."""
    return hadamard_inverse(y, seed) if kind == "hadamard" else haar_inverse(y, seed)
