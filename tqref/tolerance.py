"""The one tolerance rule for float outputs whose evaluation order is not written.

Outputs computed in a written order (codes, norms, mse dequantization, rotated queries) are
compared bit for bit. Every other float output of an implementation — inner-product
estimates, prod reconstructions, attention, logit biases: matrix products whose summation
order is the implementation's choice — is compared with a tolerance derived from the
reference's *own* float32 error e (docs/compatibility.md, "The tolerance rule"):

    tolerance = FACTOR · e + FLOOR

e comes from one of two places:

* an analytic bound on |reference in float32 − exact| (``from_bound``), as the conformance
  generator derives for the estimators from γ_n = n·u/(1 − n·u) (Higham, "Accuracy and
  Stability of Numerical Algorithms", §3.1) — ``gamma`` and ``U32`` below;
* a measurement, flash-attention style (``measured``): the same computation redone in float64
  from the same float32 inputs gives e ≈ SIGNS · max|ref32 − ref64| + RESOLUTION · scale.
  SIGNS = 2 because another implementation's error can have the opposite sign to ours: two
  correct float32 results can lie 2e apart. RESOLUTION · scale covers one sample that happens
  to be (nearly) exact: it is about four float32 ulps of ``scale``, the magnitude of the terms
  summed (default max(1, max|ref64|)).

FACTOR = 2 is the margin over that error; FLOOR, the smallest normal float32, lets an output
whose error bound is 0 (a zero input) still differ by a subnormal. Elementwise,
|actual − expected| ≤ tolerance, as float64; NaN matches only NaN and an infinity only the
same infinity (``within``).

>>> from_bound(1e-7) == 2e-7 + FLOOR
True
>>> first_outside(np.array([1.0, 2.5]), np.array([1.0, 2.0]), 0.1, "est")
'est[1]: expected 2.0, got 2.5; |difference| 0.5 > tolerance 0.1 (1 of 2 elements outside)'
"""

from __future__ import annotations

import numpy as np

#: unit roundoff of float32 (2^-24): |f32(x) − x| ≤ U32·|x|
U32 = 2.0**-24
#: the margin a tolerance keeps over the reference's own error
FACTOR = 2.0
#: added to every tolerance: the smallest normal float32 (an exact zero may come out subnormal)
FLOOR = float(np.finfo(np.float32).tiny)
#: a measured |float32 − float64| difference → an error estimate: errors of either sign
SIGNS = 2.0
#: the resolution term of a measured error estimate, relative to the summed terms' magnitude
RESOLUTION = 5e-7


def gamma(n: int) -> float:
    """γ_n = n·u / (1 − n·u) (u = U32): bound on the relative error of any float32 n-term sum."""
    return n * U32 / (1.0 - n * U32)


def from_bound(bound) -> float:
    """Tolerance from an analytic bound (scalar or array, float64) on the reference's error."""
    return float(FACTOR * np.max(bound) + FLOOR)


def error_estimate(ref32, ref64, scale=None, axis=None):
    """The reference's error estimated from a float64 recomputation of the same output:
    SIGNS · max|ref32 − ref64| + RESOLUTION · scale.

    The maximum is over ``axis`` (None: every element; else kept as a length-1 axis, so that
    each vector gets its own estimate). ``scale`` is the magnitude of the summed terms —
    ‖q‖·‖x‖ for an inner-product estimate, ‖x‖ for a reconstruction — broadcastable to the
    result; by default max(1, max|ref64|) over ``axis``. Non-finite elements are left to
    ``within``. Returns a float, or an array where ``axis`` or ``scale`` make one.
    """
    ref64 = np.asarray(ref64, np.float64)
    with np.errstate(invalid="ignore"):  # −inf − −inf: a non-finite element, left to within
        diff = np.abs(np.asarray(ref32, np.float64) - ref64)
    keep = axis is not None
    worst = np.max(np.where(np.isfinite(diff), diff, 0.0), axis=axis, keepdims=keep, initial=0.0)
    if scale is None:
        top = np.max(np.where(np.isfinite(ref64), np.abs(ref64), 0.0), axis=axis, keepdims=keep, initial=0.0)
        scale = np.maximum(1.0, top)
    e = SIGNS * worst + RESOLUTION * np.asarray(scale, np.float64)
    return float(e) if np.ndim(e) == 0 else e


def measured(ref32, ref64, scale=None, axis=None):
    """Tolerance of an output from the reference's float32 result and its float64 recomputation
    (same shape): FACTOR · error_estimate(ref32, ref64, scale, axis) + FLOOR."""
    tol = FACTOR * error_estimate(ref32, ref64, scale, axis) + FLOOR
    return float(tol) if np.ndim(tol) == 0 else tol


def within(actual, expected, tol) -> np.ndarray:
    """Elementwise bool: |actual − expected| ≤ tol (a float or an array broadcastable to the
    shape) in float64, NaN = NaN, ±inf = the same ±inf."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return (np.abs(a - e) <= np.asarray(tol, np.float64)) | (np.isnan(a) & np.isnan(e)) | (np.isinf(e) & (a == e))


def first_outside(actual, expected, tol, what: str = "output"):
    """None if every element is within ``tol``, else one line naming the first element outside."""
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        return f"{what}: expected shape {list(e.shape)}, got {list(a.shape)}"
    bad = np.flatnonzero(~within(a, e, tol))
    if not bad.size:
        return None
    i = int(bad[0])
    at = f"[{', '.join(str(int(j)) for j in np.unravel_index(i, e.shape))}]" if e.ndim else ""
    av, ev = a.reshape(-1)[i], e.reshape(-1)[i]
    diff = abs(float(av) - float(ev))
    t = float(np.broadcast_to(np.asarray(tol, np.float64), e.shape).reshape(-1)[i])
    return (f"{what}{at}: expected {ev!s}, got {av!s}; |difference| {diff:.3g} > tolerance {t:.3g}"
            f" ({bad.size} of {e.size} elements outside)")


def assert_within(actual, expected, tol, what: str = "output") -> None:
    """Raise AssertionError with ``first_outside``'s message unless every element is within ``tol``."""
    problem = first_outside(actual, expected, tol, what)
    if problem:
        raise AssertionError(problem)
