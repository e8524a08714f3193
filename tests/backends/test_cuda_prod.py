"""CUDA prod kernels against the reference: mse codes, norms, QJL sign bits and γ bit for
bit; the dequantized vectors (which go through a statistical-order Sᵀz) by tqref.tolerance's
rule, row by row at the scale ‖x‖ (tests/reference64.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reference64
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
    want64 = reference64.prod_dequantize(*ref, plan)
    norms = np.asarray(ref[1], np.float64)[:, None]
    reference64.within(out, want, want64, "cuda prod_dequantize", scale=norms, axis=-1)
