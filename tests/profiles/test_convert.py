"""Conversions between runtimes through float32 (tqref.profiles.convert), by round trips."""

from __future__ import annotations

import numpy as np
import pytest
from golden_data import rs_inputs, same_bits

from tqref.profiles import convert as cv
from tqref.profiles import llamacpp as ll
from tqref.profiles import turboquant_rs as rs

F32 = np.float32
X = np.random.default_rng(5).standard_normal((300, 128)).astype(F32)

LLAMA_FORMATS = [cv.LlamaCpp(k, v) for k in ("turbo2_0", "turbo3_0", "turbo4_0") for v in ("v3", "v1")] + [cv.LlamaCpp("tq3_0")]
# (src, dst, dst's own normalised MSE on Gaussian rows)
PAIRS = [
    (cv.TurboQuantRs(2, 128, 7), cv.LlamaCpp("turbo2_0"), 0.119),
    (cv.TurboQuantRs(3, 128, 7), cv.LlamaCpp("turbo3_0"), 0.0342),
    (cv.TurboQuantRs(4, 128, 7), cv.LlamaCpp("turbo4_0"), 0.0094),
    (cv.TurboQuantRs(3, 128, 0), cv.LlamaCpp("tq3_0"), 0.0314),
    (cv.LlamaCpp("turbo4_0", "v1"), cv.TurboQuantRs(4, 128, 0), 0.0093),
    (cv.LlamaCpp("tq3_0"), cv.TurboQuantRs(3, 128, 1), 0.0343),
    (cv.TurboQuantRsQjl(4, 128, 7, 777), cv.LlamaCpp("turbo3_0"), 0.0342),
]


def _nmse(a, b):
    return float(np.mean(np.sum((a - b) ** 2, axis=1) / np.sum(b**2, axis=1)))


def _rs_indices(blocks, fmt):
    return np.stack([rs.unpack_indices(b.packed_indices, b.bits, fmt.dim) for b in blocks])


def test_decode_is_each_runtimes_own_dequantizer():
    cfg = rs.TurboQuantConfig(3, 128, 7)
    blocks = cv.encode(X[:5], cv.TurboQuantRs(3, 128, 7))
    assert blocks == [rs.quantize_vec(cfg, x) for x in X[:5]]
    assert same_bits(cv.decode(blocks, cv.TurboQuantRs(3, 128, 7)), np.stack([rs.dequantize_vec(cfg, b) for b in blocks]))
    rows = cv.encode(X[:5], cv.LlamaCpp("turbo3_0"))
    assert same_bits(cv.decode(rows, cv.LlamaCpp("turbo3_0")), ll.rotate_inverse(ll.dequantize_row(rows, "turbo3_0")))
    rows = cv.encode(X[:5], cv.LlamaCpp("tq3_0"))
    assert same_bits(cv.decode(rows, cv.LlamaCpp("tq3_0")), ll.dequantize_row(rows, "tq3_0"))


@pytest.mark.parametrize("fmt", LLAMA_FORMATS, ids=lambda f: f"{f.kind}-{f.version}")
def test_llamacpp_same_format_roundtrip_is_byte_identical(fmt):
    """Norm correction makes decode∘encode a fixed point: re-encoding the reconstruction gives
    the same bytes (observed on every one of these rows; not a proven invariant)."""
    data = cv.encode(X, fmt)
    assert np.array_equal(cv.convert(data, fmt, fmt), data)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_turboquant_rs_same_format_roundtrip_keeps_indices(bits):
    """The decoded vector's norm is ‖C[idx]‖·scale, so the scale drifts; the indices survive."""
    fmt = cv.TurboQuantRs(bits, 128, 7)
    data = cv.encode(X, fmt)
    again = cv.convert(data, fmt, fmt)
    assert [b.packed_indices for b in again] == [b.packed_indices for b in data]
    decoded = cv.decode(data, fmt)
    assert [b.scale_bits() for b in again] == [int(np.float16(rs.l2_norm(d)).view(np.uint16)) for d in decoded]


def test_turbo3_v1_v3_v1_recovers_the_v1_bytes():
    v1, v3 = cv.LlamaCpp("turbo3_0", "v1"), cv.LlamaCpp("turbo3_0", "v3")
    data = cv.encode(X, v1)
    back, _ = cv.roundtrip(data, v1, v3)
    assert np.mean(np.all(back == data, axis=1)) > 0.95


@pytest.mark.parametrize("src, dst, own", PAIRS, ids=[f"pair{i}" for i in range(len(PAIRS))])
def test_cross_runtime_conversion_adds_only_the_destination_error(src, dst, own):
    data = cv.encode(X, src)
    y_src = cv.decode(data, src)
    y_dst = cv.decode(cv.convert(data, src, dst), dst)
    assert _nmse(y_dst, y_src) < 1.25 * own  # the destination quantizes the decoded rows
    back, y_back = cv.roundtrip(data, src, dst)
    assert _nmse(y_back, y_src) < 1.25 * own  # and the way back lands near where it started
    if isinstance(src, cv.TurboQuantRs):
        same = np.mean([a.packed_indices == b.packed_indices for a, b in zip(data, back)])
        agree = np.mean(_rs_indices(back, src) == _rs_indices(data, src))
        assert agree > 0.8 and same < 1.0


def test_head_dim_64_is_zero_padded_like_the_kv_path():
    fmt = cv.LlamaCpp("turbo3_0", head_dim=64)
    two_heads = X[:10]  # rows of 2 heads × 64
    rows = cv.encode(two_heads, fmt)
    assert rows.shape == (10, 100)  # each head padded to one 128-group of 50 bytes
    padded = np.concatenate([two_heads[:, :64], np.zeros((10, 64), F32), two_heads[:, 64:], np.zeros((10, 64), F32)], axis=1)
    assert np.array_equal(rows, ll.quantize_row(padded, "turbo3_0"))
    back = cv.decode(rows, fmt)
    assert back.shape == (10, 128) and _nmse(back, two_heads) < 0.05
    # a 64-dim turboquant-rs block converts through the padded layout
    blocks = cv.encode(X[:4, :64], cv.TurboQuantRs(3, 64, 7))
    moved = cv.convert(blocks, cv.TurboQuantRs(3, 64, 7), fmt)
    assert moved.shape == (4, 50)


def test_qjl_blocks_decode_to_their_polar_part():
    fmt = cv.TurboQuantRsQjl(3, 128, 7, 777)
    x = rs_inputs()["d128_normal_a"]
    blk = rs.quantize_with_qjl(rs.TurboQuantConfig(3, 128, 7), x, 777)
    assert same_bits(cv.decode(blk, fmt)[0], rs.dequantize_vec(rs.TurboQuantConfig(2, 128, 7), blk.polar_block))
    assert cv.encode(x, fmt) == [blk]


def test_conversion_errors_are_clear():
    blocks = cv.encode(X[:2, :64], cv.TurboQuantRs(3, 64))
    with pytest.raises(ValueError, match="row length"):
        cv.convert(blocks, cv.TurboQuantRs(3, 64), cv.LlamaCpp("turbo3_0"))  # 64 is not a multiple of 128
    with pytest.raises(ValueError, match="rows of 64 values, got one for 128"):
        cv.convert(blocks, cv.TurboQuantRs(3, 64), cv.TurboQuantRs(3, 128))
    with pytest.raises(ValueError, match="kind"):
        cv.LlamaCpp("turbo5_0")
    with pytest.raises(ValueError, match="fmt"):
        cv.decode(blocks, "turboquant-rs")
