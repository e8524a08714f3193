"""The candle cache layer of turboquant-rs (no golden data exists: candle is not packaged).

What is checked: the constants and tables, every formula against an independent float64
evaluation, the modes, prefill/decode flows, storage growth and memory accounting, and the
measured agreement between the summation orders the crate's build may use.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_data import AGREEMENT

from tqref import tolerance
from tqref.profiles import turboquant_rs as rs
from tqref.profiles import turboquant_rs_cache as cache

F32 = np.float32
L2, MAX = cache.QuantNormMode.L2_NORM, cache.QuantNormMode.MAX_NORM


def _qc(cfg):
    pre = cache.GpuPrecomputed(cfg)
    return cache.QuantConfig(cfg.head_dim, cfg.bits, cfg.outlier_blocks, pre)


def _gauss(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


# --------------------------------------------------------------------------- config and tables


def test_config_derived_values_and_modes():
    cfg = cache.CacheConfig(3, 128, 8, 32)
    assert cfg.norm_mode is MAX and cfg.outlier_blocks == cache.USIZE_MAX  # PQO by default
    assert (cfg.num_blocks(), cfg.packed_dim(), cfg.qjl_enabled()) == (4, 48, False)
    tq = cache.CacheConfig(4, 96, 2, 1, "l2norm", 0)
    assert tq.norm_mode is L2 and tq.qjl_enabled() and tq.packed_dim() == 48  # 96 is not a power of two
    assert str(cache.QuantNormMode.from_str("maxnorm")) == "maxnorm"


def test_config_errors_mirror_the_crate():
    with pytest.raises(ValueError, match=r"head_dim \(100\) must be divisible by QUANT_BLOCK_SIZE \(32\)"):
        cache.CacheConfig(3, 100, 1, 1)
    with pytest.raises(ValueError, match="unsupported bits=2, expected 3 or 4"):
        cache.CacheConfig(2, 128, 1, 1)
    with pytest.raises(ValueError, match="Unknown norm mode `l1`. Options: maxnorm, l2norm"):
        cache.QuantNormMode.from_str("l1")


def test_maxnorm_tables():
    pre4 = cache.GpuPrecomputed(cache.CacheConfig(4, 32, 1, 1))
    c4, b4 = pre4.outlier_centroids, pre4.outlier_boundaries
    assert c4[0] == F32(-2.1573) and c4[-1] == F32(2.1573) and c4[7] == F32(-0.14382004)
    assert b4[7] == 0.0 and len(c4) == 16 and len(b4) == 15
    assert np.array_equal(pre4.centroids, np.array([-2.1573, -1.3336, -0.7434, -0.2428, 0.2428, 0.7434, 1.3336, 2.1573], F32))
    pre3 = cache.GpuPrecomputed(cache.CacheConfig(3, 32, 1, 1))
    assert np.array_equal(pre3.centroids, np.array([-2.1573, -0.7434, 0.7434, 2.1573], F32))
    assert pre3.outlier_outer_centroid == float(F32(2.1573))


def test_l2_codebooks_are_dim_32_tables():
    pre = cache.GpuPrecomputed(cache.CacheConfig(4, 256, 1, 1, L2, 0))
    assert np.array_equal(pre.centroids, rs.get_codebook(3, 32).centroids.astype(F32))
    assert np.array_equal(pre.outlier_boundaries, rs.get_codebook(4, 32).boundaries.astype(F32))


def test_rotation_matrices():
    pre = cache.GpuPrecomputed(cache.CacheConfig(3, 64, 1, 1))
    assert set(np.abs(pre.rotation_fwd).view(np.uint32).ravel().tolist()) == {0x3E3504F3}
    assert np.array_equal(pre.rotation_inv, pre.rotation_fwd.T)
    np.testing.assert_allclose(pre.rotation_fwd @ pre.rotation_inv, np.eye(32), atol=1e-6)
    assert "".join("+" if s > 0 else "-" for s in pre.signs) == cache.LLAMA_SIGNS_32
    assert pre.scale_sign_tensor.tolist() == [[-1.0, -1.0]]
    assert cache.GpuPrecomputed(cache.CacheConfig(3, 64, 1, 1, MAX, 0)).scale_sign_tensor.tolist() == [[1.0, 1.0]]


def test_rademacher_matrix_is_the_core_rows_with_seed_12345():
    pre = cache.GpuPrecomputed(cache.CacheConfig(3, 64, 1, 1, L2, 0))
    rows = np.stack([rs.generate_rademacher_row(64, rs.DEFAULT_QJL_SEED, j) for j in range(64)])
    assert np.array_equal(pre.qjl_rademacher, rows)


# --------------------------------------------------------------------------- polar quantize


def _exact_reference(x, cfg, pre):
    """float64 evaluation of the same formulas (exact rotation, exact sums)."""
    blocks = x.reshape(-1, 32).astype(np.float64)
    rot_m = pre.rotation_fwd.astype(np.float64)
    if cfg.norm_mode is L2:
        n = np.maximum(np.sqrt(np.sum(blocks**2, axis=1, keepdims=True)), 1e-10)
        rot = (blocks / n) @ rot_m
    else:
        raw = blocks @ rot_m
        n = np.maximum(np.max(np.abs(raw), axis=1, keepdims=True) / pre.outlier_outer_centroid, 1e-10)
        rot = raw / n
    return rot, n


@pytest.mark.parametrize("mode", [L2, MAX])
@pytest.mark.parametrize("bits, ob", [(3, cache.USIZE_MAX), (4, cache.USIZE_MAX), (3, 0), (4, 0)])
def test_polar_quantize_matches_float64_formulas(mode, bits, ob):
    cfg = cache.CacheConfig(bits, 128, 1, 1, mode, ob)
    qc = _qc(cfg)
    x = _gauss(300, 128, seed=bits + ob % 7)
    packed, scales = cache.polar_quantize(x, mode, qc)
    rot, n = _exact_reference(x, cfg, qc.pre)
    bounds = qc.pre.outlier_boundaries if ob else qc.pre.boundaries
    want = np.sum(rot[:, :, None] > bounds.astype(np.float64)[None, None, :], axis=-1)
    got = rs.unpack_indices(packed.reshape(-1), bits, x.size).reshape(want.shape)
    assert np.mean(got != want) < 1e-3  # only coordinates within float32 rounding of a boundary
    sign = -1.0 if ob else 1.0
    np.testing.assert_allclose(scales.astype(np.float64).reshape(-1), sign * n.reshape(-1), rtol=1e-3)


def test_pqo_zero_blocks_store_negative_zero():
    cfg = cache.CacheConfig(3, 64, 1, 1)
    packed, scales = cache.polar_quantize(np.zeros((2, 64), F32), cfg.norm_mode, _qc(cfg))
    assert scales.view(np.uint16).tolist() == [[0x8000, 0x8000], [0x8000, 0x8000]]


def test_polar_dequantize_uses_the_cpu_butterfly():
    """Dequantize = WHT(c·σ·0.99999994)·|scale| with the core butterfly, checked in float64."""
    cfg = cache.CacheConfig(4, 64, 1, 1)
    qc = _qc(cfg)
    x = _gauss(50, 64, seed=5)
    packed, scales = cache.polar_quantize(x, cfg.norm_mode, qc)
    y = cache.polar_dequantize(packed, scales, qc)
    idx = rs.unpack_indices(packed.reshape(-1), 4, x.size).reshape(-1, 32)
    c = qc.pre.outlier_centroids[idx].astype(np.float64)
    r_inv, size = qc.pre.rotation_inv.astype(np.float64), np.abs(scales.astype(np.float64).reshape(-1, 1))
    want = (c @ r_inv) * size
    # tqref.tolerance's rule with an analytic bound: each term passes 5 butterfly additions and at
    # most 4 roundings of a product (σ·0.99999994, 1/√32, |scale|, the float32 matrix entry)
    bound = tolerance.gamma(5 + 4) * (np.abs(c) @ np.abs(r_inv)) * size
    tolerance.assert_within(y.reshape(-1, 32), want, tolerance.from_bound(bound), "polar_dequantize")


@pytest.mark.parametrize("bits, mode, floor", [(3, MAX, 0.85), (3, L2, 0.83), (4, MAX, 0.92)])
def test_pqo_reconstruction_quality_claims(bits, mode, floor):
    """The crate's own cache tests: cosine(original, dequantized) above these floors."""
    cfg = cache.CacheConfig(bits, 128, 1, 1, mode)
    qc = _qc(cfg)
    x = _gauss(200, 128, seed=11)
    y = cache.polar_dequantize(*cache.polar_quantize(x, mode, qc), qc)
    cos = np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert cos.mean() > floor


# --------------------------------------------------------------------------- caches


def test_storage_growth_and_memory_usage():
    cfg = cache.CacheConfig(3, 64, 2, 1)
    pqo = cache.PqoCache(cfg)
    q = _gauss(1, 2, 1, 64)
    assert pqo.memory_usage() == 0 and pqo.seq_len(0) == 0 and pqo.seq_len(5) == 0
    caps = []
    for step, n in enumerate([3, 1, 200, 1]):
        k = _gauss(1, 2, n, 64, seed=step)
        pqo.prefill(0, k, k, q) if step != 1 else pqo.decode(0, k, k, q)
        caps.append(pqo.layers[0].capacity())
    assert caps == [3 + 128, 131, 204 + 128, 332]
    seq = 205
    assert pqo.seq_len(0) == seq
    assert pqo.memory_usage() == 2 * 2 * seq * 24 + 2 * 2 * seq * 2 * 2
    pqo.reset()
    assert pqo.memory_usage() == 0


def test_growth_keeps_old_rows():
    cfg = cache.CacheConfig(4, 64, 1, 1)
    pqo = cache.PqoCache(cfg)
    q = _gauss(1, 1, 1, 64)
    k1 = _gauss(1, 1, 130, 64, seed=1)
    pqo.prefill(0, k1, k1, q)
    before = pqo.stored(0)
    k2 = _gauss(1, 1, 100, 64, seed=2)
    pqo.prefill(0, k2, k2, q)  # grows from 258 to 330 + 128
    after = pqo.stored(0)
    assert np.array_equal(after["k_indices"][:, :130], before["k_indices"])
    assert np.array_equal(after["v_scales"][:, :130].view(np.uint16), before["v_scales"].view(np.uint16))


def test_pqo_prefill_then_decode_flow_and_dtype():
    cfg = cache.CacheConfig(3, 64, 2, 1)
    pqo = cache.PqoCache(cfg)
    k = _gauss(1, 2, 4, 64).astype(np.float16)
    q = _gauss(1, 4, 1, 64).astype(np.float16)
    first = pqo.prefill(0, k, k, q)
    assert np.array_equal(first.k, k) and first.logit_bias is None
    out = pqo.decode(0, k[:, :, :1], k[:, :, :1], q)
    assert out.kind == "dequantized" and out.result.k.shape == (1, 2, 5, 64) and out.result.k.dtype == np.float16
    assert out.result.logit_bias is None
    # the dequantized cache equals polar_dequantize of the stored rows, head-major
    st = pqo.stored(0)
    deq = cache.polar_dequantize(st["k_indices"].reshape(10, 24), st["k_scales"].reshape(10, 2), pqo.qc)
    assert np.array_equal(out.result.k.reshape(10, 64), deq.astype(np.float16))


def test_tq_cache_qjl_signs_come_from_the_core():
    cfg = cache.CacheConfig(4, 64, 2, 1, L2, 0)
    tq = cache.TqCache(cfg)
    k = _gauss(1, 2, 3, 64, seed=7)
    tq.prefill(0, k, k, _gauss(1, 2, 1, 64))
    st = tq.stored(0)
    flat = k[0].reshape(6, 64)
    khat = cache.polar_dequantize(st["k_indices"].reshape(6, 32 * 4 // 4), st["k_scales"].reshape(6, 2), tq.qc)
    signs = rs.compute_qjl_signs(flat - khat, 64, rs.DEFAULT_QJL_SEED)
    assert np.array_equal(tq.layers[0].qjl_signs[:, :3].reshape(6, 8), signs)
    norms = np.sqrt(np.sum((flat - khat).astype(np.float64) ** 2, axis=1))
    np.testing.assert_allclose(tq.layers[0].qjl_norms[:, :3].reshape(6).astype(np.float64), norms, rtol=1e-3)


def test_tq_bias_gqa_head_mapping():
    """Attention head a uses kv head a // (n_attn / n_kv)."""
    cfg = cache.CacheConfig(3, 64, 2, 1, L2, 0)
    tq = cache.TqCache(cfg)
    k = _gauss(1, 2, 4, 64, seed=3)
    q1 = _gauss(1, 1, 2, 64, seed=4)
    q = np.concatenate([q1, q1, q1, q1], axis=1)  # 4 attention heads, same query
    bias = tq.prefill(0, k, k, q).logit_bias
    assert bias.shape == (1, 4, 2, 4)
    assert np.array_equal(bias[0, 0], bias[0, 1]) and np.array_equal(bias[0, 2], bias[0, 3])
    assert not np.array_equal(bias[0, 0], bias[0, 2])


def test_tq_decode_returns_full_cache_and_bias():
    cfg = cache.CacheConfig(3, 64, 1, 2, L2, 0)
    tq = cache.TqCache(cfg)
    k = _gauss(1, 1, 2, 64)
    q = _gauss(1, 1, 1, 64)
    tq.prefill(1, k, k, q)
    out = tq.decode(1, k[:, :, :1], k[:, :, :1], q)
    assert out.result.k.shape == (1, 1, 3, 64) and out.result.logit_bias.shape == (1, 1, 1, 3)
    assert tq.seq_len(0) == 0 and tq.seq_len(1) == 3


def test_tight_tq_packing_layout():
    """Later upstream commits pack TQ indices at bits−1; same values, fewer bytes."""
    cfg = cache.CacheConfig(3, 64, 1, 1, L2, 0)
    wide, tight = cache.TqCache(cfg), cache.TqCache(cfg, tight_tq_packing=True)
    k = _gauss(1, 1, 5, 64, seed=8)
    q = _gauss(1, 1, 1, 64)
    for c in (wide, tight):
        c.prefill(0, k, k, q)
    a = wide.decode(0, k[:, :, :1], k[:, :, :1], q).result
    b = tight.decode(0, k[:, :, :1], k[:, :, :1], q).result
    assert np.array_equal(a.k, b.k) and np.array_equal(a.logit_bias, b.logit_bias)
    assert tight.stored(0)["k_indices"].shape[-1] == 16 and wide.stored(0)["k_indices"].shape[-1] == 24
    assert tight.memory_usage() < wide.memory_usage()


# --------------------------------------------------------------------------- orders


def test_candle_avx_sum_order():
    """vec_sum with AVX: 4×8 lanes over 32-element steps, then a fixed fold; leftovers last."""
    x = np.zeros((1, 40), F32)
    x[0, 0], x[0, 8], x[0, 1] = 1e8, -1e8, 1.0  # lanes: (1e8 + −1e8) cancels before the 1 is added
    avx = cache._candle_sum(x, cache.NumericOrder())
    seq = cache._candle_sum(x, cache.NumericOrder(reduction="sequential"))
    assert avx[0] == 1.0 and seq[0] == 0.0  # sequential: 1e8 + 1 rounds away the 1
    y = np.arange(40, dtype=F32)[None]
    assert cache._candle_sum(y, cache.NumericOrder())[0] == 780.0


def test_fma_matmul_is_exactly_rounded():
    a = _gauss(8, 32, seed=1)
    b = _gauss(32, 5, seed=2)
    fma = cache._matmul(a, b, cache.NumericOrder(matmul="fma"))
    seq = cache._matmul(a, b, cache.NumericOrder(matmul="sequential"))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.max(np.abs(fma - exact)) < 1e-5 and np.max(np.abs(seq - exact)) < 1e-5
    assert not np.array_equal(fma, seq)  # the two orders do differ in the last bits


AGREEMENT_ROWS = 1000


@pytest.mark.parametrize("mode", [L2, MAX])
@pytest.mark.parametrize("bits, ob", [(3, cache.USIZE_MAX), (4, cache.USIZE_MAX), (3, 0), (4, 0)])
def test_measured_order_agreement(mode, bits, ob):
    """Stored indices and scales under the default order (AVX sums, FMA matmul) vs the
    alternatives. Measured on 1000 Gaussian rows of head_dim 128 (128k coordinates, 4000
    scales): index disagreements ≤ 1e-4 of coordinates, scales within 1 f16 ulp."""
    cfg = cache.CacheConfig(bits, 128, 1, 1, mode, ob)
    rows = _gauss(AGREEMENT_ROWS, 128, seed=100 + bits)
    report = {}
    for name, other in {
        "matmul=sequential": cache.NumericOrder(matmul="sequential"),
        "matmul=float64": cache.NumericOrder(matmul="float64"),
        "reduction=sequential": cache.NumericOrder(reduction="sequential"),
    }.items():
        r = cache.measure_order_agreement(cfg, rows, cache.DEFAULT_ORDER, other)
        report[name] = r
        AGREEMENT[name].append(r)
        assert r["indices"][0] <= 1e-4 * r["indices"][1]
        assert r["scales"][0] <= 2e-3 * r["scales"][1] and r["max_scale_ulps"] <= 1
    assert report  # the session summary prints the totals (docs/runtimes/turboquant-rs.md)
