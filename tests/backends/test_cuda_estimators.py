"""CUDA inner-product estimators against the reference (float outputs: tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

from _cuda_support import host, load_backend

C = load_backend()

from tqref.reference import estimators, mse, prod  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1e-30)
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mse_inner_product(unbiased):
    d, m, n = 48, 5, 37  # 2 code tiles (second partial), query tiles of 2
    plan = make_plan(Config("mse", d, 3, seed=2))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    packed, norms = mse.quantize(x, plan)
    got = host(C.mse_inner_product_device(q, packed, norms, plan, unbiased=unbiased, qt=2))
    _close(got, estimators.mse_inner_product(q, packed, norms, plan, unbiased=unbiased))


def test_prod_inner_product():
    d, m, n = 32, 3, 33
    plan = make_plan(Config("prod", d, 3, seed=3, projection="gaussian"))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((m, d)).astype(np.float32)
    codes = prod.quantize(x, plan)
    got = host(C.prod_inner_product_device(q, *codes, plan, qt=2))
    _close(got, estimators.prod_inner_product(q, *codes, plan))


def test_backend_object_estimators():
    backend = C.CudaBackend()
    plan = make_plan(Config("mse", 16, 2, seed=1))
    rng = np.random.default_rng(8)
    packed, norms = mse.quantize(rng.standard_normal((9, 16)).astype(np.float32), plan)
    q = rng.standard_normal((2, 16)).astype(np.float32)
    got = backend.mse_inner_product(q, packed, norms, plan)
    assert isinstance(got, np.ndarray) and got.shape == (2, 9)
    _close(got, estimators.mse_inner_product(q, packed, norms, plan))
