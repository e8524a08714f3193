"""The partial-attention contract of KVCache.attend: ``start``, ``lag`` and ``return_lse``
against brute-force softmax over the cache's own dequantized keys and values (float64), and
merge_partials recombining disjoint key sets into full attention exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqref.reference import attention
from tqref.cache import KVCache

import reference64
from cache_helpers import EPS32, data, tolerance


def lse_tolerance(cache, q, keys, values, scale):
    """|lse − exact|: lse moves by at most the largest logit error (the unit of
    cache_helpers.tolerance without the ‖v‖ factor) plus its own float32 rounding."""
    unit = tolerance(cache, q, keys, values, scale) / np.linalg.norm(np.asarray(values, np.float64), axis=-1).max()
    return 2 * unit + 4 * EPS32


@st.composite
def partial_scenarios(draw):
    heads = draw(st.integers(1, 2))
    group = draw(st.integers(1, 3))
    dim = draw(st.sampled_from([3, 8, 16, 33, 64]))
    mode = draw(st.sampled_from(["mse", "prod"]))
    key_bits = draw(st.integers(2, 4))
    value_bits = draw(st.integers(1, 4))
    extra = {"debiased": draw(st.booleans())} if mode == "mse" else {"projection": "orthogonal"}
    t_len = draw(st.integers(1, 70))
    q_len = draw(st.integers(1, 12))
    causal = draw(st.booleans())
    start = draw(st.integers(0, t_len))
    lag = draw(st.integers(0, 8)) if causal else 0
    backend = draw(st.sampled_from(["reference", "numba"]))
    seed = draw(st.integers(0, 2**32))
    return heads, group, dim, mode, key_bits, value_bits, extra, t_len, q_len, causal, start, lag, backend, seed


@settings(max_examples=50, deadline=None)
@given(partial_scenarios())
def test_start_lag_lse_against_brute_force(sc):
    heads, group, dim, mode, key_bits, value_bits, extra, t_len, q_len, causal, start, lag, backend, seed = sc
    rng = np.random.default_rng(seed)
    cache = KVCache(1, heads, dim, key_bits=key_bits, value_bits=value_bits, mode=mode, seed=seed % 97,
                    backend=backend, **extra)
    cache.append(0, data(rng, 2, heads, t_len, dim, 2.0), data(rng, 2, heads, t_len, dim))
    q = data(rng, 2, heads * group, q_len, dim, 2.0)
    keys, values = cache.dequantize(0)
    bias = cache.logit_bias(0, q)
    scale = 1.0 / math.sqrt(dim)  # dequantize() already divides debiased keys by α
    visible = attention.visible_mask(q_len, t_len, causal=causal, start=start, lag=lag)
    out, lse = cache.attend(0, q, causal=causal, start=start, lag=lag, return_lse=True)
    want_out, want_lse = reference64.dense_attention(q, keys, values, scale=scale, visible=visible, bias=bias)
    assert out.shape == q.shape and out.dtype == np.float32
    assert lse.shape == q.shape[:3] and lse.dtype == np.float32
    empty = ~visible.any(axis=1)  # (Lq,)
    assert np.all(out[:, :, empty] == 0) and np.all(lse[:, :, empty] == -np.inf)
    assert np.all(np.isfinite(lse[:, :, ~empty]))
    assert np.abs(out - want_out).max() <= tolerance(cache, q, keys, values, scale)
    seen = ~empty
    if seen.any():
        err = np.abs(lse[:, :, seen] - want_lse[:, :, seen]).max()
        assert err <= lse_tolerance(cache, q, keys, values, scale) * (1 + np.abs(want_lse[:, :, seen]).max())
    if not empty.any():  # without return_lse: the same output
        np.testing.assert_array_equal(cache.attend(0, q, causal=causal, start=start, lag=lag), out)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_merge_partials_recombines_sinks_and_window(backend, rng):
    """Full causal attention = merge(sink keys [0, S) | compressed middle | window of the R newest),
    the split a cache with float16 sinks and a residual window makes."""
    h, group, d, t_len, lq, sinks, window = 2, 2, 32, 60, 7, 4, 5
    cache = KVCache(1, h, d, key_bits=3, value_bits=3, backend=backend)
    cache.append(0, data(rng, 1, h, t_len, d), data(rng, 1, h, t_len, d))
    keys, values = cache.dequantize(0)
    q = data(rng, 1, h * group, lq, d)
    scale = 1.0 / math.sqrt(d)
    middle = cache.attend(0, q, start=sinks, lag=window, return_lse=True)
    full = attention.visible_mask(lq, t_len, causal=True)
    rest = full & ~attention.visible_mask(lq, t_len, causal=True, start=sinks, lag=window)
    other = reference64.dense_attention(q, keys, values, scale=scale, visible=rest)
    out, lse = attention.merge_partials([middle[0], other[0]], [middle[1], other[1]])
    want_out, want_lse = reference64.dense_attention(q, keys, values, scale=scale, visible=full)
    assert np.abs(out - want_out).max() <= tolerance(cache, q, keys, values, scale)
    assert np.abs(lse - want_lse).max() <= 1e-5 * (1 + np.abs(want_lse).max())
    reference64.within(out, cache.attend(0, q), want_out, "merged partial attentions")


def test_merge_partials_edge_cases():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)  # Lq 2, d 4
    la = np.array([0.5, -np.inf], np.float32)
    lb = np.array([-np.inf, -np.inf], np.float32)
    out, lse = attention.merge_partials([a, b], [la, lb])
    np.testing.assert_allclose(out[0], a[0], rtol=1e-7)  # a part nobody sees weighs 0
    assert np.all(out[1] == 0) and lse[1] == -np.inf and lse[0] == np.float32(0.5)
    same, lse2 = attention.merge_partials([a, a], [np.full(2, 0.5, np.float32)] * 2)
    np.testing.assert_allclose(same, a, rtol=1e-6)
    np.testing.assert_allclose(lse2, 0.5 + np.log(2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"outs, lses: expected two sequences of the same length >= 1, got 2 and 1"):
        attention.merge_partials([a, b], [la])


def _filled(**kw):
    cache = KVCache(1, 1, 8, key_bits=2, value_bits=2, **kw)
    rng = np.random.default_rng(1)
    cache.append(0, data(rng, 1, 1, 5, 8), data(rng, 1, 1, 5, 8))
    return cache


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(start=6), r"start: expected an integer in \[0, 5\], got 6"),
    (dict(start=-1), r"start: expected an integer in \[0, 5\], got -1"),
    (dict(start=1.0), r"start: expected an integer in \[0, 5\], got 1.0"),
    (dict(lag=-2), r"lag: expected an integer >= 0, got -2"),
    (dict(lag=1, causal=False), r"lag: expected 0 with causal=False .*got 1"),
    (dict(return_lse=1), r"return_lse: expected True or False, got 1"),
    (dict(start=5), r"q: expected every query to see a key \(start=5, lag=0, causal=True, seq_len=5, 1 queries\)"),
    (dict(lag=5), r"q: expected every query to see a key .* or return_lse=True"),
])
def test_partial_options_are_validated(kwargs, pattern):
    q = np.ones((1, 1, 1, 8), np.float32)
    with pytest.raises(ValueError, match=pattern):
        _filled().attend(0, q, **kwargs)


def test_more_queries_than_keys_with_return_lse():
    """Lq > seq_len is allowed with return_lse: the first queries see nothing."""
    cache = _filled()
    q = np.ones((1, 1, 7, 8), np.float32)
    out, lse = cache.attend(0, q, return_lse=True)
    assert np.all(out[:, :, :2] == 0) and np.all(lse[:, :, :2] == -np.inf)
    assert np.isfinite(lse[:, :, 2:]).all()
    np.testing.assert_array_equal(out[:, :, 2:], cache.attend(0, q[:, :, 2:]))
