"""Bad input: every rejected call raises ValueError naming the argument, and leaves the cache
exactly as it was (validation happens before anything is written)."""

from __future__ import annotations

import numpy as np
import pytest

import tqref
from tqref.cache import KVCache
from tqref.reference.plan import FLOAT16_MAX, FLOAT16_NORMAL_MIN

from cache_helpers import assert_same_state, snapshot

D, H, B = 16, 2, 2


def _filled(mode="prod", **kw):
    rng = np.random.default_rng(0)
    cache = KVCache(3, H, D, key_bits=3, value_bits=2, mode=mode, **kw)
    cache.append(0, rng.standard_normal((B, H, 5, D)), rng.standard_normal((B, H, 5, D)))
    cache.append(2, rng.standard_normal((B, H, 130, D)), rng.standard_normal((B, H, 130, D)))
    return cache


def _kv(seq=3, batch=B, heads=H, dim=D, dtype=np.float32):
    rng = np.random.default_rng(1)
    return (rng.standard_normal((batch, heads, seq, dim)).astype(dtype),
            rng.standard_normal((batch, heads, seq, dim)).astype(dtype))


def _q(heads=2 * H, seq=2, batch=B, dim=D, dtype=np.float32):
    return np.random.default_rng(2).standard_normal((batch, heads, seq, dim)).astype(dtype)


def _with(x, index, value):
    x = x.copy()
    x[index] = value
    return x


K, V = _kv()
Q = _q()

BAD_APPENDS = [
    # (layer, k, v, pattern)
    (-1, K, V, r"layer: expected an integer in \[0, 2\], got -1"),
    (3, K, V, r"layer: expected an integer in \[0, 2\], got 3"),
    (1.0, K, V, r"layer: .*got 1.0"),
    (True, K, V, r"layer: .*got True"),
    ("0", K, V, r"layer: .*got '0'"),
    (1, K[0], V[0], r"k: expected 4 dimensions .*got shape \(2, 3, 16\)"),
    (1, _kv(heads=3)[0], _kv(heads=3)[1], r"k: expected num_kv_heads=2 on axis 1, got 3"),
    (1, _kv(dim=8)[0], _kv(dim=8)[1], r"k: expected head_dim=16 on the last axis, got 8"),
    (1, K.astype(np.int32), V, r"k: expected dtype float16, float32 or float64, got int32"),
    (1, K, V.astype(bool), r"v: expected dtype float16, float32 or float64, got bool"),
    (1, K.astype(np.complex64), V, r"k: expected dtype .*got complex64"),
    (1, _with(K, (1, 0, 2, 3), np.nan), V, r"k: expected finite values, got NaN or inf in row \(1, 0, 2\)"),
    (1, K, _with(V, (0, 1, 0, 0), np.inf), r"v: expected finite values, got NaN or inf in row \(0, 1, 0\)"),
    (1, _with(K.astype(np.float64), (0, 0, 0, 0), 1e39), V, r"k: expected values within float32 range"),
    (1, np.full(K.shape, 3e38, np.float32), V, r"k: expected vectors whose norm is finite in float32, got inf"),
    (1, K, V[:, :, :2], r"v: expected the shape of k \(2, 2, 3, 16\), got \(2, 2, 2, 16\)"),
    (1, _kv(batch=3)[0], _kv(batch=3)[1], r"k: expected batch=2 \(the cache's batch size\), got 3"),
    (1, _kv(seq=0)[0], _kv(seq=0)[1], r"k: expected batch >= 1 and seq >= 1"),
]


@pytest.mark.parametrize("layer, k, v, pattern", BAD_APPENDS)
@pytest.mark.parametrize("method", ["append", "prefill", "decode"])
def test_rejected_append_leaves_cache_unchanged(method, layer, k, v, pattern):
    cache = _filled()
    before = snapshot(cache)
    args = (layer, k, v) if method == "append" else (layer, k, v, Q)
    with pytest.raises(ValueError, match=pattern):
        getattr(cache, method)(*args)
    assert_same_state(before, snapshot(cache))


BAD_QUERIES = [
    (_q(heads=3), r"q: expected a number of attention heads that is a multiple of num_kv_heads=2, got 3"),
    (_q(dim=12), r"q: expected head_dim=16 on the last axis, got 12"),
    (_q(batch=1), r"q: expected batch=2"),
    (_q(dtype=np.int64), r"q: expected dtype float16, float32 or float64, got int64"),
    (_with(Q, (0, 3, 1, 0), np.nan), r"q: expected finite values, got NaN or inf in row \(0, 3, 1\)"),
    (Q[0], r"q: expected 4 dimensions"),
]


@pytest.mark.parametrize("q, pattern", BAD_QUERIES)
@pytest.mark.parametrize("method", ["prefill", "decode", "attend", "logit_bias"])
def test_rejected_query_leaves_cache_unchanged(method, q, pattern):
    """A valid k, v with a bad q must not be appended (prefill validates q before writing)."""
    cache = _filled()
    before = snapshot(cache)
    args = (1, K, V, q) if method in ("prefill", "decode") else (2, q)
    with pytest.raises(ValueError, match=pattern):
        getattr(cache, method)(*args)
    assert_same_state(before, snapshot(cache))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(scale=0.0), r"scale: expected a finite number > 0 or None, got 0.0"),
    (dict(scale=-1), r"scale: .*got -1"),
    (dict(scale=float("nan")), r"scale: .*got nan"),
    (dict(scale="a"), r"scale: .*got 'a'"),
    (dict(scale=True), r"scale: .*got True"),
    (dict(causal=1), r"causal: expected True or False, got 1"),
])
def test_attend_bad_options(kwargs, pattern):
    cache = _filled()
    before = snapshot(cache)
    with pytest.raises(ValueError, match=pattern):
        cache.attend(0, Q, **kwargs)
    assert_same_state(before, snapshot(cache))


def test_attend_on_empty_layer_and_too_many_causal_queries():
    cache = _filled()
    with pytest.raises(ValueError, match=r"layer: expected a layer holding cached positions, got layer 1"):
        cache.attend(1, Q)
    with pytest.raises(ValueError, match=r"layer: expected a layer holding cached positions"):
        cache.dequantize(1)
    with pytest.raises(ValueError, match=r"q: expected at most seq_len=5 query positions with causal=True"):
        cache.attend(0, _q(seq=6))
    assert cache.attend(0, _q(seq=6), causal=False).shape == (B, 2 * H, 6, D)


def test_float16_norms_out_of_range_are_rejected():
    cache = _filled(norm_dtype="float16")
    before = snapshot(cache)
    big = np.full((B, H, 1, D), 20000.0, np.float32)  # norm 80000 > float16 max
    with pytest.raises(ValueError, match=r"k: expected vectors whose norm is 0 or in float16's normal range"):
        cache.append(0, big, big[..., :] * 0)
    with pytest.raises(ValueError, match=r"v: expected vectors whose norm is 0 or in float16's normal range"):
        cache.append(0, big * 0, big)
    tiny = np.full((B, H, 1, D), 1e-9, np.float32)  # nonzero norm that float16 rounds to 0
    with pytest.raises(ValueError, match=r"k: .*float16"):
        cache.append(0, tiny, tiny * 0)
    assert_same_state(before, snapshot(cache))


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_one_float16_norm_rule_for_quantizers_and_the_cache(backend):
    """plan.unstorable_norms is the one rule: a norm exactly at float16's smallest normal is
    stored, the float32 just below it is refused, in TurboQuantMSE and KVCache alike."""
    edge = np.float32(FLOAT16_NORMAL_MIN)
    below = np.nextafter(edge, np.float32(0))
    one_hot = np.zeros((B, H, 1, D), np.float32)
    q = tqref.TurboQuantMSE(D, 3, norm_dtype="float16", backend=backend)
    cache = KVCache(1, H, D, key_bits=3, value_bits=3, norm_dtype="float16", backend=backend)
    for norm, ok in ((edge, True), (below, False), (np.float32(FLOAT16_MAX), True),
                     (np.nextafter(np.float32(FLOAT16_MAX), np.float32(np.inf)), False)):
        x = one_hot.copy()
        x[..., 0] = norm
        if ok:
            assert q.quantize(x[0, 0]).norms[0] == np.float16(norm)
            cache.append(0, x, x)
        else:
            with pytest.raises(ValueError, match=r"float16's normal range"):
                q.quantize(x[0, 0])
            with pytest.raises(ValueError, match=r"k: expected vectors whose norm is 0 or in float16's normal range"):
                cache.append(0, x, one_hot)
    assert cache.seq_len(0) == 2


def test_zero_vectors_are_fine():
    cache = _filled()
    z = np.zeros((B, H, 2, D), np.float32)
    cache.append(1, z, z)
    k, v = cache.dequantize(1)
    assert not k.any() and not v.any()
    out = cache.attend(1, _q(seq=1))
    assert np.all(out == 0)


def test_out_of_range_layer_queries():
    cache = _filled()
    for method in ("seq_len", "capacity", "stored", "dequantize"):
        with pytest.raises(ValueError, match=r"layer: expected an integer in \[0, 2\], got 3"):
            getattr(cache, method)(3)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(mode="fast"), r"mode: expected one of \('mse', 'prod'\), got 'fast'"),
    (dict(mode="prod", key_bits=1), r"key_bits: expected an integer in \[2, 9\], got 1"),
    (dict(key_bits=9), r"key_bits: expected an integer in \[1, 8\], got 9"),
    (dict(value_bits=0), r"value_bits: expected an integer in \[1, 8\], got 0"),
    (dict(mode="prod", debiased=True), r"debiased: expected False in mode='prod'"),
    (dict(projection="gaussian"), r"projection: expected None in mode='mse'"),
    (dict(mode="prod", projection="sparse"), r"projection: expected one of"),
    (dict(rotation="dct"), r"rotation: expected one of"),
    (dict(codebook="uniform"), r"codebook: expected one of"),
    (dict(norm_dtype="bfloat16"), r"norm_dtype: expected one of"),
    (dict(debiased=1), r"debiased: expected True or False, got 1"),
    (dict(seed=-1), r"seed: expected an integer in"),
    (dict(backend="tpu"), r"backend: expected one of"),
])
def test_constructor_rejects(kwargs, pattern):
    args = dict(key_bits=3, value_bits=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        KVCache(2, 2, 16, **args)


@pytest.mark.parametrize("args, pattern", [
    ((0, 2, 16), r"num_layers: expected an integer >= 1, got 0"),
    ((1, 0, 16), r"num_kv_heads: expected an integer >= 1, got 0"),
    ((1, 2, 1), r"head_dim: expected an integer >= 2, got 1"),
    ((1, 2, 16.0), r"head_dim: expected an integer >= 2, got 16.0"),
])
def test_constructor_rejects_shapes(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        KVCache(*args, key_bits=3, value_bits=2)


def test_backend_without_attend_is_an_error_not_a_fallback():
    cache = _filled()

    class QuantizeOnly:
        name = "quantize-only"

    cache.backend = QuantizeOnly()
    with pytest.raises(ValueError, match=r"backend: 'quantize-only' has no attend\(\)"):
        cache.attend(0, Q)
