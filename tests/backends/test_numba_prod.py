"""Numba backend vs the reference: TurboQuant_prod and QJL.

Integer outputs (mse codes, QJL sign bits) and the written-order floats (norms, γ) are
bit-exact. prod dequantization contains zᵀS, which the reference computes with a BLAS
matmul (no written order), so it is compared by tqref.tolerance's rule, row by row: the
reference's own error measured against the formula in float64 (tests/reference64.py), at the
scale ‖x‖ of the row.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tqref
from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.reference import ReferenceBackend

import reference64
from _numba_support import (DIMS, KINDS, LAWS, PROJECTIONS, ROTATIONS, ROWS, SEEDS, assert_same,
                             make_input, prod_plan)

REF = ReferenceBackend()
NB = NumbaBackend()


def assert_dequant_close(want, got, codes, plan):
    """got within the rule of the reference's want = prod_dequantize(*codes), row by row."""
    want64 = reference64.prod_dequantize(*codes, plan)
    norms = np.asarray(codes[1], np.float64)[:, None]
    reference64.within(got, want, want64, "prod_dequantize", scale=norms, axis=-1)


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
    codes = (packed[ok], norms[ok], signs[ok], gammas[ok])
    assert_dequant_close(REF.prod_dequantize(*codes, plan), NB.prod_dequantize(*codes, plan), codes, plan)


@settings(max_examples=20)
@given(dim=DIMS, bits=st.integers(2, 5), seed=SEEDS, projection=PROJECTIONS, data_seed=st.integers(0, 2**32 - 1))
def test_prod_cross_backend_round_trips(dim, bits, seed, projection, data_seed):
    plan = prod_plan(dim, bits, seed, projection=projection)
    x = make_input("normal", 17, dim, data_seed)
    by_ref, by_nb = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
    for a, b in zip(by_ref, by_nb):
        assert_same(a, b, "codes")
    assert_dequant_close(REF.prod_dequantize(*by_nb, plan), NB.prod_dequantize(*by_ref, plan), by_ref, plan)


def test_prod_parallel_and_public_api():
    plan = prod_plan(80, 4, 5, projection="orthogonal")
    x = make_input("normal", 1500, 80, 1)
    want, got = REF.prod_quantize(x, plan), NB.prod_quantize(x, plan)
    for name, a, b in zip(("packed", "norms", "signs", "gammas"), want, got):
        assert_same(a, b, name + " (parallel)")
    assert_dequant_close(REF.prod_dequantize(*want, plan), NB.prod_dequantize(*want, plan), want, plan)
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
    assert_dequant_close(REF.prod_dequantize(*codes, plan), NB.prod_dequantize(*codes, plan), codes, plan)
