"""Random rotations Π (paper Algorithm 1, line 1; docs/compatibility.md "Hadamard rotation", "Haar rotation").

Two kinds, both defined for every dimension d ≥ 2:

* ``"hadamard"`` (portable tier, the default). A sequence of steps, each "multiply the
  whole vector by fresh random signs, then apply the normalised Walsh–Hadamard transform
  H_m to one block". For d a power of two there is one block (m = d) and
  ``HADAMARD_ROUNDS`` steps: Π = H D_3 H D_2 H D_1. For other d, m is the largest power of
  two below d, the blocks are [0, m) and [d − m, d) (overlapping, so every output mixes every
  input), and each round is two steps — head block, then tail block — so 2·HADAMARD_ROUNDS
  steps in all. Fresh signs before *every* block matter: with one sign vector per round
  the tail block of round 1 sees a truncated constant vector, and one-hot inputs ended at
  up to 4× the codebook's distortion at d = 160 (docs/decisions.md). Each step is
  orthogonal, so the whole rotation is. Only sign flips, add/sub butterflies and one
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

Signs for step s are ``prng.rademacher(seed, STREAM_ROTATION_SIGNS, d, start=s * d)``.
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
    x = np.asarray(x, dtype=_F32)
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"fwht: last axis must be a power of two, got {n}")
    columns = np.array(x.reshape(-1, n).T, order="C")  # a copy, (n, vectors): stages on rows
    _fwht_rows(columns, normalize)
    return columns.T.reshape(x.shape)


def _fwht_rows(y: np.ndarray, normalize: bool = True) -> None:
    """In-place FWHT along axis 0 of a C-contiguous float32 (n, N) array.

    The vectors are the columns, so each butterfly stage is two long contiguous array
    operations (this layout is only for speed; the arithmetic is exactly :func:`fwht`'s).
    """
    n = y.shape[0]
    h = 1
    while h < n:
        v = y.reshape(n // (2 * h), 2, h * y.shape[1])
        a, b = v[:, 0, :], v[:, 1, :]
        total = a + b
        np.subtract(a, b, out=b)
        a[...] = total
        h *= 2
    if normalize:
        y *= inverse_sqrt(n)


def hadamard_steps(d: int) -> list:
    """The blocks [lo, hi) transformed by the successive steps of the Hadamard rotation.

    >>> hadamard_steps(8)
    [(0, 8), (0, 8), (0, 8)]
    >>> hadamard_steps(80)[:2]
    [(0, 64), (16, 80)]
    """
    m = hadamard_block(d)
    blocks = [(0, m)] if m == d else [(0, m), (d - m, d)]
    return blocks * HADAMARD_ROUNDS


@functools.lru_cache(maxsize=256)
def hadamard_signs(d: int, seed: int) -> np.ndarray:
    """Random signs of every step: float32 (len(hadamard_steps(d)), d), read-only."""
    steps = len(hadamard_steps(d))
    signs = prng.rademacher(seed, prng.STREAM_ROTATION_SIGNS, steps * d).reshape(steps, d)
    signs.setflags(write=False)
    return signs


def hadamard_forward(x: np.ndarray, seed: int) -> np.ndarray:
    """Π x for the randomized Hadamard rotation of ``seed`` (:func:`hadamard_apply`)."""
    return hadamard_apply(x, hadamard_signs(np.shape(x)[-1], seed))


def hadamard_inverse(y: np.ndarray, seed: int) -> np.ndarray:
    """Πᵀ y for the randomized Hadamard rotation of ``seed`` (:func:`hadamard_apply_inverse`)."""
    return hadamard_apply_inverse(y, hadamard_signs(np.shape(y)[-1], seed))


def hadamard_apply(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Π x given the signs float32 (len(hadamard_steps(d)), d): float32 (..., d) -> (..., d).

    Step s: multiply by signs[s], then the normalised FWHT on block hadamard_steps(d)[s].
    """
    x = np.asarray(x, dtype=_F32)
    d = x.shape[-1]
    y = np.array(x.reshape(-1, d).T, order="C")  # a copy, vectors as columns (see _fwht_rows)
    for s, (lo, hi) in enumerate(hadamard_steps(d)):
        y *= signs[s][:, None]
        _fwht_rows(y[lo:hi])
    return y.T.reshape(x.shape)


def hadamard_apply_inverse(y: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Πᵀ y: the steps of :func:`hadamard_apply` undone in reverse order."""
    y = np.asarray(y, dtype=_F32)
    d = y.shape[-1]
    x = np.array(y.reshape(-1, d).T, order="C")
    steps = hadamard_steps(d)
    for s in reversed(range(len(steps))):
        lo, hi = steps[s]
        _fwht_rows(x[lo:hi])
        x *= signs[s][:, None]
    return x.T.reshape(y.shape)


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
    return ordered_matvec(haar_matrix(np.shape(x)[-1], seed), x)


def haar_inverse(y: np.ndarray, seed: int) -> np.ndarray:
    """Πᵀ y with the written-order dot product (rows of Πᵀ are columns of Π)."""
    return matrix_apply_inverse(y, haar_matrix(np.shape(y)[-1], seed))


def matrix_apply_inverse(y: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Πᵀ y for a given Π float32 (d, d), written-order dot product."""
    return ordered_matvec(np.ascontiguousarray(matrix.T), y)


def apply(x: np.ndarray, signs, matrix) -> np.ndarray:
    """Π x from a plan's arrays: the Haar ``matrix`` if given, else the Hadamard ``signs``."""
    return ordered_matvec(matrix, x) if matrix is not None else hadamard_apply(x, signs)


def apply_inverse(y: np.ndarray, signs, matrix) -> np.ndarray:
    """Πᵀ y from a plan's arrays (see :func:`apply`)."""
    return matrix_apply_inverse(y, matrix) if matrix is not None else hadamard_apply_inverse(y, signs)


def rotate(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Apply Π of the given kind ("hadamard" or "haar") over the last axis."""
    return hadamard_forward(x, seed) if kind == "hadamard" else haar_forward(x, seed)


def rotate_inverse(y: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Apply Πᵀ of the given kind over the last axis."""
    return hadamard_inverse(y, seed) if kind == "hadamard" else haar_inverse(y, seed)
