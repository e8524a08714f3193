"""llama.cpp block formats: documented behaviours and CPU/GPU differences, one test each.

docs/runtimes/llamacpp.md points at these tests by name. The CUDA and FMA builds are
models (see :func:`tqref.profiles.llamacpp.quantize_row`); the CPU results they are compared
with are the golden-verified C reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_data import llama_npz, same_bits

from tqref.profiles import llamacpp as ll

F32 = np.float32
TURBO = ("turbo2_0", "turbo3_0", "turbo4_0")


def _row(label, length=128, name="thetom_turbo_v3_pr197.npz"):
    z = llama_npz(name)
    labels = list(z[f"labels_L{length}"])
    return z[f"x_L{length}"][labels.index(label)]


def _gauss(n, length=128, seed=0):
    return np.random.default_rng(seed).standard_normal((n, length)).astype(F32)


# --------------------------------------------------------------------------- index rules


def test_thetom_ties_go_up_tq3_ties_go_down():
    x = _row("ties0_turbo_s1")  # 127 of 128 rotated coordinates are exactly 0.0
    for kind, first_positive in (("turbo2_0", 2), ("turbo3_0", 4), ("turbo4_0", 8)):
        idx = ll.quantize_indices(x, kind)
        assert np.sum(idx == first_positive) >= 127
    tq3 = ll.quantize_indices(_row("ties_tq3"), "tq3_0")
    assert np.sum(tq3[64:] == 3) >= 62  # blocks 2 and 3: 31 exact zeros each -> lower bin 3


def test_exact_threshold_tie_rows():
    """Rows nudged until one rotated coordinate equals a threshold exactly (golden rows)."""
    cases = {("tie_turbo2", "turbo2_0", "v3"): 0.086728, ("tie_turbo3v3", "turbo3_0", "v3"): 0.092804,
             ("tie_turbo4v3", "turbo4_0", "v3"): 0.212203, ("tie_turbo3v1", "turbo3_0", "v1"): 0.154259}
    for (label, kind, version), t in cases.items():
        x = _row(label)
        with np.errstate(all="ignore"):
            n = np.sqrt(np.add.accumulate(np.concatenate(([F32(0)], x * x)), dtype=F32)[-1])
            r = ll.rotate_forward(x * (F32(1) / n))
        hit = np.nonzero(np.abs(r) == F32(t))[0]
        assert len(hit) == 1
        thr = ll.thresholds(kind, version)
        idx = ll.quantize_indices(x, kind, version=version)[hit[0]]
        assert thr[idx - 1] == r[hit[0]]  # the tie went to the upper bin


# --------------------------------------------------------------------------- edge rows


def test_zero_groups_store_first_positive_bin():
    z = np.zeros(128, F32)
    assert ll.quantize_row(z, "turbo2_0")[2:].tolist() == [0xAA] * 32
    b3 = ll.quantize_row(z, "turbo3_0")
    assert b3[2:34].tolist() == [0] * 32 and b3[34:].tolist() == [0xFF] * 16
    assert ll.quantize_row(z, "turbo4_0")[2:].tolist() == [0x88] * 64
    for kind in TURBO:
        assert ll.quantize_row(z, kind)[:2].tolist() == [0, 0]
    assert ll.quantize_row(z[:32], "tq3_0").tolist() == [0] * 14


def test_nan_group_turbo4_memset_differs_from_turbo2_3():
    x = _row("nan[7]")
    assert set(ll.quantize_indices(x, "turbo2_0").tolist()) == {3}
    assert set(ll.quantize_indices(x, "turbo3_0").tolist()) == {7}
    assert set(ll.quantize_indices(x, "turbo4_0").tolist()) == {8}  # the memset path
    for kind in TURBO:
        assert ll.block_norms(ll.quantize_row(x, kind), kind).view(np.uint16).tolist() == [0x7E00]
    tq3 = ll.quantize_row(x, "tq3_0")
    assert tq3[:2].tolist() == [0x00, 0x7E] and not np.any(tq3[2:14])  # block 0: idx 0, d = NaN


def test_inf_group_top_index_and_inf_norm():
    x = _row("inf[123]")
    for kind, top in (("turbo2_0", 3), ("turbo3_0", 7), ("turbo4_0", 15)):
        assert set(ll.quantize_indices(x, kind).tolist()) == {top}
        assert ll.block_norms(ll.quantize_row(x, kind), kind).view(np.uint16).tolist() == [0x7C00]


def test_sum_of_squares_overflow_gives_zero_input_indices():
    x = _row("huge_x3e19")
    assert set(ll.quantize_indices(x, "turbo3_0").tolist()) == {4}
    assert np.all(np.isinf(ll.block_norms(ll.quantize_row(x, "turbo3_0"), "turbo3_0")))
    assert set(ll.quantize_indices(x, "tq3_0").tolist()) == {3}


def test_const_1e_11_splits_the_families():
    x = _row("const_1e-11")
    idx = ll.quantize_indices(x, "turbo3_0")
    assert len(set(idx.tolist())) > 1  # quantized normally (norm 1.13e-10 > 1e-10) ...
    assert ll.block_norms(ll.quantize_row(x, "turbo3_0"), "turbo3_0").view(np.uint16).tolist() == [0]  # ... fp16 0
    assert not np.any(ll.quantize_row(x, "tq3_0"))  # Σx² = 3.2e-21 < 1e-20: the zero path


def test_fp16_norm_overflow_and_subnormal():
    huge = ll.quantize_row(_row("huge_x7e3"), "turbo3_0")
    assert np.isinf(ll.block_norms(huge, "turbo3_0")[0])
    assert np.any(np.isnan(ll.rotate_inverse(ll.dequantize_row(huge, "turbo3_0"))))
    tiny = ll.block_norms(ll.quantize_row(_row("tiny_x3e-7"), "turbo3_0"), "turbo3_0")[0]
    assert 0 < tiny < np.finfo(np.float16).tiny
    assert np.isfinite(ll.dequantize_row(ll.quantize_row(_row("huge_x7e3"), "tq3_0"), "tq3_0")).all()


# --------------------------------------------------------------------------- domains and structure


def test_turbo_dequantize_is_rotated_domain_tq3_is_original():
    x = _gauss(20, 256, seed=1)
    for kind in TURBO:
        deq = ll.dequantize_row(ll.quantize_row(x, kind), kind)
        rot = ll.rotate_forward(x)
        rec = ll.rotate_inverse(deq)
        assert np.mean((deq - rot) ** 2) < np.mean((deq - x) ** 2) / 5
        assert np.mean((rec - x) ** 2) < 0.2 * np.mean(x**2)
    deq = ll.dequantize_row(ll.quantize_row(x, "tq3_0"), "tq3_0")
    assert np.mean((deq - x) ** 2) < 0.05 * np.mean(x**2)


def test_norm_correction_preserves_the_group_norm():
    x = _gauss(50, 128, seed=2)
    for kind in TURBO:
        rec = ll.rotate_inverse(ll.dequantize_row(ll.quantize_row(x, kind), kind))
        ratio = np.linalg.norm(rec, axis=1) / np.linalg.norm(x, axis=1)
        assert np.max(np.abs(ratio - 1)) < 1e-3  # fp16 rounding of the corrected norm
    rec = ll.dequantize_row(ll.quantize_row(x, "tq3_0"), "tq3_0").reshape(-1, 32)
    ratio = np.linalg.norm(rec, axis=1) / np.linalg.norm(x.reshape(-1, 32), axis=1)
    assert np.max(np.abs(ratio - 1)) < 1e-3


def test_rotation_is_per_128_group_not_per_head():
    x = _gauss(3, 256, seed=3)
    for kind in TURBO:
        whole = ll.quantize_row(x, kind)
        halves = np.concatenate([ll.quantize_row(x[:, :128], kind), ll.quantize_row(x[:, 128:], kind)], axis=1)
        assert np.array_equal(whole, halves)
    assert same_bits(ll.rotate_forward(x)[:, 128:], ll.rotate_forward(x[:, 128:]))


def test_rotated_query_gives_the_same_scores():
    """The graph rotates Q per 128-group; ⟨WHT q, deq_rot k⟩ = ⟨q, recon k⟩ up to rounding."""
    q = _gauss(4, 256, seed=4)
    k = _gauss(10, 256, seed=5)
    deq = ll.dequantize_row(ll.quantize_row(k, "turbo3_0"), "turbo3_0")
    a = ll.rotate_forward(q).astype(np.float64) @ deq.T.astype(np.float64)
    b = q.astype(np.float64) @ ll.rotate_inverse(deq).T.astype(np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_rotations_are_orthogonal_and_inverse():
    x = _gauss(5, 128, seed=6)
    np.testing.assert_allclose(ll.rotate_inverse(ll.rotate_forward(x)), x, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ll.rotate_forward(x), axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(ll.tq3_rotate_inverse(ll.tq3_rotate_forward(x)), x, atol=2e-6)


# --------------------------------------------------------------------------- versions


def test_v1_and_v3_differ_only_in_3_and_4_bit_tables_and_turbo4_layout():
    x = _gauss(30, 128, seed=7)
    assert np.array_equal(ll.quantize_row(x, "turbo2_0", version="v1"), ll.quantize_row(x, "turbo2_0", version="v3"))
    assert not np.array_equal(ll.quantize_row(x, "turbo3_0", version="v1"), ll.quantize_row(x, "turbo3_0", version="v3"))
    v1 = ll.quantize_row(x, "turbo4_0", version="v1")
    assert v1.shape[-1] == 68 and not np.any(v1[:, 2:4])  # the dead rnorm field is always 0x0000
    assert ll.quantize_row(x, "turbo4_0").shape[-1] == 66


def test_v1_turbo4_is_misscaled():
    x = _gauss(300, 128, seed=8)

    def nmse(version):
        rec = ll.rotate_inverse(ll.dequantize_row(ll.quantize_row(x, "turbo4_0", version=version), "turbo4_0", version=version))
        return np.mean(np.sum((rec - x) ** 2, 1) / np.sum(x**2, 1))

    assert nmse("v3") == pytest.approx(0.0088, rel=0.1)
    assert nmse("v1") == pytest.approx(0.019, rel=0.1) and nmse("v1") > 1.9 * nmse("v3")


# --------------------------------------------------------------------------- CPU / GPU / compiler


def test_cuda_v1_turbo4_thresholds_differ_from_cpu():
    """A coordinate in [0.013963, 0.013964) lands one bin lower on v1 CUDA than on the CPU."""
    rng = np.random.default_rng(9)
    r = rng.standard_normal(128)
    r[5] = 0.0
    r *= np.sqrt(1 - 0.0139635**2) / np.linalg.norm(r)
    r[5] = 0.0139635
    x = ll.rotate_inverse(r.astype(F32)[None])[0]
    cpu = ll.quantize_indices(x, "turbo4_0", version="v1")
    cuda = ll.quantize_indices(x, "turbo4_0", version="v1", backend="cuda")
    assert cpu[5] == 9 and cuda[5] == 8  # 0.013963 ≤ r < 0.013964: one bin lower on CUDA
    assert np.sum(cpu != cuda) == 1
    assert np.array_equal(ll.quantize_indices(x, "turbo4_0"), ll.quantize_indices(x, "turbo4_0", backend="cuda"))


def test_cuda_warp_tree_norm_can_change_the_fp16_norm():
    """Tree-order Σx² changes the float32 norm often and the stored fp16 norm rarely."""
    x = _gauss(4000, 128, seed=2024)
    cpu = ll.quantize_row(x, "turbo3_0")
    cuda = ll.quantize_row(x, "turbo3_0", backend="cuda")
    norms_differ = np.sum(ll.block_norms(cpu, "turbo3_0").view(np.uint16) != ll.block_norms(cuda, "turbo3_0").view(np.uint16))
    idx_differ = np.sum(np.any(cpu[:, 2:] != cuda[:, 2:], axis=1))
    assert 1 <= norms_differ <= 20
    assert idx_differ <= 2  # indices almost always agree


def test_fma_contracting_build_can_change_the_fp16_norm():
    """``s += v*v`` contracted to fma (Apple clang on arm64): same kind of rare differences."""
    x = _gauss(1000, 128, seed=2024)
    cpu = ll.quantize_row(x, "turbo3_0")
    fma = ll.quantize_row(x, "turbo3_0", backend="cpu_fma")
    differ = np.sum(np.any(cpu != fma, axis=1))
    assert 1 <= differ <= 5
    t_cpu = ll.quantize_row(x, "tq3_0")
    t_fma = ll.quantize_row(x, "tq3_0", backend="cpu_fma")  # tq3_0 has the same two sums
    assert np.mean(np.any(t_cpu.reshape(-1, 14) != t_fma.reshape(-1, 14), axis=1)) < 0.01


def test_gpu_fp16_centroid_luts_differ_from_the_c_dequant():
    """Some Metal/CUDA flash-attention paths dequantize through fp16 centroid tables, so their
    in-kernel values are not the C ``to_float`` values (compare block bytes, not those)."""
    blocks = ll.quantize_row(_gauss(5, 128, seed=10), "turbo3_0")
    c = ll.centroids("turbo3_0")
    assert not np.array_equal(c.astype(np.float16).astype(F32), c)
    idx = ll.quantize_indices(_gauss(5, 128, seed=10), "turbo3_0")
    norm = ll.block_norms(blocks, "turbo3_0").astype(F32)
    lut = c.astype(np.float16).astype(F32)[idx] * norm
    assert not np.array_equal(lut, ll.dequantize_row(blocks, "turbo3_0"))
