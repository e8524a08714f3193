"""KVCache bookkeeping: storage layout, chunked appends, growth, memory accounting, reset,
prefill/decode semantics (the seed's trait, without bugs B7/B8)."""

from __future__ import annotations

import numpy as np
import pytest

import tqref
from tqref.reference import estimators, packing
from tqref.cache import GROWTH_MIN, KVCache, grown_capacity

import reference64
from cache_helpers import assert_same_state, data, snapshot

CONFIGS = [
    dict(mode="mse", key_bits=3, value_bits=2),
    dict(mode="mse", key_bits=4, value_bits=4, debiased=True),
    dict(mode="prod", key_bits=3, value_bits=2, projection="gaussian"),
    dict(mode="prod", key_bits=4, value_bits=3, projection="orthogonal", norm_dtype="float16"),
    dict(mode="mse", key_bits=2, value_bits=1, rotation="haar"),
]
IDS = ["mse", "mse-debiased", "prod-gauss", "prod-orth-f16", "mse-haar"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_layout_of_stored_arrays(cfg, rng):
    d, h = 40, 3
    cache = KVCache(2, h, d, **cfg)
    cache.append(1, data(rng, 2, h, 7, d), data(rng, 2, h, 7, d))
    stored = cache.stored(1)
    assert cache.stored(0) == {}
    names = [n for n, _, _ in cache.layout()]
    assert list(stored) == names
    mse_bits = cfg["key_bits"] - (cfg["mode"] == "prod")
    expected = {
        "key_indices": (np.uint8, (packing.packed_size(d, mse_bits),)),
        "key_norms": (cfg.get("norm_dtype", "float32"), ()),
        "key_signs": (np.uint8, (packing.packed_size(d, 1),)),
        "key_gammas": (cfg.get("norm_dtype", "float32"), ()),
        "value_indices": (np.uint8, (packing.packed_size(d, cfg["value_bits"]),)),
        "value_norms": (cfg.get("norm_dtype", "float32"), ()),
    }
    assert ("key_signs" in stored) == (cfg["mode"] == "prod")
    for name, arr in stored.items():
        dtype, row = expected[name]
        assert arr.dtype == np.dtype(dtype), name
        assert arr.shape == (2, h, 7) + row, name
    assert cache.seq_len(1) == 7 and cache.seq_len(0) == 0 and cache.batch_size == 2


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_chunked_append_is_byte_identical(cfg, rng):
    d, h, total = 24, 2, 61
    k, v = data(rng, 2, h, total, d, 3.0), data(rng, 2, h, total, d)
    once = KVCache(1, h, d, **cfg)
    once.append(0, k, v)
    chunked = KVCache(1, h, d, **cfg)
    cuts = [0, 1, 2, 9, 30, 31, 55, total]
    for a, b in zip(cuts[:-1], cuts[1:]):
        chunked.append(0, k[:, :, a:b], v[:, :, a:b])
    s1, s2 = once.stored(0), chunked.stored(0)
    assert s1.keys() == s2.keys()
    for name in s1:
        assert s1[name].tobytes() == s2[name].tobytes(), name
    assert once.memory_usage() == chunked.memory_usage()
    for a, b in zip(once.dequantize(0), chunked.dequantize(0)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_memory_usage_is_sum_of_stored_nbytes(cfg, rng):
    d, h = 33, 2
    cache = KVCache(3, h, d, **cfg)
    assert cache.memory_usage() == 0 and cache.capacity_bytes() == 0
    for layer, seq in ((0, 5), (2, 17), (0, 3)):
        cache.append(layer, data(rng, 1, h, seq, d), data(rng, 1, h, seq, d))
    stored_bytes = sum(a.nbytes for layer in range(3) for a in cache.stored(layer).values())
    assert cache.memory_usage() == stored_bytes
    assert cache.memory_usage() == 1 * h * (8 + 17) * cache.bytes_per_token()
    per_token = sum(np.dtype(dt).itemsize * int(np.prod(row)) for _, dt, row in cache.layout())
    assert cache.bytes_per_token() == per_token
    allocated = sum(cache.capacity(layer) for layer in range(3)) * h * per_token
    assert cache.capacity_bytes() == allocated >= cache.memory_usage()


def test_memory_counts_used_length_not_capacity_for_every_array(rng):
    # seed bug B8: TqCache counted the QJL buffers at capacity. Here nothing is.
    cache = KVCache(1, 1, 16, key_bits=3, value_bits=3, mode="prod")
    cache.append(0, data(rng, 1, 1, 1, 16), data(rng, 1, 1, 1, 16))
    assert cache.capacity(0) == 1 + GROWTH_MIN
    assert cache.memory_usage() == cache.bytes_per_token()
    assert cache.capacity_bytes() == (1 + GROWTH_MIN) * cache.bytes_per_token()


def test_growth_rule_and_nothing_lost(rng):
    d, h = 8, 2
    k, v = data(rng, 1, h, 700, d), data(rng, 1, h, 700, d)
    reference = KVCache(1, h, d, key_bits=3, value_bits=3, mode="prod")
    reference.append(0, k, v)
    cache = KVCache(1, h, d, key_bits=3, value_bits=3, mode="prod")
    capacities, pos = [], 0
    for size in [1] * 140 + [50, 200, 309]:
        before = cache.capacity(0)
        cache.append(0, k[:, :, pos : pos + size], v[:, :, pos : pos + size])
        pos += size
        assert cache.capacity(0) == grown_capacity(pos, before)
        if cache.capacity(0) != before:
            capacities.append(cache.capacity(0))
        for name, arr in cache.stored(0).items():  # every prefix survives each growth
            assert arr.tobytes() == reference.stored(0)[name][:, :, :pos].tobytes()
    assert capacities == [129, 258, 518, 873]  # 1+128, 130+128, 390+128, 699+699//4
    assert grown_capacity(10, 20) == 20 and grown_capacity(1000, 0) == 1250


def test_reset_then_reuse(rng):
    d, h = 16, 2
    cache = KVCache(2, h, d, key_bits=3, value_bits=2, mode="prod")
    cache.append(0, data(rng, 2, h, 9, d), data(rng, 2, h, 9, d))
    cache.append(1, data(rng, 2, h, 4, d), data(rng, 2, h, 4, d))
    cache.reset()
    assert cache.memory_usage() == 0 and cache.capacity_bytes() == 0 and cache.batch_size is None
    assert [cache.seq_len(i) for i in range(2)] == [0, 0]
    assert cache.stored(0) == {}
    k, v = data(rng, 3, h, 5, d), data(rng, 3, h, 5, d)  # another batch size is fine after reset
    cache.append(1, k, v)
    fresh = KVCache(2, h, d, key_bits=3, value_bits=2, mode="prod")
    fresh.append(1, k, v)
    assert_same_state(snapshot(cache), snapshot(fresh))


def test_layers_are_independent(rng):
    d, h = 16, 1
    cache = KVCache(2, h, d, key_bits=2, value_bits=2)
    cache.append(0, data(rng, 1, h, 6, d), data(rng, 1, h, 6, d))
    before = {n: a.copy() for n, a in cache.stored(0).items()}
    cache.append(1, data(rng, 1, h, 300, d), data(rng, 1, h, 300, d))
    for name, arr in cache.stored(0).items():
        np.testing.assert_array_equal(arr, before[name])
    assert cache.seq_len(0) == 6 and cache.seq_len(1) == 300


def test_stored_views_are_read_only(rng):
    cache = KVCache(1, 1, 8, key_bits=2, value_bits=2)
    cache.append(0, data(rng, 1, 1, 3, 8), data(rng, 1, 1, 3, 8))
    for arr in cache.stored(0).values():
        with pytest.raises(ValueError):
            arr[...] = 0


@pytest.mark.parametrize("mode", ["mse", "prod"])
def test_codes_equal_the_public_quantizers(mode, rng):
    d, h = 32, 2
    k, v = data(rng, 2, h, 5, d, 2.0), data(rng, 2, h, 5, d)
    cache = KVCache(1, h, d, key_bits=3, value_bits=2, mode=mode, seed=7)
    cache.append(0, k, v)
    s = cache.stored(0)
    vq = tqref.TurboQuantMSE(d, 2, seed=7).quantize(v)
    np.testing.assert_array_equal(s["value_indices"], vq.indices)
    np.testing.assert_array_equal(s["value_norms"], vq.norms)
    if mode == "mse":
        kq = tqref.TurboQuantMSE(d, 3, seed=7).quantize(k)
        np.testing.assert_array_equal(s["key_indices"], kq.indices)
        np.testing.assert_array_equal(s["key_norms"], kq.norms)
    else:
        kq = tqref.TurboQuantProd(d, 3, seed=7).quantize(k)
        np.testing.assert_array_equal(s["key_indices"], kq.mse.indices)
        np.testing.assert_array_equal(s["key_norms"], kq.mse.norms)
        np.testing.assert_array_equal(s["key_signs"], kq.signs)
        np.testing.assert_array_equal(s["key_gammas"], kq.residual_norms)


def test_seed_changes_codes_deterministically(rng):
    k, v = data(rng, 1, 1, 20, 64), data(rng, 1, 1, 20, 64)
    codes = []
    for seed in (0, 0, 1, 2):
        cache = KVCache(1, 1, 64, key_bits=3, value_bits=3, seed=seed)
        cache.append(0, k, v)
        codes.append(cache.stored(0)["key_indices"].tobytes())
    assert codes[0] == codes[1]
    assert len({codes[1], codes[2], codes[3]}) == 3  # unlike turboquant-rs (B1), seeds matter


@pytest.mark.parametrize("in_dtype", [np.float16, np.float32, np.float64])
def test_first_prefill_returns_dequantized_not_raw(in_dtype, rng):
    # seed bug B7: TqCache's first prefill returned the raw k, v (plus the QJL bias).
    d, h = 32, 2
    k, v = data(rng, 1, h, 6, d, dtype=in_dtype), data(rng, 1, h, 6, d, dtype=in_dtype)
    q = data(rng, 1, 2 * h, 3, d, dtype=np.float32)
    cache = KVCache(1, h, d, key_bits=3, value_bits=3, mode="prod")
    out = cache.prefill(0, k, v, q)
    keys, values = cache.dequantize(0)
    assert out.k.dtype == in_dtype and out.v.dtype == in_dtype
    assert out.k.shape == out.v.shape == (1, h, 6, d)
    np.testing.assert_array_equal(out.k, keys.astype(in_dtype))
    np.testing.assert_array_equal(out.v, values.astype(in_dtype))
    assert not np.allclose(out.k.astype(np.float32), k.astype(np.float32), atol=1e-3)
    assert out.logit_bias.shape == (1, 2 * h, 3, 6) and out.logit_bias.dtype == np.float32


def test_prefill_then_decode_returns_whole_layer(rng):
    d, h = 16, 1
    cache = KVCache(1, h, d, key_bits=2, value_bits=2)
    q = data(rng, 1, 2, 1, d)
    first = cache.prefill(0, data(rng, 1, h, 5, d), data(rng, 1, h, 5, d), data(rng, 1, 2, 5, d))
    assert first.logit_bias is None and first.k.shape == (1, h, 5, d)
    step = cache.decode(0, data(rng, 1, h, 1, d), data(rng, 1, h, 1, d), q)
    assert step.k.shape == (1, h, 6, d) and step.logit_bias is None
    np.testing.assert_array_equal(step.k[:, :, :5], first.k)
    np.testing.assert_array_equal(step.k, cache.dequantize(0)[0])


@pytest.mark.parametrize("projection", ["gaussian", "orthogonal", "rademacher"])
def test_prod_keys_plus_bias_is_the_prod_estimator(projection, rng):
    """q·Kᵀ + logit_bias equals TurboQuant_prod's estimate (estimators.prod_inner_product)."""
    d, h, t = 64, 2, 30
    k, v = data(rng, 1, h, t, d, 2.0), data(rng, 1, h, t, d)
    q = data(rng, 1, 2 * h, 4, d)
    cache = KVCache(1, h, d, key_bits=3, value_bits=2, mode="prod", projection=projection)
    out = cache.prefill(0, k, v, q)
    s = cache.stored(0)
    for a in range(2 * h):
        kv = a // 2
        est = estimators.prod_inner_product(q[0, a], s["key_indices"][0, kv], s["key_norms"][0, kv],
                                            s["key_signs"][0, kv], s["key_gammas"][0, kv], cache.key_plan)
        est64 = reference64.prod_estimates(estimators.rotate_queries(q[0, a], cache.key_plan), s["key_indices"][0, kv],
                                           s["key_norms"][0, kv], s["key_signs"][0, kv], s["key_gammas"][0, kv],
                                           cache.key_plan)
        mine = q[0, a].astype(np.float64) @ out.k[0, kv].T.astype(np.float64) + out.logit_bias[0, a]
        scale = np.outer(np.linalg.norm(q[0, a].astype(np.float64), axis=1), s["key_norms"][0, kv])
        reference64.within(mine, est, est64, "q·Kᵀ + logit_bias", scale=scale)


def test_debiased_keys_are_divided_by_alpha(rng):
    d = 32
    k, v = data(rng, 1, 1, 10, d), data(rng, 1, 1, 10, d)
    plain = KVCache(1, 1, d, key_bits=2, value_bits=2)
    deb = KVCache(1, 1, d, key_bits=2, value_bits=2, debiased=True, debiased_values=True)
    plain.append(0, k, v)
    deb.append(0, k, v)
    assert 0.85 < deb.key_alpha < 0.9  # 1 − D for 2 bits
    kp, vp = plain.dequantize(0)
    kd, vd = deb.dequantize(0)
    np.testing.assert_allclose(kd, kp / deb.key_alpha, rtol=1e-6)
    np.testing.assert_allclose(vd, vp / deb.value_alpha, rtol=1e-6)
    assert plain.stored(0)["key_indices"].tobytes() == deb.stored(0)["key_indices"].tobytes()


def test_repr_and_exports():
    cache = tqref.KVCache(2, 4, 64, key_bits=4, value_bits=2, mode="prod")
    assert "KVCache(num_layers=2" in repr(cache) and "projection='gaussian'" in repr(cache)
    assert "KVCache" in tqref.__all__
