"""Hypothesis over shapes, modes and chunkings: storage is independent of how positions were
appended, memory accounting is exact, attend equals attention over the dequantized cache."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tqref.cache import KVCache

from cache_helpers import plain_attention, tolerance


@st.composite
def scenarios(draw):
    batch = draw(st.integers(1, 2))
    heads = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    dim = draw(st.sampled_from([2, 3, 8, 12, 16, 33]))
    mode = draw(st.sampled_from(["mse", "prod"]))
    key_bits = draw(st.integers(2, 4) if mode == "prod" else st.integers(1, 4))
    value_bits = draw(st.integers(1, 4))
    extra = {}
    if mode == "prod":
        extra["projection"] = draw(st.sampled_from(["gaussian", "orthogonal", "rademacher"]))
    else:
        extra["debiased"] = draw(st.booleans())
    extra["norm_dtype"] = draw(st.sampled_from(["float32", "float16"]))
    chunks = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    q_len = draw(st.integers(1, sum(chunks)))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**32))
    return batch, heads, group, dim, mode, key_bits, value_bits, extra, chunks, q_len, causal, seed


@settings(max_examples=40)
@given(scenarios())
def test_chunking_memory_and_attend(sc):
    batch, heads, group, dim, mode, key_bits, value_bits, extra, chunks, q_len, causal, seed = sc
    rng = np.random.default_rng(seed)
    total = sum(chunks)
    k = rng.standard_normal((batch, heads, total, dim)).astype(np.float32) * 2
    v = rng.standard_normal((batch, heads, total, dim)).astype(np.float32)
    q = rng.standard_normal((batch, heads * group, q_len, dim)).astype(np.float32)

    kw = dict(key_bits=key_bits, value_bits=value_bits, mode=mode, seed=seed % 1000, **extra)
    whole = KVCache(2, heads, dim, **kw)
    whole.append(1, k, v)
    pieces = KVCache(2, heads, dim, **kw)
    start = 0
    for size in chunks:
        pieces.append(1, k[:, :, start : start + size], v[:, :, start : start + size])
        start += size

    # storage is byte-identical whatever the chunking
    a, b = whole.stored(1), pieces.stored(1)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes()
    # memory accounting is exact
    for cache in (whole, pieces):
        assert cache.memory_usage() == sum(x.nbytes for x in cache.stored(1).values())
        assert cache.memory_usage() == batch * heads * total * cache.bytes_per_token()
        assert cache.capacity_bytes() >= cache.memory_usage()
        assert cache.seq_len(1) == total and cache.seq_len(0) == 0

    # attend equals softmax attention over the cache's own dequantized K and V (+ logit bias)
    keys, values = whole.dequantize(1)
    bias = whole.logit_bias(1, q)
    scale = 1.0 / math.sqrt(dim)
    out = pieces.attend(1, q, causal=causal)
    assert out.shape == q.shape and out.dtype == np.float32 and np.isfinite(out).all()
    want = plain_attention(q, keys, values, scale=scale, causal=causal, bias=bias)
    assert np.abs(out - want).max() <= tolerance(whole, q, keys, values, scale)
