"""CUDA inner-product estimators against the reference (float outputs: tqref.tolerance's rule,
the reference's error measured against tests/reference64.py, at the scale ‖q‖·‖x‖)."""

from __future__ import annotations

import numpy as np
import pytest

import reference64
from _cuda_support import host, load_backend

C = load_backend()

from tqref.reference import estimators, mse, prod  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402


def _close(got, want, want64, q, norms):
    scale = np.outer(np.linalg.norm(q.astype(np.float64), axis=1), np.asarray(norms, np.float64))
    assert got.shape == want.shape
    reference64.within(got, want, want64, "cuda estimates", scale=scale)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mse_inner_product(unbiased):
    d, m, n = 48, 5, 37  # 2 code tiles (second partial), query tiles of 2
    plan = make_plan(Config("mse", d, 3, seed=2))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    packed, norms = mse.quantize(x, plan)
    got = host(C.mse_inner_product_device(q, packed, norms, plan, unbiased=unbiased, qt=2))
    want64 = reference64.mse_estimates(estimators.rotate_queries(q, plan), packed, norms, plan, unbiased=unbiased)
    _close(got, estimators.mse_inner_product(q, packed, norms, plan, unbiased=unbiased), want64, q, norms)


def test_prod_inner_product():
    d, m, n = 32, 3, 33
    plan = make_plan(Config("prod", d, 3, seed=3, projection="gaussian"))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    codes = prod.quantize(x, plan)
    got = host(C.prod_inner_product_device(q, *codes, plan, qt=2))
    want64 = reference64.prod_estimates(estimators.rotate_queries(q, plan), *codes, plan)
    _close(got, estimators.prod_inner_product(q, *codes, plan), want64, q, codes[1])


def test_backend_object_estimators():
    backend = C.CudaBackend()
    plan = make_plan(Config("mse", 16, 2, seed=1))
    rng = np.random.default_rng(8)
    packed, norms = mse.quantize(rng.standard_normal((9, 16)).astype(np.float32), plan)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    got = backend.mse_inner_product(q, packed, norms, plan)
    assert isinstance(got, np.ndarray) and got.shape == (2, 9)
    want64 = reference64.mse_estimates(estimators.rotate_queries(q, plan), packed, norms, plan)
    _close(got, estimators.mse_inner_product(q, packed, norms, plan), want64, q, norms)
