"""CUDA mse kernels against the reference: codes, norms and dequantized vectors bit for bit.

Block sizes are chosen so the last block is partial (rows that have no vector still take
part in every shuffle and barrier). See _cuda_support.py for where these tests run.
"""

from __future__ import annotations

import numpy as np
import pytest

from _cuda_support import edge_rows, host, load_backend, same_bits

C = load_backend()

from numba import cuda  # noqa: E402  (after load_backend chose GPU or simulator)

from tqref.reference import codebook as cb  # noqa: E402
from tqref.reference import mse, rotation  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402
from tqref.backends.cuda import _ops  # noqa: E402

# (d, bits, rotation, layout, threads, n): threads = threads per block (lane) or warps (warp)
CASES = [
    (128, 3, "hadamard", "lane", 32, 11),  # T = 4, 8 rows per block: 2 blocks, last partial
    (128, 4, "hadamard", "lane", 64, 5),
    (64, 2, "hadamard", "lane", 32, 17),  # T = 2, 16 rows per block
    (16, 1, "hadamard", "lane", 32, 35),  # T = 1, 32 rows per block, 2 blocks
    (32, 8, "hadamard", "lane", 32, 3),  # 8-bit codes (binary search over 255 thresholds)
    (2, 2, "hadamard", "lane", 32, 4),  # smallest d
    (128, 3, "hadamard", "warp", 3, 7),  # the warp layout at a power of two
    (48, 3, "hadamard", "warp", 3, 7),  # two overlapping Hadamard blocks
    (100, 4, "hadamard", "warp", 2, 3),  # d not a multiple of 32 nor of 8·bits
    (3, 5, "hadamard", "warp", 2, 3),
    (33, 2, "haar", "warp", 2, 5),  # Haar: written-order matvec
]


def _plan(d, bits, rot, seed=11):
    return make_plan(Config("mse", d, bits, seed=seed, rotation=rot))


@pytest.mark.parametrize("d,bits,rot,layout,threads,n", CASES)
def test_quantize_and_dequantize_match_reference_bits(d, bits, rot, layout, threads, n):
    plan = _plan(d, bits, rot)
    x = edge_rows(np.random.default_rng(d * 10 + bits), n, d)
    packed, norms = C.mse_quantize_device(x, plan, layout=layout, threads=threads)
    ref_packed, ref_norms = mse.quantize(x, plan)
    np.testing.assert_array_equal(host(packed), ref_packed)
    assert same_bits(host(norms), ref_norms)
    out = C.mse_dequantize_device(ref_packed, ref_norms, plan, layout=layout, threads=threads)
    assert same_bits(host(out), mse.dequantize(ref_packed, ref_norms, plan))


def test_device_arrays_in_and_out():
    """Device inputs are used in place; results are device arrays (CuPy when installed)."""
    plan = _plan(64, 3, "hadamard")
    x = edge_rows(np.random.default_rng(5), 9, 64)
    xd = cuda.to_device(x)
    packed, norms = C.mse_quantize_device(xd, plan, threads=64)
    assert not isinstance(packed, np.ndarray) or C.SIMULATOR
    back = C.mse_dequantize_device(packed, norms, plan)
    ref_packed, ref_norms = mse.quantize(x, plan)
    np.testing.assert_array_equal(host(packed), ref_packed)
    assert same_bits(host(back), mse.dequantize(ref_packed, ref_norms, plan))


def test_quantize_device_accepts_public_quantizer():
    import tqref

    q = tqref.TurboQuantMSE(dim=32, bits=2, seed=4)
    x = edge_rows(np.random.default_rng(9), 6, 32)
    packed, norms = C.quantize_device(x, q)
    codes = q.quantize(x)
    np.testing.assert_array_equal(host(packed), codes.indices)
    assert same_bits(host(norms), codes.norms)
    assert same_bits(host(C.dequantize_device((packed, norms), q)), q.dequantize(codes))


@pytest.mark.parametrize("d,rot", [(64, "hadamard"), (40, "hadamard"), (20, "haar")])
@pytest.mark.parametrize("inverse", [False, True])
def test_rotation_matches_reference_bits(d, rot, inverse):
    plan = _plan(d, 1, rot)
    x = np.random.default_rng(d).standard_normal((5, d)).astype(np.float32)
    out = host(C.rotate_device(x, plan, inverse=inverse, threads=2))
    fn = rotation.rotate_inverse if inverse else rotation.rotate
    assert same_bits(out, fn(x, rot, plan.seed))


def test_count_below_ties_zero_and_nan():
    """The threshold search puts values on a boundary in the lower cell, ±0 in cell K/2 − 1,
    NaN in cell 0 (codebook.nearest_index), for every bit width."""
    for bits in (1, 2, 3, 5, 8):
        book = cb.lloyd_max(bits, 64)
        thr = book.thresholds_f32
        b32 = book.boundaries.astype(np.float32)
        vals = np.concatenate([thr, np.nextafter(thr, np.float32(np.inf)), b32, [0.0, -0.0, np.nan, 1.0, -1.0]])
        vals = vals.astype(np.float32)
        out = np.zeros(vals.shape, np.int32)
        nthr = len(thr)

        @cuda.jit
        def kern(v, t, o):
            i = cuda.grid(1)
            if i < v.shape[0]:
                o[i] = _ops.count_below(v[i], t, nthr)

        kern[1, 32 * ((len(vals) + 31) // 32)](vals, np.ascontiguousarray(thr), out)
        with np.errstate(invalid="ignore"):
            ref = cb.nearest_index(vals.astype(np.float64), book.boundaries)
        np.testing.assert_array_equal(out, ref.astype(np.int32))


def test_backend_object_matches_reference_backend():
    from tqref.backends import reference

    backend = C.CudaBackend()
    ref = reference.ReferenceBackend()
    plan = _plan(32, 3, "hadamard")
    x = edge_rows(np.random.default_rng(2), 6, 32)
    p, nrm = backend.mse_quantize(x, plan)
    rp, rn = ref.mse_quantize(x, plan)
    assert isinstance(p, np.ndarray)
    np.testing.assert_array_equal(p, rp)
    assert same_bits(nrm, rn)
    assert same_bits(backend.mse_dequantize(rp, rn, plan), ref.mse_dequantize(rp, rn, plan))
