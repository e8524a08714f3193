"""Bad input to the profiles: clear ValueErrors naming the argument, expected and actual."""

from __future__ import annotations

import numpy as np
import pytest

from tqref.profiles import llamacpp as ll
from tqref.profiles import turboquant_rs as rs
from tqref.profiles import turboquant_rs_cache as cache

F32 = np.float32


# --------------------------------------------------------------------------- turboquant-rs


def test_rs_wrong_length_mirrors_dimension_mismatch():
    cfg = rs.TurboQuantConfig(2, 32)
    with pytest.raises(rs.TurboQuantError) as err:
        rs.quantize_vec(cfg, np.zeros(33, F32))
    assert err.value.kind == "DimensionMismatch"
    assert str(err.value) == "x: expected vector of length 32, got 33"


@pytest.mark.parametrize("bits, dim, message", [
    (6, 128, "bits: unsupported bit width 6, expected 2, 3, or 4"),
    (3, 48, "dim: dimension 48 is not a power of two"),
    (3, 0, "dim: dimension 0 is not a power of two"),
])
def test_rs_config_errors(bits, dim, message):
    with pytest.raises(ValueError) as err:
        rs.TurboQuantConfig(bits, dim)
    assert str(err.value) == message


def test_rs_seed_must_be_u64():
    with pytest.raises(ValueError, match=r"rotation_seed: expected an integer in \[0, 2\*\*64\), got -1"):
        rs.TurboQuantConfig(3, 64, -1)
    with pytest.raises(ValueError, match="qjl_seed"):
        rs.precompute_query_projections(np.zeros(64, F32), 64, 2**64)


def test_rs_truncated_block():
    cfg = rs.TurboQuantConfig(3, 64)
    blk = rs.quantize_vec(cfg, np.ones(64, F32))
    short = rs.PackedBlock(3, blk.scale, blk.packed_indices[:-1])
    with pytest.raises(ValueError, match=r"block.packed_indices: expected at least 24 bytes .* got 23 \(truncated\)"):
        rs.dequantize_vec(cfg, short)
    with pytest.raises(ValueError, match="truncated"):
        rs.unpack_indices(b"\x00" * 2, 3, 8)
    with pytest.raises(ValueError, match="expected a PackedBlock"):
        rs.dequantize_vec(cfg, blk.packed_indices)
    with pytest.raises(ValueError, match="block.bits"):
        rs.dequantize_vec(cfg, rs.PackedBlock(5, blk.scale, blk.packed_indices))


def test_rs_unpack_ignores_trailing_bytes_like_the_crate():
    packed = rs.pack_indices(np.arange(8, dtype=np.uint8) % 8, 3)
    assert rs.unpack_indices(packed.tobytes() + b"\xff\xff", 3, 8).tolist() == list(range(8))


def test_rs_truncated_qjl_signs():
    cfg = rs.TurboQuantConfig(3, 64)
    blk = rs.quantize_with_qjl(cfg, np.ones(64, F32), 1)
    bad = rs.QjlBlock(blk.polar_block, blk.qjl_signs[:4], blk.residual_norm)
    with pytest.raises(ValueError, match=r"qjl_signs: expected 8 bytes, got 4 \(truncated\)"):
        rs.estimate_inner_product(np.ones(64, F32), bad, cfg, 1)


def test_rs_non_numeric_input():
    with pytest.raises(ValueError, match="x: expected a real-valued array, got dtype <U"):
        rs.quantize_vec(rs.TurboQuantConfig(2, 4), np.array(["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="indices: expected an integer array"):
        rs.pack_indices(np.zeros(4, F32), 2)


def test_rs_kv_cache_errors_mirror_the_crate():
    kv = rs.QuantizedKVCache(rs.TurboQuantConfig(3, 32), 2, 0)
    with pytest.raises(rs.TurboQuantError) as err:
        kv.push(5, np.zeros(32, F32), np.zeros(32, F32))
    assert err.value.crate_message == "layer index 5 out of range (num_layers = 2)"
    with pytest.raises(rs.TurboQuantError, match="value: expected vector of length 32, got 31"):
        kv.push(0, np.zeros(32, F32), np.zeros(31, F32))
    kv.push(0, np.ones(32, F32), np.ones(32, F32))
    with pytest.raises(rs.TurboQuantError) as err:
        kv.export_packed_range(0, 0, 3, True)
    assert err.value.crate_message == "range [0..3) out of bounds for entry_count = 1"
    with pytest.raises(rs.TurboQuantError, match="weights: expected vector of length 1, got 2"):
        kv.weighted_values(0, [0.5, 0.5])
    with pytest.raises(rs.TurboQuantError, match="keys: expected vector of length 1, got 2"):
        kv.push_batch(0, np.zeros((2, 32), F32), np.zeros((1, 32), F32))


# --------------------------------------------------------------------------- llama.cpp


def test_llama_unknown_kind_version_backend():
    x = np.zeros(128, F32)
    with pytest.raises(ValueError, match=r"kind: expected one of \('turbo2_0', .*\), got 'q4_0'"):
        ll.quantize_row(x, "q4_0")
    with pytest.raises(ValueError, match=r"version: expected one of \('v3', 'v1'\), got 'v2'"):
        ll.quantize_row(x, "turbo3_0", version="v2")
    with pytest.raises(ValueError, match="backend: expected one of"):
        ll.quantize_row(x, "turbo3_0", backend="metal")
    with pytest.raises(ValueError, match="tq3_0 has no CUDA model"):
        ll.quantize_row(x, "tq3_0", backend="cuda")


@pytest.mark.parametrize("kind, n, per", [("turbo3_0", 96, 128), ("turbo2_0", 130, 128), ("tq3_0", 48, 32), ("tq3_0", 0, 32)])
def test_llama_wrong_row_length(kind, n, per):
    with pytest.raises(ValueError, match=rf"x row length: expected a row length that is a positive multiple of {per} for {kind}, got {n}"):
        ll.quantize_row(np.zeros(n, F32), kind)


@pytest.mark.parametrize("kind, version, nbytes", [("turbo3_0", "v3", 49), ("turbo4_0", "v3", 68), ("turbo4_0", "v1", 66), ("tq3_0", "v3", 27)])
def test_llama_truncated_or_mismatched_blocks(kind, version, nbytes):
    with pytest.raises(ValueError, match=r"blocks: expected a positive multiple of \d+ bytes per row .* got %d" % nbytes):
        ll.dequantize_row(np.zeros(nbytes, np.uint8), kind, version=version)


def test_llama_blocks_must_be_bytes():
    with pytest.raises(ValueError, match="blocks: expected uint8 bytes, got dtype float32"):
        ll.dequantize_row(np.zeros(50, F32), "turbo3_0")
    assert ll.dequantize_row(bytes(50), "turbo3_0").shape == (128,)
    with pytest.raises(ValueError, match="x: expected an array of shape"):
        ll.rotate_forward(np.float32(1.0))


# --------------------------------------------------------------------------- candle cache


def test_cache_shape_errors():
    pqo = cache.PqoCache(cache.CacheConfig(3, 64, 2, 1))
    good = np.zeros((1, 2, 3, 64), F32)
    with pytest.raises(ValueError, match=r"k: expected shape \(1, 2, seq, 64\), got \(1, 3, 3, 64\)"):
        pqo.prefill(0, np.zeros((1, 3, 3, 64), F32), good, good)
    with pytest.raises(ValueError, match="k: expected dtype float32 or float16, got int64"):
        pqo.prefill(0, np.zeros((1, 2, 3, 64), np.int64), good, good)
    with pytest.raises(ValueError, match=r"q: expected shape \(1, n_attn_heads \(a multiple of 2\)"):
        pqo.decode(0, good, good, np.zeros((1, 3, 1, 64), F32))
    with pytest.raises(ValueError, match=r"layer: layer index 1 out of range \(cache has 1 layers\)"):
        pqo.prefill(1, good, good, good)
    with pytest.raises(ValueError, match="TqCache needs 0"):
        cache.TqCache(cache.CacheConfig(3, 64, 2, 1))


def test_cache_dequantize_shape_errors():
    cfg = cache.CacheConfig(3, 64, 1, 1)
    qc = cache.QuantConfig(64, 3, cfg.outlier_blocks, cache.GpuPrecomputed(cfg))
    with pytest.raises(ValueError, match=r"indices: expected uint8 shape \(N, 24\)"):
        cache.polar_dequantize(np.zeros((2, 23), np.uint8), np.zeros((2, 2), np.float16), qc)
    with pytest.raises(ValueError, match=r"scales: expected shape \(2, 2\), got \(2, 3\)"):
        cache.polar_dequantize(np.zeros((2, 24), np.uint8), np.zeros((2, 3), np.float16), qc)
    with pytest.raises(ValueError, match=r"input: expected shape \(N, 64\), got \(64,\)"):
        cache.polar_quantize(np.zeros(64, F32), cfg.norm_mode, qc)
    with pytest.raises(ValueError, match="order: expected a NumericOrder"):
        cache.PqoCache(cfg, order="fma")
    with pytest.raises(ValueError, match="matmul: expected"):
        cache.NumericOrder(matmul="blas")
