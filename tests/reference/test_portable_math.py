"""portable_math: accuracy against NumPy/libm (a tolerance: those differ by CPU) and the
written orders that make the results identical on every CPU."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqref.reference import portable_math as pm

ULP = np.finfo(np.float64).eps


def test_sin_cos_accuracy_on_the_domain():
    x = np.linspace(-pm.HALF_PI, pm.HALF_PI, 200_001)
    s, c = pm.sin_cos(x)
    assert np.max(np.abs(s - np.sin(x))) <= 4 * ULP
    assert np.max(np.abs(c - np.cos(x))) <= 4 * ULP
    assert pm.sin_cos(np.array([0.0]))[0][0] == 0.0 and pm.sin_cos(np.array([0.0]))[1][0] == 1.0


def test_asin_accuracy_and_end_points():
    x = np.linspace(0.0, 1.0, 200_001)
    got, want = pm.asin(x), np.arcsin(x)
    assert np.max(np.abs(got - want) / np.maximum(want, 1e-300)) <= 8 * ULP
    assert pm.asin(np.array([0.0]))[0] == 0.0
    assert abs(pm.asin(np.array([1.0]))[0] - pm.HALF_PI) <= ULP


@given(hnp.arrays(np.float64, 8, elements=st.floats(0.0, 4.0)), st.integers(0, 300))
def test_ipow_is_binary_powering(x, n):
    want = np.ones_like(x)
    for bit in bin(n)[2:]:  # the same left-to-right order, written out independently
        want = want * want
        if bit == "1":
            want = want * x
    assert pm.ipow(x, n).tobytes() == want.tobytes()
    assert np.allclose(pm.ipow(x, n), np.power(x, n), rtol=1e-13, atol=0)


@pytest.mark.parametrize("two_a", [-3, -1, 0, 1, 2, 5, 125, 4093])
def test_pow_half_matches_power(two_a):
    x = np.linspace(0.01, 1.0, 1000)
    # binary powering: each squaring doubles the relative error, so it stays below ~|a|·ulp
    # (results below the normal range lose relative accuracy, hence the atol)
    assert np.allclose(pm.pow_half(x, two_a), np.power(x, two_a / 2), rtol=(abs(two_a) + 4) * ULP, atol=1e-300)
    assert pm.pow_half(np.array([0.0]), -1)[0] == np.inf


def test_ordered_sum_is_a_left_fold():
    v = np.array([[1e16, 1.0, -1e16, 1.0]])
    assert pm.ordered_sum(v)[0] == ((1e16 + 1.0) - 1e16) + 1.0  # = 1.0, not pairwise 2.0 or 0.0
    assert pm.ordered_sum(np.zeros((3, 0))).shape == (3,)


@settings(max_examples=50)
@given(st.integers(1, 130), st.data())
def test_tridiagonal_solver_matches_dense_solve(m, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    lower, upper = rng.uniform(0, 0.4, m - 1), rng.uniform(0, 0.4, m - 1)
    diag = -1.0 - rng.uniform(0, 0.2, m)
    rhs = rng.standard_normal(m)
    a = np.diag(diag) + np.diag(upper, 1) + np.diag(lower, -1)
    assert np.allclose(pm.solve_tridiagonal(lower, diag, upper, rhs), np.linalg.solve(a, rhs), rtol=1e-12, atol=1e-14)


def test_gauss_legendre_is_exact_for_polynomials_and_beats_leggauss_weights():
    nodes, weights = pm.gauss_legendre(40)
    assert np.all(np.diff(nodes) > 0) and nodes.flags.writeable is False
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(40)
    assert np.max(np.abs(nodes - ref_nodes)) <= 2 * ULP
    assert np.allclose(weights, ref_weights, rtol=1e-12, atol=0)  # leggauss's own error is ~7e-13
    for k in range(0, 80, 2):  # exact for degree ≤ 79: ∫ x^k = 2/(k+1)
        assert abs(pm.ordered_sum(weights * nodes**k) - 2.0 / (k + 1)) <= 1e-14
