"""Numba kernels read the Plan they are given: a plan with given arrays (Plan.with_data: a
Haar Π, a QJL S or a codebook shipped as data) runs with those arrays, not with the cached
tables of the derived plan of the same Config."""

from __future__ import annotations

import numpy as np
import pytest

from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.reference import ReferenceBackend
from tqref.reference import codebook as cb
from tqref.reference.plan import Config, Plan

REF = ReferenceBackend()
NB = NumbaBackend()


def _x(rows, d, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, d)).astype(np.float32)


def _other_orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _assert_same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), what


def _check_mse(plan, x):
    packed, norms = REF.mse_quantize(x, plan)
    got = NB.mse_quantize(x, plan)
    _assert_same(packed, got[0], "packed")
    _assert_same(norms, got[1], "norms")
    _assert_same(REF.mse_dequantize(packed, norms, plan), NB.mse_dequantize(packed, norms, plan), "dequantized")


@pytest.mark.parametrize("d", [16, 24])
def test_a_given_haar_matrix_is_used_after_the_derived_plan_ran(d):
    derived = Plan.from_config(Config("mse", d, 3, 5, "haar"))
    x = _x(9, d)
    _check_mse(derived, x)  # the derived plan's tables are built (and cached) first
    given = derived.with_data(matrix=_other_orthogonal(d, 1))
    _check_mse(given, x)
    _check_mse(derived, x)  # and the derived plan still gets its own


def test_a_given_codebook_is_used():
    """Thresholds, centroids and α (the unbiased estimator's shrinkage) all come from it."""
    derived = Plan.from_config(Config("mse", 32, 2, 7))
    book = derived.codebook
    given = derived.with_data(codebook=cb.Codebook(2, 32, book.law, book.centroids * 1.5, book.boundaries * 3,
                                                   book.distortion))
    x = _x(20, 32, 1)
    _check_mse(derived, x)
    _check_mse(given, x)
    packed, norms = REF.mse_quantize(x, given)
    queries = _x(3, 32, 2)
    want = REF.mse_inner_product(queries, packed, norms, given, unbiased=True)
    got = NB.mse_inner_product(queries, packed, norms, given, unbiased=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_a_given_projection_is_used():
    derived = Plan.from_config(Config("prod", 32, 3, 2, projection="gaussian"))
    given = derived.with_data(projection=_other_orthogonal(32, 4))
    x = _x(17, 32, 2)
    for plan in (derived, given, derived):
        want, got = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
        for w, g, what in zip(want, got, ("packed", "norms", "signs", "gammas")):
            _assert_same(w, g, what)
