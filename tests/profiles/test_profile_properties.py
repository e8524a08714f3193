"""Property tests of the profiles (Hypothesis): invariants that hold for every input."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tqref.profiles import llamacpp as ll
from tqref.profiles import turboquant_rs as rs

F32 = np.float32
finite = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)


@given(bits=st.sampled_from([2, 3, 4]), data=st.data())
def test_crate_packing_roundtrip_and_sizes(bits, data):
    n = data.draw(st.integers(0, 70))
    idx = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, (1 << bits) - 1)))
    packed = rs.pack_indices(idx, bits)
    assert len(packed) == rs.packed_len(n, bits)
    assert np.array_equal(rs.unpack_indices(packed, bits, n), idx)


@given(x=hnp.arrays(F32, 64, elements=finite), k=st.integers(-8, 8))
def test_power_of_two_scaling_keeps_indices(x, k):
    """Scaling by 2^k is exact through norm, reciprocal and multiply: same indices."""
    cfg = rs.TurboQuantConfig(3, 64, 5)
    scaled = (x * F32(2.0**k)).astype(F32)
    if rs.l2_norm(x) < 1e-6 or not np.isfinite(rs.l2_norm(scaled)) or rs.l2_norm(scaled) < 1e-6:
        return
    a, b = rs.trace_quantize_vec(cfg, x), rs.trace_quantize_vec(cfg, scaled)
    assert np.array_equal(a.indices, b.indices)


@given(xs=hnp.arrays(F32, (3, 32), elements=finite))
def test_batch_equals_single(xs):
    cfg = rs.TurboQuantConfig(4, 32, 1)
    assert rs.quantize_batch(cfg, xs) == [rs.quantize_vec(cfg, x) for x in xs]
    rows = ll.quantize_row(xs, "tq3_0")  # three 32-value rows -> one 14-byte block each
    assert np.array_equal(rows[2], ll.quantize_row(xs[2], "tq3_0")) and rows.shape == (3, 14)


@given(x=hnp.arrays(F32, (2, 128), elements=finite), kind=st.sampled_from(["turbo2_0", "turbo3_0", "turbo4_0"]),
       version=st.sampled_from(["v1", "v3"]))
def test_llama_rows_are_independent_and_decodable(x, kind, version):
    blocks = ll.quantize_row(x, kind, version=version)
    assert np.array_equal(blocks[1], ll.quantize_row(x[1], kind, version=version))
    deq = ll.dequantize_row(blocks, kind, version=version)
    assert deq.shape == x.shape and deq.dtype == F32
    n = np.linalg.norm(x.astype(np.float64), axis=1)
    ok = n > 1e-3
    rec = np.linalg.norm(ll.rotate_inverse(deq).astype(np.float64), axis=1)
    assert np.allclose(rec[ok], n[ok], rtol=2e-3)  # norm correction, up to fp16 rounding


@given(x=hnp.arrays(F32, 32, elements=finite))
def test_tq3_indices_follow_the_lower_tie_rule(x):
    idx = ll.quantize_indices(x, "tq3_0")
    ss = np.add.accumulate(np.concatenate(([F32(0)], x * x)), dtype=F32)[-1]
    if ss < F32(1e-20):
        assert not np.any(idx)
        return
    n = np.sqrt(ss)
    rms = n / np.sqrt(F32(32))
    v = ll.tq3_rotate_forward(x * (F32(1) / rms))
    want = np.sum(v[:, None].astype(np.float64) > ll.thresholds("tq3_0").astype(np.float64)[None, :], axis=1)
    assert np.array_equal(idx, want)
