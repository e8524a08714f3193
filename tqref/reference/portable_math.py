"""float64 elementary functions that give the same bits on every machine (docs/compatibility.md).

NumPy's ``sin``, ``cos``, ``arcsin``, ``power`` and ``exp`` dispatch to SIMD code chosen at run
time (AVX-512, AVX2, baseline) and to libm, whose variants differ by a few ulps; ``@`` and
``np.linalg.solve`` go to BLAS/LAPACK kernels whose summation order depends on the CPU. The
Lloyd–Max solver (codebook.py) must not inherit that: a codebook solved at run time for a
dimension that is not frozen decides codes, so its bits must not depend on the CPU.

Everything here is built only from IEEE-754 float64 operations that are correctly rounded
(+, −, ×, ÷, sqrt) applied one NumPy ufunc at a time (NumPy never fuses two ufuncs into an
FMA), in the order written in each docstring. Constants are exact rationals rounded once to
float64 (``fractions.Fraction`` → ``float``, correctly rounded). The results are accurate to a
few ulps — not correctly rounded — but they are *the same* few ulps everywhere, which is what a
portable specification needs. A port reproduces them by evaluating the same expressions in the
same order without FMA contraction.

Worked example::

    >>> import numpy as np
    >>> float(sin_cos(np.array([0.0]))[1][0])
    1.0
    >>> abs(float(asin(np.array([1.0]))[0]) - HALF_PI) < 1e-16
    True
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

#: π/2 rounded to float64 (0x1.921fb54442d18p+0)
HALF_PI = float.fromhex("0x1.921fb54442d18p+0")

# Series lengths: chosen so the first omitted term is < 1e-19 relative on the stated domain.
_SIN_COS_TERMS = 14  # |x| ≤ π/2: (π/2)^29 / 29! < 1e-24
_ASIN_TERMS = 32  # |x| ≤ 1/2: c_n (1/2)^(2n+1) < 1e-20 for n ≥ 32


def _f(q: Fraction) -> float:
    """Exact rational → float64, correctly rounded (Python's int/int division)."""
    return q.numerator / q.denominator


@functools.lru_cache(maxsize=None)
def _sin_coefficients() -> tuple:
    """(−1)^n / (2n+1)!, n = 0.. _SIN_COS_TERMS − 1: sin x = x · Σ s_n x^(2n)."""
    out, fact = [], 1
    for n in range(_SIN_COS_TERMS):
        fact = fact * (2 * n) * (2 * n + 1) if n else 1
        out.append(_f(Fraction((-1) ** n, fact)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _cos_coefficients() -> tuple:
    """(−1)^n / (2n)!, n = 0.. _SIN_COS_TERMS − 1: cos x = Σ c_n x^(2n)."""
    out, fact = [], 1
    for n in range(_SIN_COS_TERMS):
        fact = fact * (2 * n - 1) * (2 * n) if n else 1
        out.append(_f(Fraction((-1) ** n, fact)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _asin_coefficients() -> tuple:
    """(2n)! / (4^n (n!)² (2n+1)), n = 0.. _ASIN_TERMS − 1: asin x = x · Σ a_n x^(2n)."""
    out, central = [], 1  # central = C(2n, n)
    for n in range(_ASIN_TERMS):
        if n:
            central = central * (2 * n) * (2 * n - 1) // (n * n)
        out.append(_f(Fraction(central, 4**n * (2 * n + 1))))
    return tuple(out)


def horner(coefficients, x: np.ndarray) -> np.ndarray:
    """Σ_k coefficients[k] · x^k by Horner's rule from the highest power down:
    ``acc = c_K; acc = acc·x + c_k`` for k = K−1 … 0 (a multiply rounded, then an add rounded)."""
    x = np.asarray(x, dtype=np.float64)
    acc = np.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * x
        acc = acc + c
    return acc


def sin_cos(x: np.ndarray) -> tuple:
    """(sin x, cos x), float64, for |x| ≤ π/2, by their Taylor series in x² (Horner).

    sin x = x · S(x²), cos x = C(x²). Absolute error ≲ 2e-16 on the domain; outside it the
    series is not accurate and the caller must reduce the argument first.
    """
    x = np.asarray(x, dtype=np.float64)
    x2 = x * x
    return x * horner(_sin_coefficients(), x2), horner(_cos_coefficients(), x2)


def asin(x: np.ndarray) -> np.ndarray:
    """arcsin x, float64, for x in [0, 1].

    x ≤ 1/2: x · A(x²), the arcsine series by Horner. x > 1/2: π/2 − 2·asin(√((1 − x)/2))
    (1 − x is exact there by Sterbenz's lemma, ÷2 is exact, sqrt correctly rounded), whose
    argument is ≤ 1/2.
    """
    x = np.asarray(x, dtype=np.float64)
    high = x > 0.5
    y = np.where(high, np.sqrt((1.0 - np.where(high, x, 0.0)) / 2.0), x)
    series = y * horner(_asin_coefficients(), y * y)
    return np.where(high, HALF_PI - 2.0 * series, series)


def ipow(x: np.ndarray, n: int) -> np.ndarray:
    """x^n for an integer n ≥ 0 by left-to-right binary powering.

    Written order: r = x; for each bit of n after the leading one, from high to low:
    r = r·r, then r = r·x if the bit is set. (n = 0 gives 1.)
    """
    x = np.asarray(x, dtype=np.float64)
    if n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n}")
    if n == 0:
        return np.ones_like(x)
    r = x
    for bit in bin(n)[3:]:
        r = r * r
        if bit == "1":
            r = r * x
    return r


def pow_half(x: np.ndarray, two_a: int) -> np.ndarray:
    """x^(two_a / 2) for x ≥ 0 and an integer ``two_a`` (any sign).

    Written order: r = ipow(x, |two_a| // 2); if two_a is odd, r = r·sqrt(x); if two_a < 0,
    r = 1 / r. (x = 0 with a negative exponent gives +inf, as the density's limit does.)
    """
    x = np.asarray(x, dtype=np.float64)
    r = ipow(x, abs(two_a) // 2)
    if two_a % 2:
        r = r * np.sqrt(x)
    if two_a < 0:
        with np.errstate(divide="ignore"):
            r = 1.0 / r
    return r


def ordered_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last axis as a left fold: ((v_0 + v_1) + v_2) + …  → (...,), float64.

    ``np.add.accumulate`` is defined as this fold; ``np.sum`` (pairwise, unrolled) and ``@``
    (BLAS) have no order a port can rely on.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1] == 0:
        return np.zeros(values.shape[:-1])
    return np.add.accumulate(values, axis=-1)[..., -1]


def solve_tridiagonal(lower: np.ndarray, diag: np.ndarray, upper: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve A x = rhs for tridiagonal A (Thomas algorithm, no pivoting), float64.

    A[i, i] = diag[i] (m,), A[i, i+1] = upper[i] (m−1,), A[i+1, i] = lower[i] (m−1,).
    Written order, i = 1 … m−1: w = lower[i−1] / d[i−1]; d[i] = diag[i] − w·upper[i−1];
    r[i] = rhs[i] − w·r[i−1]; then x[m−1] = r[m−1] / d[m−1] and, i = m−2 … 0,
    x[i] = (r[i] − upper[i]·x[i+1]) / d[i]. Stable for the diagonally dominant Lloyd–Max
    Jacobians it is used on.
    """
    d = [float(v) for v in diag]
    r = [float(v) for v in rhs]
    lo = [float(v) for v in lower]
    up = [float(v) for v in upper]
    m = len(d)
    for i in range(1, m):
        w = lo[i - 1] / d[i - 1]
        d[i] = d[i] - w * up[i - 1]
        r[i] = r[i] - w * r[i - 1]
    x = [0.0] * m
    x[m - 1] = r[m - 1] / d[m - 1]
    for i in range(m - 2, -1, -1):
        x[i] = (r[i] - up[i] * x[i + 1]) / d[i]
    return np.array(x, dtype=np.float64)


def _legendre(n: int, x: np.ndarray) -> tuple:
    """(P_n(x), P_n'(x)) by the three-term recurrence k P_k = (2k − 1) x P_{k−1} − (k − 1) P_{k−2}
    and P_n' = n (P_{n−1} − x P_n) / ((1 − x)(1 + x)), in that written order."""
    p_prev, p = np.ones_like(x), x
    for k in range(2, n + 1):
        p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
    return p, n * (p_prev - x * p) / ((1.0 - x) * (1.0 + x))


@functools.lru_cache(maxsize=None)
def gauss_legendre(n: int) -> tuple:
    """n-point Gauss–Legendre nodes and weights on [−1, 1], float64 (n,), read-only.

    Each node by Newton's method on P_n from cos(π (i + 3/4) / (n + 1/2)) (i = 0 … n−1,
    cos from :func:`sin_cos` after reducing by symmetry), P_n and P_n' by the three-term
    recurrence (:func:`_legendre`); weight 2 / ((1 − x)(1 + x) P_n'(x)²) at the final node.
    Twelve Newton steps (quadratic convergence, the last ones change nothing); nodes are
    returned ascending.
    """
    i = np.arange(n, dtype=np.float64)
    angle = float(np.pi) * (i + 0.75) / (n + 0.5)  # in (0, π)
    # cos on (0, π) from the series on |t| ≤ π/2: cos(angle) = −sin(angle − π/2)
    x = -sin_cos(angle - HALF_PI)[0]
    for _ in range(12):
        p, dp = _legendre(n, x)
        x = x - p / dp
    dp = _legendre(n, x)[1]
    weights = 2.0 / (((1.0 - x) * (1.0 + x)) * dp * dp)
    order = np.argsort(x)
    nodes, weights = x[order], weights[order]
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights
