"""Hypothesis over the tqref/kv options (residual window, sinks, outlier split, per-layer bits)
on the reference and numba backends: storage does not depend on chunking, memory accounting is
exact, a one-pass attend equals token-by-token decode and equals brute force over the
representation each query should see (docs/kv-cache.md §7)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tqref.kv import OutlierSpec
from tqref.cache import KVCache

import kv_options_helpers as kh
import reference64


@st.composite
def scenarios(draw):
    batch = draw(st.integers(1, 2))
    heads = draw(st.integers(1, 2))
    group = draw(st.integers(1, 2))
    dim = draw(st.sampled_from([4, 8, 12, 16]))
    split = draw(st.sampled_from([None, "static", "per-token"]))
    mode = "mse" if split else draw(st.sampled_from(["mse", "prod"]))
    low = 2 if mode == "prod" else 1
    bits = (draw(st.integers(low, 3)), draw(st.integers(1, 3)))
    kw = dict(key_bits=bits[0], value_bits=bits[1], mode=mode, seed=draw(st.integers(0, 99)),
              norm_dtype=draw(st.sampled_from(["float32", "float16"])),
              backend=draw(st.sampled_from(["reference", "numba"])),
              residual_length=draw(st.integers(0, 5)), sink_tokens=draw(st.integers(0, 3)))
    if split:
        count = draw(st.integers(2, dim - 2))
        kw["outliers"] = OutlierSpec(count=count, extra_bits=draw(st.integers(0, 2)), selection=split,
                                     calibration_tokens=draw(st.integers(1, 6)))
    layer1 = draw(st.sampled_from(["same", "bits", "float16"]))
    if layer1 == "bits":
        kw["layer_bits"] = {-1: (draw(st.integers(low, 3)), draw(st.integers(1, 3)))}
    elif layer1 == "float16":
        kw["layer_bits"] = {1: "float16"}
    chunks = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    return batch, heads, group, dim, kw, chunks, draw(st.integers(0, 2**32))


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_options_chunking_memory_decode_and_brute_force(sc):
    batch, heads, group, dim, kw, chunks, seed = sc
    rng = np.random.default_rng(seed)
    total = sum(chunks)
    k = (rng.standard_normal((batch, heads, total, dim)) * rng.uniform(0.5, 4, dim)).astype(np.float32)
    v = rng.standard_normal((batch, heads, total, dim)).astype(np.float32)
    q = rng.standard_normal((batch, heads * group, total, dim)).astype(np.float32)
    scale = 1.0 / math.sqrt(dim)

    whole = KVCache(2, heads, dim, **kw)
    whole.append(1, k, v)
    one_pass = whole.attend(1, q)
    tiers = whole._tiers  # None when every option has its default: the plain cache
    bits = tiers.layer_plan[1] if tiers else (kw["key_bits"], kw["value_bits"])
    spec = tiers.spec if tiers else None
    # brute force over the representation each query should see
    # the options round every token to float16 on arrival (window.py); the plain cache does not
    k16, v16 = (k.astype(np.float16), v.astype(np.float16)) if tiers else (k, v)
    sinks, window = kw["sink_tokens"], kw["residual_length"]
    ready_from, recon = kh.representation(whole, 1, k16, v16, bits, spec, sinks, window)
    want_out = kh.brute_force(q, k16, v16, recon, sinks=sinks, window=window, ready_from=ready_from, scale=scale)
    assert np.abs(one_pass - want_out).max() <= kh.tolerance(q, k, v, scale)
    # chunked appends, each chunk's queries attended right after its append
    pieces = KVCache(2, heads, dim, **kw)
    start = 0
    for size in chunks:
        pieces.append(1, k[:, :, start : start + size], v[:, :, start : start + size])
        got = pieces.attend(1, q[:, :, start : start + size])
        part = slice(start, start + size)
        reference64.within(got, one_pass[:, :, part], want_out[:, :, part], "attend after a chunked append")
        start += size
    # token-by-token decode
    decode = KVCache(2, heads, dim, **kw)
    steps = []
    for p in range(total):
        decode.append(1, k[:, :, p : p + 1], v[:, :, p : p + 1])
        steps.append(decode.attend(1, q[:, :, p : p + 1]))
    reference64.within(np.concatenate(steps, axis=2), one_pass, want_out, "attend at each decode step")

    # persistent storage is byte-identical whatever the chunking
    for other in (pieces, decode):
        a, b = whole.stored(1), other.stored(1)
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
        assert other.stored(0) == {} and other.seq_len(1) == total and other.seq_len(0) == 0

    # memory accounting: the stored arrays, and the layout written out independently
    norm_bytes = 2 if kw["norm_dtype"] == "float16" else 4
    want = kh.expected_bytes(batch=batch, heads=heads, dim=dim, t_len=total, bits=bits, spec=spec,
                             sinks=kw["sink_tokens"], window=kw["residual_length"], norm_bytes=norm_bytes,
                             mode=kw["mode"])
    for cache in (whole, pieces, decode):
        assert cache.memory_usage() == sum(x.nbytes for x in cache.stored(1).values()) == want
        assert cache.capacity_bytes() >= cache.memory_usage()
        assert cache.bits_per_coordinate() == 8 * want / (batch * heads * total * 2 * dim)

    # dequantize: the layer as held now (float16 sinks and window, reconstructions between)
    if tiers:
        keys, values = whole.dequantize(1)
        e_now = sinks if bits == "float16" else kh.ends(total - 1, sinks=sinks, window=window, ready_from=ready_from)
        want_k, want_v = k16.astype(np.float32), v16.astype(np.float32)
        if e_now > sinks:
            want_k[:, :, sinks:e_now] = recon[0][:, :, : e_now - sinks]
            want_v[:, :, sinks:e_now] = recon[1][:, :, : e_now - sinks]
        np.testing.assert_array_equal(keys, want_k)
        np.testing.assert_array_equal(values, want_v)
