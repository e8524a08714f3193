"""Checks that a backend runs a plan with given arrays (Plan.with_data) with those arrays —
not with the tables it cached for the derived plan of the same Config — shared by the numba
and cuda tests (test_numba_given_plan.py, test_cuda_given_plan.py)."""

from __future__ import annotations

import numpy as np

from tqref.backends.reference import ReferenceBackend
from tqref.reference import codebook as cb
from tqref.reference.plan import Config, Plan

REF = ReferenceBackend()


def rows(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def other_orthogonal(d, seed):
    """A float32 orthogonal matrix unrelated to tqref's Haar Π."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def assert_same(want, got, what):
    assert want.dtype == got.dtype and want.shape == got.shape, what
    assert want.tobytes() == got.tobytes(), what


def check_mse(backend, plan, x):
    """Codes, norms, the decoded rows and Π x equal the reference's for ``plan``."""
    packed, norms = REF.mse_quantize(x, plan)
    got = backend.mse_quantize(x, plan)
    assert_same(packed, np.asarray(got[0]), "packed")
    assert_same(norms, np.asarray(got[1]), "norms")
    assert_same(REF.mse_dequantize(packed, norms, plan), backend.mse_dequantize(packed, norms, plan), "decoded")
    assert_same(REF.rotate(x, plan), backend.rotate(x, plan), "rotated")


def check_given_haar_matrix(backend, d):
    """The derived plan runs first (its tables cached), then one with another Π, then the
    derived one again."""
    derived = Plan.from_config(Config("mse", d, 3, 5, "haar"))
    given = derived.with_data(matrix=other_orthogonal(d, 1))
    x = rows(9, d)
    for plan in (derived, given, derived):
        check_mse(backend, plan, x)


def check_given_codebook(backend, d=32):
    """Thresholds, centroids and α (the unbiased estimator's shrinkage) come from the
    given codebook."""
    derived = Plan.from_config(Config("mse", d, 2, 7))
    book = derived.codebook
    given = derived.with_data(codebook=cb.Codebook(2, d, book.law, book.centroids * 1.5, book.boundaries * 3,
                                                   book.distortion))
    x = rows(20, d, 1)
    for plan in (derived, given):
        check_mse(backend, plan, x)
    packed, norms = REF.mse_quantize(x, given)
    queries = rows(3, d, 2)
    want = REF.mse_inner_product(queries, packed, norms, given, unbiased=True)
    got = backend.mse_inner_product(queries, packed, norms, given, unbiased=True)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=1e-5)


def check_given_projection(backend, d=32):
    """prod quantize with a given QJL S: every output bit-exact (the signs read S)."""
    derived = Plan.from_config(Config("prod", d, 3, 2, projection="gaussian"))
    given = derived.with_data(projection=other_orthogonal(d, 4))
    x = rows(17, d, 2)
    for plan in (derived, given, derived):
        want, got = REF.prod_quantize(x, plan), backend.prod_quantize(x, plan)
        for w, g, what in zip(want, got, ("packed", "norms", "signs", "gammas")):
            assert_same(w, np.asarray(g), what)
