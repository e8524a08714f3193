"""Numba backend vs the reference: TurboQuant_prod and QJL.

Integer outputs (mse codes, QJL sign bits) and the written-order floats (norms, γ) are
bit-exact. prod dequantization contains zᵀS, which the reference computes with a BLAS
matmul (no written order), so it is compared with a tolerance: the forward error bound of
a d-term float32 sum, 2·eps·d·‖x‖ per coordinate. The largest error measured over 300
random configurations (d 2..256, bits 2..5, both rotations, all projections, scales
1e-20..1e20) was 0.19·eps·d·‖x‖.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tqref
from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.reference import ReferenceBackend

from _numba_support import (DIMS, EPS32, KINDS, LAWS, PROJECTIONS, ROTATIONS, ROWS, SEEDS, assert_same,
                             make_input, prod_plan)

REF = ReferenceBackend()
NB = NumbaBackend()


def assert_dequant_close(want, got, norms, dim):
    tol = 2.0 * EPS32 * dim * np.asarray(norms, np.float64)[:, None] + 1e-37
    err = np.abs(want.astype(np.float64) - got)
    assert np.all(err <= tol), f"max error {np.max(err / tol):.3g} × tolerance"


@settings(max_examples=40)
@given(dim=DIMS, bits=st.integers(2, 9), seed=SEEDS, rotation=ROTATIONS, law=LAWS, projection=PROJECTIONS,
       rows=ROWS, kind=KINDS, data_seed=st.integers(0, 2**32 - 1))
def test_prod_quantize_is_bit_exact(dim, bits, seed, rotation, law, projection, rows, kind, data_seed):
    plan = prod_plan(dim, bits, seed, rotation, law, projection)
    x = make_input(kind, rows, dim, data_seed)
    want, got = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
    for name, a, b in zip(("packed", "norms", "signs", "gammas"), want, got):
        assert_same(a, b, name)
    packed, norms, signs, gammas = want
    ok = np.isfinite(norms)
    assert_dequant_close(REF.prod_dequantize(packed[ok], norms[ok], signs[ok], gammas[ok], plan),
                         NB.prod_dequantize(packed[ok], norms[ok], signs[ok], gammas[ok], plan), norms[ok], dim)


@settings(max_examples=20)
@given(dim=DIMS, bits=st.integers(2, 5), seed=SEEDS, projection=PROJECTIONS, data_seed=st.integers(0, 2**32 - 1))
def test_prod_cross_backend_round_trips(dim, bits, seed, projection, data_seed):
    plan = prod_plan(dim, bits, seed, projection=projection)
    x = make_input("normal", 17, dim, data_seed)
    by_ref, by_nb = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
    assert_dequant_close(NB.prod_dequantize(*by_ref, plan), REF.prod_dequantize(*by_nb, plan), by_ref[1], dim)


def test_prod_parallel_and_public_api():
    plan = prod_plan(80, 4, 5, projection="orthogonal")
    x = make_input("normal", 1500, 80, 1)
    want, got = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
    for name, a, b in zip(("packed", "norms", "signs", "gammas"), want, got):
        assert_same(a, b, name + " (parallel)")
    assert_dequant_close(REF.prod_dequantize(*want, plan), NB.prod_dequantize(*want, plan), want[1], 80)
    q_ref = tqref.TurboQuantProd(80, 4, seed=5, projection="orthogonal")
    q_nb = tqref.TurboQuantProd(80, 4, seed=5, projection="orthogonal", backend="numba")
    assert_same(q_ref.quantize(x[:5]).signs, q_nb.quantize(x[:5]).signs, "public signs")


def test_prod_dequantize_blas_path_at_large_dim():
    """From NumbaBackend.BLAS_MIN_DIM on, zᵀS comes from a BLAS matmul (as in the reference)."""
    dim = NB.BLAS_MIN_DIM + 16
    plan = prod_plan(dim, 3, 4, projection="rademacher")
    x = make_input("normal", 37, dim, 9)
    codes = NB.prod_quantize(x, plan)
    for name, a, b in zip(("packed", "norms", "signs", "gammas"), REF.prod_quantize(x, plan), codes):
        assert_same(a, b, name)
    assert_dequant_close(REF.prod_dequantize(*codes, plan), NB.prod_dequantize(*codes, plan), codes[1], dim)
