"""Validation fused into quantization (KVCache._quantize): bad values are found from the norms
the backend computes, with the same errors, in the same order, on every backend, and a
rejected call leaves the cache unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from tqref.cache import KVCache

from cache_helpers import assert_same_state, snapshot

D, H, B = 16, 2, 2


def _with(x, index, value):
    x = x.copy()
    x[index] = value
    return x


_RNG = np.random.default_rng(3)
K = _RNG.standard_normal((B, H, 3, D)).astype(np.float32)
V = _RNG.standard_normal((B, H, 3, D)).astype(np.float32)
Q = _RNG.standard_normal((B, 2 * H, 2, D)).astype(np.float32)

BAD = [
    (_with(K, (1, 0, 2, 3), np.nan), V, r"k: expected finite values, got NaN or inf in row \(1, 0, 2\)"),
    (_with(K, (1, 0, 2, 3), -np.inf), _with(V, (0, 0, 0, 0), np.nan),
     r"k: expected finite values, got NaN or inf in row \(1, 0, 2\)"),
    (K, _with(V, (0, 1, 0, 0), np.inf), r"v: expected finite values, got NaN or inf in row \(0, 1, 0\)"),
    (_with(K.astype(np.float64), (0, 0, 0, 0), 1e39), V, r"k: expected values within float32 range"),
    (K.astype(np.float16), _with(V.astype(np.float16), (1, 1, 1, 1), np.inf),
     r"v: expected finite values, got NaN or inf in row \(1, 1, 1\)"),
    (np.full(K.shape, 3e38, np.float32), V, r"k: expected vectors whose norm is finite in float32, got inf"),
]


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("mode", ["mse", "prod"])
@pytest.mark.parametrize("k, v, pattern", BAD)
def test_bad_values_rejected_from_the_norms(backend, mode, k, v, pattern):
    cache = KVCache(1, H, D, key_bits=3, value_bits=2, mode=mode, backend=backend)
    cache.append(0, K, V)
    before = snapshot(cache)
    with pytest.raises(ValueError, match=pattern):
        cache.append(0, k, v)
    with pytest.raises(ValueError, match=pattern):
        cache.prefill(0, k, v, _with(Q, (0, 0, 0, 0), np.nan))  # k and v are reported before q
    assert_same_state(before, snapshot(cache))


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_any_float_dtype_and_layout_store_the_same_codes(backend):
    """float16/32/64 and non-contiguous inputs give the codes of their float32 values."""
    want = KVCache(1, H, D, key_bits=3, value_bits=2, mode="prod", backend="reference")
    want.append(0, K.astype(np.float16).astype(np.float32), V.astype(np.float16).astype(np.float32))
    for k, v in ((K.astype(np.float16), V.astype(np.float16)),
                 (K.astype(np.float16).astype(np.float64), V.astype(np.float16).astype(np.float64)),
                 (np.asfortranarray(K.astype(np.float16).astype(np.float32)), V.astype(np.float16)[..., ::1])):
        cache = KVCache(1, H, D, key_bits=3, value_bits=2, mode="prod", backend=backend)
        cache.append(0, k, v)
        for name, arr in want.stored(0).items():
            assert cache.stored(0)[name].tobytes() == arr.tobytes(), name
