"""Numba backend building blocks: packing at every width, rotation, FMA-free machine code."""

from __future__ import annotations

import os
import platform
import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqref.backends.numba_cpu import NumbaBackend
from tqref.reference import packing, rotation

from _numba_support import DIMS, ROTATIONS, SEEDS, assert_same, make_input, mse_plan

NB = NumbaBackend()


@settings(max_examples=40)
@given(bits=st.integers(1, 8), count=st.integers(1, 70), rows=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_pack_and_unpack_every_width(bits, count, rows, seed):
    idx = np.random.default_rng(seed).integers(0, 256, size=(rows, count)).astype(np.uint8)
    packed = packing.pack_bits(idx, bits)
    assert_same(packed, NB.pack_bits(idx, bits), "packed")
    assert_same(packing.unpack_bits(packed, bits, count), NB.unpack_bits(packed, bits, count), "unpacked")


def test_pack_parallel_and_errors():
    idx = np.random.default_rng(0).integers(0, 8, size=(3000, 37)).astype(np.uint8)
    assert_same(packing.pack_bits(idx, 3), NB.pack_bits(idx, 3), "packed (parallel)")
    with pytest.raises(ValueError, match="bytes on the last axis"):
        NB.unpack_bits(np.zeros((2, 5), np.uint8), 3, 37)


@settings(max_examples=30)
@given(dim=DIMS, seed=SEEDS, rotation_kind=ROTATIONS, rows=st.integers(1, 20), data_seed=st.integers(0, 2**32 - 1))
def test_rotation_is_bit_exact(dim, seed, rotation_kind, rows, data_seed):
    """Π x without normalisation (the queries' rotation): same float32 bits."""
    plan = mse_plan(dim, 2, seed, rotation_kind)
    x = make_input("normal", rows, dim, data_seed) * np.float32(3.0)
    assert_same(rotation.rotate(x, rotation_kind, plan.seed), NB.rotate(x, plan), "rotated")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 assembly check")
def test_no_fma_in_machine_code():
    """No fused multiply-add in the quantize kernel, even on a CPU that has FMA: numba emits
    fmul/fadd without the `contract` flag and the lane primitives emit plain vector IR."""
    from tqref.backends.numba_cpu import _jit, backend, kernels

    options = dict(_jit.OPTIONS, cache=False)
    fresh = numba.njit(**options)(kernels.mse_quantize.serial.py_func)
    plan = mse_plan(80, 3, 1, "haar")  # Haar exercises the multiply-add of the matvec
    x = make_input("normal", 20, 80, 1)
    NB.mse_quantize(x, plan)  # warm
    from tqref.backends.numba_cpu._plan import kernel_plan

    kp = kernel_plan(plan)
    packed = np.empty((20, 30), np.uint8)
    norms = np.empty(20, np.float32)
    fresh(*backend._rows(x, 80), kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar, kp.thresholds,
          kp.bits, packed, norms, 1)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(r"\bv?mulps\b", asm), "expected vector multiplies in the kernel"
    assert not re.search(r"\bvf(n?m)(add|sub)\w*", asm), "FMA instruction found"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 assembly check")
def test_fma_detector_sees_a_contracted_kernel():
    """The check above is meaningful: with the `contract` flag LLVM does emit FMA here."""

    def axpy(a, b, c, out):
        for i in range(a.shape[0]):
            out[i] = a[i] * b[i] + c[i]

    fn = numba.njit(fastmath={"contract"}, cache=False)(axpy)
    a = np.ones(64, np.float32)
    fn(a, a, a, a.copy())
    asm = fn.inspect_asm(fn.signatures[0])
    try:
        with open("/proc/cpuinfo") as f:
            has_fma = " fma " in f.read().replace("\n", " ")
    except OSError:
        pytest.skip("no /proc/cpuinfo to tell whether the CPU has FMA")
    if not has_fma:
        pytest.skip("CPU without FMA")
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":  # e.g. "generic": a target without FMA
        pytest.skip(f"Numba compiles for NUMBA_CPU_NAME={os.environ['NUMBA_CPU_NAME']}, not the host CPU")
    assert re.search(r"\bvf(n?m)(add|sub)\w*", asm)


def test_serial_and_parallel_variants_have_separate_cache_entries():
    """Numba's disk cache keys on the qualified name, not on parallel=True: the two variants
    of a kernel must be distinct functions, or whichever compiled first is loaded by both
    (a cached serial build then silently runs in place of the parallel one)."""
    from tqref.backends.numba_cpu import _jit, attention, estimators, kernels

    found = 0
    for module in (kernels, estimators, attention):
        for obj in vars(module).values():
            if isinstance(obj, _jit.Kernel):
                found += 1
                assert obj.serial.py_func.__qualname__ != obj.parallel.py_func.__qualname__
                assert obj.parallel.targetoptions.get("parallel")
    assert found >= 10


@settings(max_examples=25, deadline=None)
@given(dim=DIMS, seed=SEEDS, kind=ROTATIONS, rows=st.integers(1, 40))
def test_rotate_inverse_rows_bit_identical(dim, seed, kind, rows):
    """NumbaBackend.rotate_inverse (used by KVCache.attend for its outputs) equals
    rotation.rotate_inverse bit for bit, as rotate equals rotation.rotate."""
    plan = mse_plan(dim, 3, seed, kind)
    y = make_input("mixed", rows, dim, seed % 1000)
    assert_same(NB.rotate_inverse(y, plan), rotation.rotate_inverse(y, plan.rotation, plan.seed), "rotate_inverse")
    assert_same(NB.rotate(y, plan), rotation.rotate(y, plan.rotation, plan.seed), "rotate")
