"""tqref/tolerance.py: the one tolerance rule for float outputs without a written order."""

from __future__ import annotations

import numpy as np
import pytest

from tqref import tolerance

TINY = float(np.finfo(np.float32).tiny)


def test_bound_rule_is_factor_times_bound_plus_floor():
    assert tolerance.from_bound(np.array([1e-7, 3e-7])) == 2 * 3e-7 + TINY
    assert tolerance.from_bound(0.0) == TINY  # an exact zero may still come out subnormal
    assert tolerance.gamma(128) == 128 * 2.0**-24 / (1 - 128 * 2.0**-24)


def test_measured_rule_written_out():
    """FACTOR · (SIGNS · max|ref32 − ref64| + RESOLUTION · scale) + FLOOR = 4·err + 1e-6·scale + FLOOR,
    the flash-attention-style tolerance the kv vectors were generated with."""
    ref64 = np.array([0.5, -3.0, 2.0])
    ref32 = ref64 + np.array([1e-8, -4e-8, 0.0])
    err = 4e-8
    assert tolerance.measured(ref32, ref64) == pytest.approx(4 * err + 1e-6 * 3.0 + TINY, rel=1e-12)
    # a small output: the scale is at least 1
    assert tolerance.measured(ref32 * 1e-3, ref64 * 1e-3) == pytest.approx(4 * err * 1e-3 + 1e-6, rel=1e-9)
    # an explicit scale (‖q‖·‖x‖) and per-row maxima
    rows32, rows64 = np.array([[1.0, 1.0], [1e-20, 0.0]]), np.array([[1.0 + 1e-7, 1.0], [0.0, 0.0]])
    tol = tolerance.measured(rows32, rows64, scale=np.array([[2.0], [1e-20]]), axis=-1)
    assert tol.shape == (2, 1)
    assert tol[0, 0] == pytest.approx(4e-7 + 2e-6, rel=1e-9)
    assert tol[1, 0] == pytest.approx(4e-20 + 1e-26, rel=1e-9)


def test_non_finite_elements_follow_within():
    ref = np.array([1.0, -np.inf, np.nan])
    tol = tolerance.measured(ref, ref)
    assert np.isfinite(tol)
    assert tolerance.within(ref, ref, tol).all()
    assert not tolerance.within(np.array([1.0, np.inf, np.nan]), ref, tol)[1]  # +inf is not −inf
    assert not tolerance.within(np.array([1.0, -np.inf, 0.0]), ref, tol)[2]  # NaN only matches NaN


@pytest.mark.parametrize("shift", [0.5, 10.0])
def test_assert_within_names_the_first_element_outside(shift):
    expected = np.arange(6, dtype=np.float32).reshape(2, 3)
    tol = 0.1
    actual = expected.copy()
    actual[1, 2] += np.float32(shift)
    with pytest.raises(AssertionError, match=r"est\[1, 2\]: expected 5\.0, got .*> tolerance 0\.1 \(1 of 6"):
        tolerance.assert_within(actual, expected, tol, "est")
    actual[1, 2] = expected[1, 2] + np.float32(0.05)
    tolerance.assert_within(actual, expected, tol, "est")
    with pytest.raises(AssertionError, match="expected shape"):
        tolerance.assert_within(actual[0], expected, tol, "est")
