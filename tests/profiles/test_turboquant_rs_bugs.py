"""Each known turboquant-rs bug (spec §12, B1–B12), demonstrated through the profile.

docs/runtimes/turboquant-rs.md points at these tests by name. Where a bug lives in code the
profile cannot run (the CUDA kernels), the test demonstrates it on a model of the kernel's
index arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_data import rs_inputs, same_bits

from tqref.profiles import turboquant_rs as rs
from tqref.profiles import turboquant_rs_cache as cache

F32 = np.float32


def _nmse(cfg, xs):
    y = rs.dequantize_batch(cfg, rs.quantize_batch(cfg, xs))
    return float(np.mean(np.sum((y - xs) ** 2, axis=1) / np.sum(xs**2, axis=1)))


# --------------------------------------------------------------------------- B1


@pytest.mark.parametrize("dim", [1, 3, 32, 100, 128])
def test_b1_sign_pattern_depends_only_on_seed_parity(dim):
    even = [0, 2, 42, 2**32, 2**64 - 2]
    odd = [1, 7, 12345, 2**63 - 1, 2**64 - 1]
    pats_even = {rs.generate_sign_pattern(dim, s).tobytes() for s in even}
    pats_odd = {rs.generate_sign_pattern(dim, s).tobytes() for s in odd}
    assert len(pats_even) == 1 and len(pats_odd) == 1
    alt = np.where(np.arange(dim) % 2 == 0, F32(1), F32(-1))
    assert same_bits(rs.generate_sign_pattern(dim, 0), alt)
    assert same_bits(rs.generate_sign_pattern(dim, 1), -alt)


def test_b1_seed_0_and_seed_42_give_identical_blocks():
    inp = rs_inputs()
    for name in ("d128_normal_a", "d128_outlier_x300", "d64_const_m0p5"):
        x = inp[name]
        for bits in (2, 3, 4):
            cfg0 = rs.TurboQuantConfig(bits, len(x), 0)
            assert rs.quantize_vec(cfg0, x) == rs.quantize_vec(cfg0.with_seed(42), x)
            assert rs.quantize_vec(cfg0.with_seed(7), x) == rs.quantize_vec(cfg0.with_seed(12345), x)


def test_b1_forward_rotation_is_a_permuted_plain_wht():
    """Forward(x)[k] = WHT(x)[k xor 1] for even seeds, and its negation for odd seeds."""
    x = rs_inputs()["d128_normal_a"]
    w = rs.wht(x)
    perm = np.arange(128) ^ 1
    assert same_bits(rs.rotate(x, rs.generate_sign_pattern(128, 42)), w[perm])
    assert np.array_equal(rs.rotate(x, rs.generate_sign_pattern(128, 7)), -w[perm])


def test_b1_structured_inputs_are_not_spread_out():
    """A constant vector rotates to a one-hot and quantizes far worse than a Gaussian one."""
    ones = np.ones((1, 128), F32)
    rot = rs.rotate(ones[0] / np.sqrt(F32(128)), rs.generate_sign_pattern(128, 0))
    assert np.count_nonzero(rot) == 1
    gauss = np.random.default_rng(0).standard_normal((500, 128)).astype(F32)
    for bits, (bad, good) in {2: (0.96, 0.116), 3: (0.72, 0.034), 4: (0.60, 0.0093)}.items():
        cfg = rs.TurboQuantConfig(bits, 128)
        assert _nmse(cfg, ones) == pytest.approx(bad, abs=0.01)
        assert _nmse(cfg, gauss) == pytest.approx(good, rel=0.08)


# --------------------------------------------------------------------------- B2


def test_b2_core_and_cache_rotations_differ():
    x = rs_inputs()["d32_normal_a"]
    pre = cache.GpuPrecomputed(cache.CacheConfig(3, 32, 1, 1))
    sig = pre.signs
    # the cache: WHT first, then its hard-coded llama.cpp signs
    assert np.allclose(x @ pre.rotation_fwd, rs.wht(x) * sig, atol=1e-6)
    # the core: signs first, then WHT, with one of only two patterns; the cache pattern is neither
    assert not np.array_equal(sig, rs.generate_sign_pattern(32, 0))
    assert not np.array_equal(sig, rs.generate_sign_pattern(32, 1))
    core_rot = rs.rotate(x, rs.generate_sign_pattern(32, 0))
    assert not np.allclose(core_rot, rs.wht(x) * sig, atol=1e-3)


def test_b2_core_block_and_cache_bytes_are_not_interchangeable():
    """Same 32-vector, same bit budget: different codebook, normalisation and bytes."""
    x = rs_inputs()["d32_normal_a"]
    core = rs.quantize_vec(rs.TurboQuantConfig(3, 32), x)
    cfg = cache.CacheConfig(3, 32, 1, 1, cache.QuantNormMode.L2_NORM, cache.USIZE_MAX)
    pre = cache.GpuPrecomputed(cfg)
    qc = cache.QuantConfig(32, 3, cfg.outlier_blocks, pre)
    packed, scales = cache.polar_quantize(x[None], cfg.norm_mode, qc)
    assert packed[0].tobytes() != core.packed_indices
    assert scales[0, 0] == -core.scale  # PQO stores the same L2 norm, but negated
    # MaxNorm's "llama.cpp" centroids are not the tq3_0 ones (2.1573 vs 2.1519)
    maxnorm = cache.GpuPrecomputed(cache.CacheConfig(4, 32, 1, 1))
    assert maxnorm.centroids[-1] == F32(2.1573) and maxnorm.centroids[-1] != F32(2.1519)


# --------------------------------------------------------------------------- B3


@pytest.mark.parametrize("bits, outer", [(2, 0.675), (3, 0.686), (4, 0.694)])
def test_b3_lloyd_max_collapses_for_large_dims(bits, outer):
    cb = rs.generate_codebook(bits, 1024)
    assert cb.centroids[-1] == pytest.approx(outer, abs=1e-3)
    # a healthy codebook for d = 1024 has its outer level near 2.7/sqrt(1024) ≈ 0.085 or less
    assert cb.centroids[-2] < 0.1 < cb.centroids[-1]
    assert np.array_equal(rs.get_codebook(bits, 1024).centroids, cb.centroids)  # used at call time


@pytest.mark.parametrize("dim", [1, 2])
def test_b3_tiny_dims_give_uniform_midpoints(dim):
    cb = rs.generate_codebook(3, dim)
    assert np.array_equal(cb.centroids, -1 + 2 * (np.arange(8) + 0.5) / 8)


# --------------------------------------------------------------------------- B4


def test_b4_f16_scale_overflow_underflow():
    inp = rs_inputs()
    cfg = rs.TurboQuantConfig(3, 128, 7)
    over = rs.quantize_vec(cfg, inp["d128_f16_overflow_3e4"])
    assert np.isinf(over.scale) and np.isfinite(rs.l2_norm(inp["d128_f16_overflow_3e4"]))
    deq = rs.dequantize_vec(cfg, over)
    assert np.all(np.isinf(deq) | np.isnan(deq))
    sub = rs.quantize_vec(cfg, inp["d128_f16_subnormal_3e-7"])
    assert 0 < abs(float(sub.scale)) < np.finfo(np.float16).tiny  # an f16 subnormal
    huge = inp["d128_huge_3e19"]
    assert np.isinf(rs.l2_norm(huge)) and np.all(np.isfinite(huge))  # Σx² overflows f32


# --------------------------------------------------------------------------- B5


@pytest.mark.parametrize("kv_len", [5, 7, 9])
def test_b5_fused_cuda_kernel_reaches_barriers_divergently(kv_len):
    """The crate's own multi-step GPU test (head_dim 128, kv_len 5/7/9) hits this."""
    s = cache.fused_decode_schedule(128, kv_len)
    assert s["divergent_barriers"]


def test_b5_fused_cuda_kernel_stray_warps_and_zero_step():
    assert cache.fused_decode_schedule(96, 64)["stray_warps"] == [6, 7]
    assert cache.fused_decode_schedule(160, 64)["stray_warps"]
    assert cache.fused_decode_schedule(320, 3)["zero_step"]
    assert not cache.fused_decode_schedule(128, 8)["divergent_barriers"]


# --------------------------------------------------------------------------- B6


def test_b6_mixed_outlier_mode_picks_the_wrong_blocks():
    """ob = 1 of 4 blocks: quantize marks the first N rows of the (token, block) list as
    outlier (all 4 blocks of token 0), dequantize marks block 0 of every token."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 128)).astype(F32)
    cfg = cache.CacheConfig(3, 128, 1, 1, cache.QuantNormMode.MAX_NORM, 1)
    pre = cache.GpuPrecomputed(cfg)
    qc = cache.QuantConfig(128, 3, 1, pre)
    packed, scales = cache.polar_quantize(x, cfg.norm_mode, qc)
    assert np.all(np.signbit(scales[:, 0])) and not np.any(np.signbit(scales[:, 1:]))
    y = cache.polar_dequantize(packed, scales, qc)
    err = ((y - x) ** 2).reshape(4, 4, 32).sum(-1) / (x**2).reshape(4, 4, 32).sum(-1)
    consistent = err[0, 0]  # quantized and dequantized with the outlier codebook
    assert consistent < 0.1
    assert np.all(err[1:, 0] > 3 * consistent)  # normal indices read through the outlier table
    assert np.all(err[0, 1:] > 3 * consistent)  # outlier indices clamped into the normal table


# --------------------------------------------------------------------------- B7


def test_b7_tq_first_prefill_returns_raw_kv_plus_qjl_bias():
    rng = np.random.default_rng(4)
    cfg = cache.CacheConfig(3, 64, 1, 1, cache.QuantNormMode.L2_NORM, 0)
    tq = cache.TqCache(cfg)
    k = rng.standard_normal((1, 1, 6, 64)).astype(F32)
    v = rng.standard_normal((1, 1, 6, 64)).astype(F32)
    q = rng.standard_normal((1, 2, 6, 64)).astype(F32)
    out = tq.prefill(0, k, v, q)
    assert np.array_equal(out.k, k) and np.array_equal(out.v, v)  # exact keys ...
    assert out.logit_bias.shape == (1, 2, 6, 6) and np.any(out.logit_bias != 0)  # ... plus a correction
    # the second chunk returns dequantized keys, for which the bias is the right complement
    out2 = tq.prefill(0, k[:, :, :1], v[:, :, :1], q[:, :, :1])
    assert out2.k.shape == (1, 1, 7, 64) and not np.array_equal(out2.k[:, :, :6], k)


# --------------------------------------------------------------------------- B8


def test_b8_tq_cache_counts_qjl_buffers_at_capacity():
    cfg = cache.CacheConfig(3, 128, 2, 1, cache.QuantNormMode.L2_NORM, 0)
    tq = cache.TqCache(cfg)
    x = np.zeros((1, 2, 1, 128), F32)
    tq.prefill(0, x, x, np.zeros((1, 2, 1, 128), F32))
    cap = 1 + 128  # needed + max(needed/4, 128)
    storage = 2 * 2 * 1 * 48 + 2 * 2 * 1 * 4 * 2  # used length only
    assert tq.memory_usage() == storage + 2 * cap * 16 + 2 * cap * 2


def test_b8_tq_mode_packs_polar_indices_in_wide_fields():
    """TQ3 uses a 2-bit codebook but stores 3-bit fields (0.3.1): packed_dim 48, not 32."""
    cfg = cache.CacheConfig(3, 128, 1, 1, cache.QuantNormMode.L2_NORM, 0)
    tq = cache.TqCache(cfg)
    assert tq.metadata.packed_dim() == 48 and len(tq.pre.centroids) == 4
    assert cache.TqCache(cfg, tight_tq_packing=True).metadata.packed_dim() == 32


def test_b8_quantized_kv_cache_stores_and_counts_value_qjl():
    cfg = rs.TurboQuantConfig(3, 128, 7)
    kv = rs.QuantizedKVCache(cfg, 1, 777)
    x = rs_inputs()["d128_normal_a"]
    kv.push(0, x, x)
    # values carry unused QJL signs and γ, counted like keys: 2 × 52 bytes per entry
    assert kv.memory_usage() == 2 * 52
    assert kv._values[0][0].qjl_signs == kv._keys[0][0].qjl_signs


def test_b8_pqo_cache_with_zero_outliers_builds_a_rademacher_matrix():
    pq = cache.PqoCache(cache.CacheConfig(3, 64, 1, 1, cache.QuantNormMode.MAX_NORM, 0))
    assert pq.pre.qjl_rademacher is not None and pq.pre.qjl_rademacher.shape == (64, 64)


# --------------------------------------------------------------------------- B9


def test_b9_bias_constant_grouping_differs_from_core():
    """Core: (γ·√(π/2))/√d; cache: γ·(√(π/2)/√d) (+0 from candle's affine). They differ in
    the last bit for some γ."""
    gammas = np.float16(np.linspace(0.01, 60, 4001)).astype(F32)
    core_c = rs.qjl_scaling_constant(gammas, 128)
    sf = F32(np.sqrt(np.pi / 2)) / np.sqrt(F32(128))
    cache_c = gammas * sf + F32(0)
    assert np.any(core_c != cache_c)
    assert np.max(np.abs(core_c - cache_c) / core_c) < 2.5e-7


def test_b9_bias_is_in_raw_dot_product_units():
    """The bias is not multiplied by softmax_scale: scaling q scales the bias linearly and a
    float64 evaluation of r_q·Sᵀ·γ·√(π/2)/√d matches it to float32 rounding."""
    rng = np.random.default_rng(9)
    cfg = cache.CacheConfig(4, 64, 1, 1, cache.QuantNormMode.L2_NORM, 0)
    tq = cache.TqCache(cfg)
    k = rng.standard_normal((1, 1, 3, 64)).astype(F32)
    q = rng.standard_normal((1, 1, 1, 64)).astype(F32)
    bias = tq.prefill(0, k, k, q).logit_bias[0, 0, 0]
    slot = tq.layers[0]
    s = np.where(np.unpackbits(slot.qjl_signs[0, :3], axis=-1, bitorder="little") == 1, 1.0, -1.0)
    r = tq.pre.qjl_rademacher.astype(np.float64)
    gamma = slot.qjl_norms[0, :3].astype(np.float64)
    want = (q[0, 0, 0].astype(np.float64) @ r.T) @ s.T * gamma * np.sqrt(np.pi / 2) / 8.0
    np.testing.assert_allclose(bias, want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- B10


def test_b10_rademacher_qjl_overestimates_a_spiky_residual():
    """Residual e₁, query e₁: the Rademacher sketch returns √(π/2)·⟨e₁, e₁⟩ ≈ 1.2533, not 1
    (a Gaussian S would be unbiased). Deterministic: (SᵀS)₁₁ = d exactly."""
    d = 128
    e = np.zeros(d, F32)
    e[0] = 1
    rq = rs.precompute_query_projections(e, d, rs.DEFAULT_QJL_SEED)
    bits = np.unpackbits(rs.compute_qjl_signs(e, d, rs.DEFAULT_QJL_SEED), bitorder="little")[:d]
    corr = np.sum(rq.astype(np.float64) * np.where(bits == 1, 1.0, -1.0))
    estimate = float(rs.qjl_scaling_constant(F32(1.0), d)) * corr
    assert estimate == pytest.approx(np.sqrt(np.pi / 2), rel=1e-6)


# --------------------------------------------------------------------------- B11


def test_b11_cache_inverse_sign_is_not_one():
    pre = cache.GpuPrecomputed(cache.CacheConfig(3, 32, 1, 1))
    eff = pre.rotation_fwd[0] * np.sqrt(F32(32))
    assert set(np.abs(eff).view(np.uint32).tolist()) == {0x3F7FFFFF}


def test_b11_dequantize_vec_does_not_check_block_bits():
    x = rs_inputs()["d64_normal_a"]
    blk2 = rs.quantize_vec(rs.TurboQuantConfig(2, 64, 7), x)
    wrong = rs.dequantize_vec(rs.TurboQuantConfig(3, 64, 7), blk2)  # no error, like the crate
    right = rs.dequantize_vec(rs.TurboQuantConfig(2, 64, 7), blk2)
    assert wrong.shape == right.shape and not np.allclose(wrong, right, atol=0.1)
    with pytest.raises(ValueError, match="out of range"):  # the crate would panic here
        rs.dequantize_vec(rs.TurboQuantConfig(2, 64, 7), rs.quantize_vec(rs.TurboQuantConfig(4, 64, 7), x))


def test_b11_qjl_error_text_lists_2_as_supported():
    with pytest.raises(rs.TurboQuantError) as err:
        rs.quantize_with_qjl(rs.TurboQuantConfig(2, 64), np.zeros(64, F32), 0)
    assert err.value.crate_message == "unsupported bit width 2, expected 2, 3, or 4"


# --------------------------------------------------------------------------- B12


def test_b12_qjl_roundtrip_mse_is_the_polar_mse():
    """The crate's "QJL roundtrip" MSE dequantizes only the (b−1)-bit polar block."""
    cfg = rs.TurboQuantConfig(3, 128, 42)
    x = rs_inputs()["d128_normal_b"]
    q = rs.quantize_with_qjl(cfg, x, 12345)
    polar_cfg = rs.TurboQuantConfig(2, 128, 42)
    assert q.polar_block == rs.quantize_vec(polar_cfg, x)
    assert same_bits(rs.dequantize_vec(polar_cfg, q.polar_block), rs.dequantize_vec(polar_cfg, rs.quantize_vec(polar_cfg, x)))


def test_b12_all_positive_test_vectors_interact_with_b1():
    """The crate's inner-product tests use entries in [0, 1): their mean component rotates to
    one coordinate, and the MSE is 4–40× that of zero-mean vectors."""
    rng = np.random.default_rng(1)
    pos = rng.random((500, 128)).astype(F32)
    gau = rng.standard_normal((500, 128)).astype(F32)
    for bits in (2, 3, 4):
        cfg = rs.TurboQuantConfig(bits, 128, 42)
        assert _nmse(cfg, pos) > 4 * _nmse(cfg, gau)
