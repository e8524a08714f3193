"""CUDA prod kernels against the reference: mse codes, norms, QJL sign bits and γ bit for
bit; the dequantized vectors (which go through a statistical-order Sᵀz) by tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from _cuda_support import edge_rows, host, load_backend, same_bits

C = load_backend()

from tqref.reference import prod  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402

CASES = [
    (64, 3, "hadamard", "gaussian", 3, 7),
    (40, 3, "hadamard", "rademacher", 2, 5),
    (24, 2, "haar", "orthogonal", 2, 3),
]


@pytest.mark.parametrize("d,bits,rot,proj,warps,n", CASES)
def test_prod_quantize_bits_and_dequantize_tolerance(d, bits, rot, proj, warps, n):
    plan = make_plan(Config("prod", d, bits, seed=7, rotation=rot, projection=proj))
    x = edge_rows(np.random.default_rng(d + bits), n, d)
    got = [host(a) for a in C.prod_quantize_device(x, plan, threads=warps)]
    ref = prod.quantize(x, plan)
    np.testing.assert_array_equal(got[0], ref[0])
    assert same_bits(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])
    assert same_bits(got[3], ref[3])
    out = host(C.prod_dequantize_device(*ref, plan, threads=warps))
    want = prod.dequantize(*ref, plan)
    scale = np.maximum(np.abs(want).max(axis=1, keepdims=True), np.float32(1e-30))
    np.testing.assert_allclose(out / scale, want / scale, rtol=0, atol=2e-6)
