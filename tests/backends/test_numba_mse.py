"""Numba backend vs the reference: TurboQuant_mse (integer outputs bit-exact).

The mse path is exact end to end: codes, packed bytes and norms are equal, and the
dequantized vectors too (the inverse rotation is in a written order for both kinds).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqref
from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.reference import ReferenceBackend

from _numba_support import DIMS, KINDS, LAWS, ROTATIONS, ROWS, SEEDS, assert_same, make_input, mse_plan

REF = ReferenceBackend()
NB = NumbaBackend()


@settings(max_examples=60)
@given(dim=DIMS, bits=st.integers(1, 8), seed=SEEDS, rotation=ROTATIONS, law=LAWS, rows=ROWS,
       kind=KINDS, data_seed=st.integers(0, 2**32 - 1))
def test_quantize_and_dequantize_are_bit_exact(dim, bits, seed, rotation, law, rows, kind, data_seed):
    plan = mse_plan(dim, bits, seed, rotation, law)
    x = make_input(kind, rows, dim, data_seed)
    packed, norms = REF.mse_quantize(x, plan)
    got_packed, got_norms = NB.mse_quantize(x, plan)
    assert_same(packed, got_packed, "packed codes")
    assert_same(norms, got_norms, "norms")
    finite = np.isfinite(norms)
    assert_same(REF.mse_dequantize(packed[finite], norms[finite], plan),
                NB.mse_dequantize(packed[finite], norms[finite], plan), "dequantized")


@settings(max_examples=25)
@given(dim=DIMS, bits=st.integers(1, 8), seed=SEEDS, rotation=ROTATIONS, data_seed=st.integers(0, 2**32 - 1))
def test_cross_backend_round_trips(dim, bits, seed, rotation, data_seed):
    """Codes made by one backend decode identically in the other, both ways."""
    plan = mse_plan(dim, bits, seed, rotation)
    x = make_input("normal", 19, dim, data_seed)
    by_ref, by_nb = REF.mse_quantize(x, plan), NB.mse_quantize(x, plan)
    assert_same(REF.mse_dequantize(*by_nb, plan), NB.mse_dequantize(*by_ref, plan), "round trip")


def test_parallel_kernels_match_reference():
    """Batches past PARALLEL_MIN_ROWS run the prange variants (a ragged last tile too)."""
    for rotation, dim in (("hadamard", 96), ("haar", 40)):
        plan = mse_plan(dim, 3, 11, rotation)
        x = make_input("mixed", 2051, dim, 5)
        packed, norms = REF.mse_quantize(x, plan)
        assert_same(packed, NB.mse_quantize(x, plan)[0], "packed (parallel)")
        assert_same(REF.mse_dequantize(packed, norms, plan), NB.mse_dequantize(packed, norms, plan), "dequantized")
    serial = NumbaBackend(parallel=False)
    assert_same(serial.mse_quantize(x, plan)[0], packed, "serial backend")


def test_public_quantizer_routes_through_numba():
    x = make_input("normal", 6, 80, 3).reshape(2, 3, 80)
    ref_q = tqref.TurboQuantMSE(80, 4, seed=9)
    nb_q = tqref.TurboQuantMSE(80, 4, seed=9, backend="numba")
    assert nb_q.backend.name == "numba"
    a, b = ref_q.quantize(x), nb_q.quantize(x)
    assert_same(a.indices, b.indices, "indices")
    assert_same(ref_q.dequantize(b), nb_q.dequantize(a), "dequantize across backends")
    assert "numba" in tqref.backends()


@pytest.mark.parametrize("bits", range(1, 9))
def test_nearest_index_on_and_around_every_boundary(bits):
    """Values exactly on a boundary (as float32), one ulp either side, ±0, beyond the ends:
    the kernels' float32 thresholds reproduce the reference's float64 comparison."""
    from tqref.reference import codebook as cb

    for dim, law in ((2, "beta"), (7, "beta"), (128, "beta"), (96, "gaussian"), (1536, "beta")):
        book = tqref.lloyd_max(bits, dim, law)
        b32 = book.boundaries.astype(np.float32)
        probes = np.concatenate([
            b32, np.nextafter(b32, np.float32(np.inf)), np.nextafter(b32, np.float32(-np.inf)),
            np.float32([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 3e38, -3e38]),
        ]).astype(np.float32)
        values = probes.reshape(1, -1)
        got = NB.nearest_index(values, book.boundaries)
        # the definition: count of float64 boundaries strictly below the value, compared in float64
        exact = np.searchsorted(book.boundaries, values.astype(np.float64), side="left").astype(np.uint8)
        assert_same(exact, got, f"cells vs float64 definition (bits={bits}, dim={dim}, {law})")
        assert_same(cb.nearest_index(values, book.boundaries), got, f"cells (bits={bits}, dim={dim}, {law})")


def test_exact_boundary_hits_in_the_rotated_domain():
    """Sparse integer vectors at d = 16 rotate (normalisation 1/4, exact) to coordinates that
    are exactly 0 — the middle boundary — and must go to the lower cell in both backends."""
    from tqref.reference import mse

    plan = mse_plan(16, 3, 1)
    x = make_input("integers", 200, 16, 2)
    y, idx, _ = mse.quantize_rotated(x, plan)
    assert np.any(y == 0), "the construction should produce exact boundary hits"
    assert_same(REF.mse_quantize(x, plan)[0], NB.mse_quantize(x, plan)[0], "packed")


def test_dequantize_into_a_reused_buffer():
    plan = mse_plan(64, 3, 2)
    packed, norms = REF.mse_quantize(make_input("normal", 40, 64, 1), plan)
    buf = np.full((40, 64), np.nan, np.float32)
    assert NB.mse_dequantize(packed, norms, plan, out=buf) is buf
    assert_same(REF.mse_dequantize(packed, norms, plan), buf, "out=")
    with pytest.raises(ValueError, match="out: expected"):
        NB.mse_dequantize(packed, norms, plan, out=np.empty((40, 64), np.float64))
