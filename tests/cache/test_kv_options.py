"""The tqref/kv options one by one: the sliding window rule, the outlier split's selection and
bit accounting, per-layer bits, presets, backends, and every validation error (docs/kv-cache.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from tqref.kv import PRESETS, OutlierSpec
from tqref.kv import outliers as om
from tqref.kv import window as win
from tqref.reference import packing
from tqref.cache import KVCache

import reference64
from cache_helpers import assert_same_state, data, snapshot
import kv_options_helpers as kh


def test_compression_end_slides_one_token_per_step():
    p = np.arange(12)
    got = win.compression_end(p, sinks=2, window=3, ready_from=0)
    assert got.tolist() == [kh.ends(int(i), sinks=2, window=3, ready_from=0) for i in p]
    assert got.tolist() == [2, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9]
    assert win.compression_end(p, sinks=2, window=3, ready_from=None).tolist() == [2] * 12
    assert win.compression_end(p, sinks=0, window=0, ready_from=4).tolist() == [0, 0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12]


def test_window_and_sinks_state_during_decode(rng):
    k, v = data(rng, 1, 2, 20, 8), data(rng, 1, 2, 20, 8)
    cache = KVCache(1, 2, 8, key_bits=3, value_bits=2, residual_length=4, sink_tokens=2)
    for p in range(20):
        cache.append(0, k[:, :, p : p + 1], v[:, :, p : p + 1])
        s = cache.stored(0)
        assert s["sink_keys"].shape[2] == min(2, p + 1)
        compressed = max(0, p + 1 - 4 - 2)
        assert s.get("key_indices", np.zeros((1, 2, 0))).shape[2] == compressed
        window = p + 1 - min(2, p + 1) - compressed
        assert s.get("window_keys", np.zeros((1, 2, 0))).shape[2] == window <= 4
        np.testing.assert_array_equal(s["sink_keys"], k[:, :, : min(2, p + 1)].astype(np.float16))
        if window:
            np.testing.assert_array_equal(s["window_values"], v[:, :, p + 1 - window : p + 1].astype(np.float16))


def test_one_pass_needs_the_last_append(rng):
    k, v, q = data(rng, 1, 1, 10, 8), data(rng, 1, 1, 10, 8), data(rng, 1, 1, 10, 8)
    cache = KVCache(1, 1, 8, key_bits=3, value_bits=3, residual_length=3)
    cache.append(0, k[:, :, :6], v[:, :, :6])
    cache.append(0, k[:, :, 6:], v[:, :, 6:])
    cache.attend(0, q[:, :, 6:])  # the last append's 4 queries: rows from e(6) = 4 are held
    with pytest.raises(ValueError, match=r"q: expected at most 4 causal query positions \(the float16 rows query "
                                         r"position 5 needs, from 3, were released .* from 4\), got 5"):
        cache.attend(0, q[:, :, 5:])
    out = cache.attend(0, q, causal=False)  # every query sees the current state
    assert out.shape == q.shape


def test_paper_presets_bit_accounting(rng):
    d, t = 128, 300
    k, v = data(rng, 1, 1, t, d), data(rng, 1, 1, t, d)
    for name, bits in (("paper-2.5", 2), ("paper-3.5", 3)):
        cache = KVCache(1, 1, d, **PRESETS[name])
        cache.append(0, k, v)
        s = cache.stored(0)
        key_bytes = sum(s[n].nbytes for n in ("outlier.key_indices", "outlier.key_norms", "rest.key_indices",
                                               "rest.key_norms"))
        assert key_bytes * 8 / (t * d) == bits + 0.5  # (32(b+1) + 96b)/128 = b + 1/4 index bits, + 2 fp16 norms
        assert om.index_bits_per_coordinate(d, 32, bits, 1) == bits + 0.25
        channels = s["key_channels"].nbytes + s["value_channels"].nbytes
        assert channels == 2 * 32
        assert cache.bits_per_coordinate() == (bits + 0.5) + 8 * channels / (2 * t * d)
    assert round(om.per_token_floor_bits(128, 32), 3) == 0.783


def test_static_selection_finds_planted_outlier_channels(rng):
    d = 16
    scales = np.ones(d, np.float32)
    planted = [1, 6, 11, 14]
    scales[planted] = 10
    k = (rng.standard_normal((2, 3, 40, d)) * scales).astype(np.float32)
    v = data(rng, 2, 3, 40, d)
    cache = KVCache(1, 3, d, key_bits=2, value_bits=2, outliers=OutlierSpec(count=4, calibration_tokens=8))
    cache.append(0, k, v)
    assert (cache.stored(0)["key_channels"] == planted).all()
    # the outlier channels, quantized with 3 bits on their own, come back closer than without the split
    spec = cache._tiers.spec
    recon_k, _, _ = kh.reconstruction(cache, 0, k.astype(np.float16), v.astype(np.float16), (2, 2), spec, 0)
    plain = KVCache(1, 3, d, key_bits=2, value_bits=2)
    plain.append(0, k.astype(np.float16).astype(np.float32), v)
    err_split = np.square(recon_k - k).sum()
    err_plain = np.square(plain.dequantize(0)[0] - k).sum()
    assert err_split < 0.7 * err_plain


def test_per_token_masks_hold_each_vectors_largest_channels(rng):
    d = 12
    k, v = data(rng, 1, 2, 9, d), data(rng, 1, 2, 9, d)
    cache = KVCache(1, 2, d, key_bits=2, value_bits=1, outliers=OutlierSpec(count=3, selection="per-token"))
    cache.append(0, k, v)
    mask = packing.unpack_bits(cache.stored(0)["key_masks"], 1, d).astype(bool)
    assert (mask.sum(-1) == 3).all()
    k16 = np.abs(k.astype(np.float16).astype(np.float32))
    assert (np.where(mask, k16, np.inf).min(-1) >= np.where(mask, -np.inf, k16).max(-1)).all()
    assert cache.stored(0)["key_masks"].shape[-1] == packing.packed_size(d, 1)  # 1 bit per coordinate


def test_layer_bits_and_float16_layers(rng):
    k, v = data(rng, 1, 1, 6, 8), data(rng, 1, 1, 6, 8)
    cache = KVCache(3, 1, 8, key_bits=3, value_bits=3, layer_bits={0: "float16", -1: (4, 2)})
    for layer in range(3):
        cache.append(layer, k, v)
    s0, s1, s2 = (cache.stored(i) for i in range(3))
    assert set(s0) == {"window_keys", "window_values"} and s0["window_keys"].dtype == np.float16
    assert s1["key_indices"].shape[-1] == 3 and s1["value_indices"].shape[-1] == 3
    assert s2["key_indices"].shape[-1] == 4 and s2["value_indices"].shape[-1] == 2
    q = data(rng, 1, 2, 6, 8)
    full = cache.attend(0, q)
    want = kh.plain_attention(q, k.astype(np.float16), v.astype(np.float16), scale=8 ** -0.5, causal=True)
    assert np.abs(full - want).max() < 1e-5


def test_numba_matches_reference(rng):
    k, v, q = data(rng, 1, 2, 30, 16, 2.0), data(rng, 1, 2, 30, 16), data(rng, 1, 4, 30, 16)
    for extra in (dict(residual_length=5, sink_tokens=2), dict(outliers=OutlierSpec(calibration_tokens=4))):
        ref = KVCache(1, 2, 16, key_bits=3, value_bits=2, backend="reference", **extra)
        nb = KVCache(1, 2, 16, key_bits=3, value_bits=2, backend="numba", **extra)
        for c in (ref, nb):
            c.append(0, k, v)
        a, b = ref.stored(0), nb.stored(0)
        assert a.keys() == b.keys() and all(a[n].tobytes() == b[n].tobytes() for n in a)
        want64 = kh.options_attention64(ref, 0, q, k, v)
        reference64.within(nb.attend(0, q), ref.attend(0, q), want64, f"numba attend with {extra}")


BAD = [
    (dict(residual_length=-1), r"residual_length: expected an integer >= 0, got -1"),
    (dict(sink_tokens=True), r"sink_tokens: expected an integer >= 0, got True"),
    (dict(outliers="paper-4"), r"outliers: expected one of \('paper-2.5', 'paper-3.5'\), got 'paper-4'"),
    (dict(outliers="paper-2.5"), r"outliers: the preset 'paper-2.5' means key_bits=2, value_bits=2, "
                                 r"norm_dtype='float16' .* got key_bits=3, value_bits=3, norm_dtype='float32'"),
    (dict(outliers=3), r"outliers: expected None, one of .* or an OutlierSpec, got 3"),
    (dict(outliers=OutlierSpec(count=7)), r"outliers.count: expected an integer in \[2, 6\], got 7"),
    (dict(outliers=OutlierSpec(selection="dynamic")), r"outliers.selection: expected one of"),
    (dict(outliers=OutlierSpec(calibration_tokens=0)), r"outliers.calibration_tokens: expected an integer >= 1"),
    (dict(outliers=OutlierSpec(), mode="prod"), r"outliers: expected mode='mse'"),
    (dict(outliers=OutlierSpec(), debiased=True), r"debiased: expected False with outliers"),
    (dict(outliers=OutlierSpec(extra_bits=6)),
     r"outliers: expected bit widths <= 2 .* got \(key_bits, value_bits\) = \(3, 3\) in layer 0"),
    (dict(layer_bits=[1]), r"layer_bits: expected None or a dict"),
    (dict(layer_bits={2: 3}), r"layer_bits key: expected an integer in \[-2, 1\], got 2"),
    (dict(layer_bits={1: 3, -1: 4}), r"layer_bits: expected each layer once, got layer 1 as 1 and -1"),
    (dict(layer_bits={0: "bf16"}), r"layer_bits\[0\]: expected one of \('float16',\), got 'bf16'"),
    (dict(layer_bits={0: (9, 2)}), r"layer_bits\[0\] key bits: expected an integer in \[1, 8\], got 9"),
    (dict(layer_bits={0: (1, 2, 3)}), r"layer_bits\[0\]: expected \(key_bits, value_bits\)"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_constructor_errors(kwargs, message):
    kw = dict(key_bits=3, value_bits=3, **kwargs)
    with pytest.raises(ValueError, match=message):
        KVCache(2, 1, 8, **kw)


def test_call_errors_leave_the_cache_unchanged(rng):
    k, v = data(rng, 1, 1, 5, 8), data(rng, 1, 1, 5, 8)
    cache = KVCache(1, 1, 8, key_bits=3, value_bits=3, residual_length=2, sink_tokens=1, norm_dtype="float16")
    cache.append(0, k, v)
    before = snapshot_tiered(cache)
    big = k.copy()
    big[0, 0, 3, 2] = 70000.0
    with pytest.raises(ValueError, match=r"k: expected values representable in float16 .* got 70000 at index "
                                         r"\(0, 0, 3, 2\)"):
        cache.append(0, big, v)
    nan = v.copy()
    nan[0, 0, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"v: expected finite values"):
        cache.append(0, k, nan)
    tiny = k.copy()
    tiny[0, 0, 4] = 1e-6  # a norm float16 cannot hold, quantized at once (leaves the window)
    with pytest.raises(ValueError, match=r"k: expected vectors whose norm is 0 or in float16.s normal range"):
        cache.append(0, np.concatenate([tiny, k], axis=2), np.concatenate([v, v], axis=2))
    assert snapshot_tiered(cache) == before
    q = data(rng, 1, 1, 1, 8)
    for call, what in ((lambda: cache.prefill(0, k, v, q), "prefill"), (lambda: cache.logit_bias(0, q), "logit_bias"),
                       (lambda: cache.capacity(0), "capacity"),
                       (lambda: cache.bytes_per_token(), "layout")):
        with pytest.raises(ValueError, match=rf"{what}: not available with residual_length"):
            call()
    with pytest.raises(ValueError, match=r"start, lag: expected 0 with residual_length"):
        cache.attend(0, q, lag=1)
    with pytest.raises(ValueError, match=r"scale: expected a finite number > 0 or None, got 0"):
        cache.attend(0, q, scale=0)
    assert snapshot_tiered(cache) == before
    cache.reset()
    assert cache.stored(0) == {} and cache.batch_size is None
    with pytest.raises(ValueError, match=r"layer: expected a layer holding cached positions"):
        cache.attend(0, q)


def snapshot_tiered(cache):
    return cache.batch_size, cache.memory_usage(), cache.capacity_bytes(), cache.seq_len(0), \
        {n: a.tobytes() for n, a in cache.stored(0).items()}
