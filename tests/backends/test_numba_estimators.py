"""Numba estimators (lookup tables over packed codes) and KV-cache attention vs the reference.

Float outputs: within tqref.tolerance's rule of the reference, the reference's own error
measured against the same formula in float64 (tests/reference64.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tqref
from tqref.backends.numba_cpu import NumbaBackend
from tqref.backends.reference import ReferenceBackend
from tqref.reference import estimators

import reference64
from _numba_support import DIMS, PROJECTIONS, ROTATIONS, SEEDS, make_input, mse_plan, prod_plan

REF = ReferenceBackend()
NB = NumbaBackend()


def assert_estimates_close(want, got, want64, q, norms):
    """got within the rule of the reference's want, at the scale ‖q‖·‖x‖ of each estimate."""
    assert want.shape == got.shape and got.dtype == np.float32
    scale = np.outer(np.linalg.norm(q.astype(np.float64), axis=1), np.asarray(norms, np.float64))
    reference64.within(got, want, want64, "estimates", scale=scale)


def assert_attend_close(want, got, args, kw, serial=None):
    """got (and a serial run's result) within the rule of the reference's want = (out, lse)."""
    out64, lse64 = reference64.attend(*args, **{k: v for k, v in kw.items() if k != "return_lse"})
    for name, result in (("numba", got), ("numba serial", serial)):
        if result is None:
            continue
        out, lse = result if kw.get("return_lse") else (result, None)
        assert out.shape == want[0].shape and out.dtype == np.float32
        reference64.within(out, want[0], out64, f"{name} attention")
        if lse is not None:
            assert lse.shape == want[1].shape and lse.dtype == np.float32
            reference64.within(lse, want[1], lse64, f"{name} lse")


def attend_args(rng, kplan, vplan, shape, kw):
    """(attend's positional arguments, ``kw`` with the key signs and γ for a prod key plan)
    for random keys and values quantized by the reference and random rotated queries;
    shape = (B, H, G, Lq, T, d)."""
    B, H, G, Lq, T, d = shape
    k = rng.standard_normal((B * H * T, d)).astype(np.float32)
    if kplan.config.kind == "prod":
        kidx, knorm, ks, kg = REF.prod_quantize(k, kplan)
        kw = dict(kw, key_signs=ks.reshape(B, H, T, -1), key_gammas=kg.reshape(B, H, T))
    else:
        kidx, knorm = REF.mse_quantize(k, kplan)
    vidx, vnorm = REF.mse_quantize(rng.standard_normal((B * H * T, d)).astype(np.float32), vplan)
    q_rot = rng.standard_normal((B, H * G, Lq, d)).astype(np.float32)
    args = (q_rot, kidx.reshape(B, H, T, -1), knorm.reshape(B, H, T), vidx.reshape(B, H, T, -1),
            vnorm.reshape(B, H, T), kplan, vplan)
    return args, kw


@settings(max_examples=40)
@given(dim=DIMS, bits=st.integers(1, 8), seed=SEEDS, rotation=ROTATIONS, keys=st.integers(1, 300),
       queries=st.integers(1, 4), unbiased=st.booleans(), data_seed=st.integers(0, 2**32 - 1))
def test_mse_inner_product(dim, bits, seed, rotation, keys, queries, unbiased, data_seed):
    plan = mse_plan(dim, bits, seed, rotation)
    x = make_input("normal", keys, dim, data_seed)
    q = make_input("normal", queries, dim, data_seed + 1)
    packed, norms = REF.mse_quantize(x, plan)
    want = REF.mse_inner_product(q, packed, norms, plan, unbiased=unbiased)
    got = NB.mse_inner_product(q, packed, norms, plan, unbiased=unbiased)
    want64 = reference64.mse_estimates(estimators.rotate_queries(q, plan), packed, norms, plan, unbiased=unbiased)
    assert_estimates_close(want, got, want64, q, norms)


@settings(max_examples=30)
@given(dim=DIMS, bits=st.integers(2, 9), seed=SEEDS, rotation=ROTATIONS, projection=PROJECTIONS,
       keys=st.integers(1, 200), queries=st.integers(1, 3), data_seed=st.integers(0, 2**32 - 1))
def test_prod_inner_product(dim, bits, seed, rotation, projection, keys, queries, data_seed):
    plan = prod_plan(dim, bits, seed, rotation, "beta", projection)
    x = make_input("normal", keys, dim, data_seed)
    q = make_input("normal", queries, dim, data_seed + 1)
    codes = REF.prod_quantize(x, plan)
    want = REF.prod_inner_product(q, *codes, plan)
    got = NB.prod_inner_product(q, *codes, plan)
    want64 = reference64.prod_estimates(estimators.rotate_queries(q, plan), *codes, plan)
    assert_estimates_close(want, got, want64, q, codes[1])


def test_many_queries_parallel_scan():
    plan = mse_plan(128, 3, 2)
    x = make_input("normal", 5000, 128, 1)
    q = make_input("normal", 300, 128, 2)  # more than one block of 256 queries
    packed, norms = NB.mse_quantize(x, plan)
    want = REF.mse_inner_product(q, packed, norms, plan)
    want64 = reference64.mse_estimates(estimators.rotate_queries(q, plan), packed, norms, plan)
    assert_estimates_close(want, NB.mse_inner_product(q, packed, norms, plan), want64, q, norms)


ATTEND_CASES = [  # (key kind, B, H, G, Lq, T, d)
    ("mse", 1, 2, 2, 1, 37, 64),
    ("mse", 2, 1, 3, 5, 9, 80),
    ("prod", 1, 2, 1, 4, 4, 33),
    ("prod", 1, 1, 2, 3, 300, 128),
]


@pytest.mark.parametrize("case", ATTEND_CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_attend_matches_reference(case, causal):
    kind, B, H, G, Lq, T, d = case
    rng = np.random.default_rng(B * 100 + T)
    kplan = prod_plan(d, 4, 5) if kind == "prod" else mse_plan(d, 3, 5)
    vplan = mse_plan(d, 2, 5)
    k = rng.standard_normal((B * H * T, d)).astype(np.float32)
    v = rng.standard_normal((B * H * T, d)).astype(np.float32)
    kw = dict(scale=1 / np.sqrt(d), value_scale=1.25, group_size=G, causal=causal)
    if kind == "prod":
        kidx, knorm, ks, kg = REF.prod_quantize(k, kplan)
        kw.update(key_signs=ks.reshape(B, H, T, -1), key_gammas=kg.reshape(B, H, T))
    else:
        kidx, knorm = REF.mse_quantize(k, kplan)
    vidx, vnorm = REF.mse_quantize(v, vplan)
    q = rng.standard_normal((B, H * G, Lq, d)).astype(np.float32)
    q_rot = estimators.rotate_queries(q.reshape(-1, d), kplan).reshape(q.shape)
    args = (q_rot, kidx.reshape(B, H, T, -1), knorm.reshape(B, H, T), vidx.reshape(B, H, T, -1),
            vnorm.reshape(B, H, T), kplan, vplan)
    assert_attend_close((REF.attend(*args, **kw), None), NB.attend(*args, **kw), args, kw)


def test_kv_cache_attend_with_numba_backend():
    kw = dict(key_bits=4, value_bits=3, mode="prod", seed=3)
    ref_cache = tqref.KVCache(1, 2, 64, **kw)
    nb_cache = tqref.KVCache(1, 2, 64, backend="numba", **kw)
    rng = np.random.default_rng(4)
    k = rng.standard_normal((1, 2, 12, 64)).astype(np.float32)
    v = rng.standard_normal((1, 2, 12, 64)).astype(np.float32)
    q = rng.standard_normal((1, 4, 3, 64)).astype(np.float32)
    ref_cache.append(0, k, v)
    nb_cache.append(0, k, v)
    reference64.within(nb_cache.attend(0, q), ref_cache.attend(0, q), reference64.cache_attention(ref_cache, 0, q)[0],
                       "KVCache(backend='numba').attend")


@pytest.mark.parametrize("start, lag, causal", [(0, 0, True), (5, 0, False), (3, 4, True), (9, 0, True),
                                                (0, 40, True)])
def test_attend_partial_range_and_lse_match_reference(start, lag, causal):
    """start/lag/return_lse (the partial-attention contract) as the reference computes them,
    including queries whose range is empty (out 0, lse −inf)."""
    B, H, G, Lq, T, d = 1, 2, 2, 6, 40, 48
    rng = np.random.default_rng(start * 10 + lag)
    kw = dict(scale=0.2, group_size=G, causal=causal, start=start, lag=lag, return_lse=True)
    args, kw = attend_args(rng, mse_plan(d, 3, 5), mse_plan(d, 2, 5), (B, H, G, Lq, T, d), kw)
    want, got = REF.attend(*args, **kw), NB.attend(*args, **kw)
    assert got[1].shape == (B, H * G, Lq)
    assert_attend_close(want, got, args, kw)  # an empty range: lse −inf in both, out 0


@pytest.mark.parametrize("kind, G, Lq, T, start, lag, causal", [
    ("mse", 4, 1, 2100, 0, 0, True),  # decode: several token splits merged
    ("prod", 2, 1, 1500, 37, 0, False),  # splits starting after `start`
    ("mse", 2, 45, 700, 0, 0, True),  # prefill: several row blocks, the last one partial
    ("prod", 3, 20, 1200, 5, 3, True),  # prefill + start + lag + splits
])
def test_attend_splits_and_row_blocks_match_reference(kind, G, Lq, T, start, lag, causal):
    """Large enough for the flash-decoding paths: token splits merged by (max, sum) and
    query positions in several blocks of rows that share each decoded tile."""
    B, H, d = 1, 2, 64
    rng = np.random.default_rng(T + Lq)
    kplan = prod_plan(d, 3, 5) if kind == "prod" else mse_plan(d, 3, 5)
    kw = dict(scale=0.15, group_size=G, causal=causal, start=start, lag=lag, return_lse=True)
    args, kw = attend_args(rng, kplan, mse_plan(d, 3, 5), (B, H, G, Lq, T, d), kw)
    serial = NumbaBackend(parallel=False).attend(*args, **kw)  # one split, one thread
    assert_attend_close(REF.attend(*args, **kw), NB.attend(*args, **kw), args, kw, serial)


@pytest.mark.parametrize("kind, kbits, vbits, G, Lq, T, d, start, lag, causal", [
    ("mse", 3, 3, 4, 1, 1000, 128, 0, 0, True),  # decode: four rows per group in registers
    ("prod", 3, 1, 5, 1, 613, 128, 21, 0, False),  # 4 + 1 rows, 1-bit values, partial last tile
    ("mse", 4, 4, 3, 7, 530, 256, 0, 2, True),  # prefill rows, two runs of 16 groups, 4-bit values
    ("mse", 2, 2, 4, 2, 300, 128, 0, 0, False),  # 8 rows of 2-bit keys fused (score_segment)
    # the other (rows, bits) variants of _simd.score_segment and value_rows:
    ("mse", 1, 2, 8, 1, 300, 128, 0, 0, True),  # keys: 8 rows, 1 bit
    ("prod", 4, 3, 4, 1, 300, 128, 0, 0, False),  # keys: 4 rows, 4-bit mse stage
    ("mse", 4, 2, 5, 1, 300, 128, 0, 0, True),  # values: 4 + 1 rows, 2 bits
    ("mse", 3, 3, 7, 1, 300, 128, 0, 0, False),  # values: 4 + 1 + 1 + 1 rows, 3 bits
])
def test_attend_whole_tile_runs_match_reference(kind, kbits, vbits, G, Lq, T, d, start, lag, causal):
    """d a multiple of 128 and value codes ≤ 4 bits: whole tiles are decoded from 16-group
    runs (_simd.segment_words) and the values of a chunk summed in registers
    (_values_in_registers); the chunk's partial last tile takes the per-tile path."""
    B, H = 1, 2
    rng = np.random.default_rng(T + d + vbits)
    kplan = prod_plan(d, kbits + 1, 5) if kind == "prod" else mse_plan(d, kbits, 5)
    kw = dict(scale=0.1, value_scale=0.5, group_size=G, causal=causal, start=start, lag=lag, return_lse=True)
    args, kw = attend_args(rng, kplan, mse_plan(d, vbits, 5), (B, H, G, Lq, T, d), kw)
    serial = NumbaBackend(parallel=False).attend(*args, **kw)
    assert_attend_close(REF.attend(*args, **kw), NB.attend(*args, **kw), args, kw, serial)
