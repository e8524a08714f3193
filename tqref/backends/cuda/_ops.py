"""Device primitives shared by the CUDA kernels, in two interchangeable builds.

On a GPU every name below is a Numba-CUDA device function or a libdevice intrinsic; under
the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same names are plain Python functions
with identical results, because the simulator implements neither libdevice nor warp
shuffles. The kernels call only these names for (a) normative float arithmetic and (b)
cross-lane communication, so one kernel text runs in both places.

Float policy (docs/compatibility.md "Policy", docs/backends.md "CUDA"):

* ``fadd``, ``fsub``, ``fmul``, ``fdiv``, ``fsqrt`` are IEEE float32 operations, correctly
  rounded to nearest-even. On the GPU they are ``__nv_fadd_rn`` etc., which compile to
  ``add.rn.f32`` / ``mul.rn.f32`` / ``div.rn.f32`` / ``sqrt.rn.f32``: PTX instructions with an
  explicit rounding modifier are never contracted into ``fma`` by NVVM or ptxas. Plain
  ``a * b + c`` in a Numba kernel *is* contracted (checked in tests/backends/test_cuda_ptx.py).
* ``ldexp_f32(x, e)`` is ``x · 2^e`` rounded once to float32 (exact product in float64,
  then one float64 → float32 conversion): equal to C's ``ldexpf`` also when the result is
  subnormal or overflows to inf.
* ``frexp_exponent(m)`` is the exponent E of ``m = f · 2^E``, f in [0.5, 1), from the
  float's bits (subnormals included): integer work only.

Warp primitives (full 32-lane warps; every thread of the block must reach each call, so
kernels never return early before their last shuffle or barrier):

* ``shfl_down(v, k)``: the value of lane ``lane + k`` (own value when that is ≥ 32).
* ``shfl_xor(v, k)``: the value of lane ``lane ^ k``.
* ``shfl_idx(v, src)``: the value of lane ``src`` of this warp.
* ``xor_stage(y, count, h, upper)``: one cross-thread butterfly stage on registers
  y[0 : count]: with o = shfl_xor(y[k], h), y[k] = o − y[k] if ``upper`` else y[k] + o
  (lower element a, upper b: (a + b, a − b)). One call so the simulator can exchange the
  whole register array at once.
* ``warp_sync()``: orders shared-memory accesses of the warp (``__syncwarp``).

In the simulator a shuffle is an exchange through a per-block table between two block-wide
barriers, which is why every thread of the block must take part.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import config, cuda, float32, float64, int32

SIMULATOR = bool(config.ENABLE_CUDASIM)
FULL_MASK = 0xFFFFFFFF

if SIMULATOR:
    _F32 = np.float32

    def fadd(a, b):
        return _F32(_F32(a) + _F32(b))

    def fsub(a, b):
        return _F32(_F32(a) - _F32(b))

    def fmul(a, b):
        return _F32(_F32(a) * _F32(b))

    def fdiv(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return _F32(_F32(a) / _F32(b))

    def fsqrt(a):
        with np.errstate(invalid="ignore"):
            return _F32(np.sqrt(_F32(a)))

    def ldexp_f32(x, e):
        with np.errstate(over="ignore"):
            return _F32(float(x) * math.ldexp(1.0, int(e)))

    def frexp_exponent(m):
        return int(math.frexp(float(m))[1]) if m != 0 else 0

    def _exchange(value, mode, arg):
        th = threading.current_thread()
        table = th._manager.__dict__.setdefault("_tqref_shuffle", {})
        tid = th.thread_id
        table[tid] = value
        th.syncthreads()
        lane = tid % 32
        if mode == 0:
            src = lane + arg if lane + arg < 32 else lane
        elif mode == 1:
            src = lane ^ arg
        else:
            src = arg % 32
        out = table.get(tid - lane + src, value)
        th.syncthreads()
        return out

    def shfl_down(v, k):
        return _exchange(v, 0, int(k))

    def shfl_xor(v, k):
        return _exchange(v, 1, int(k))

    def shfl_idx(v, src):
        return _exchange(v, 2, int(src))

    def xor_stage(y, count, h, upper):
        other = _exchange(np.array(y[:count], dtype=np.float32), 1, int(h))
        for k in range(count):
            y[k] = fsub(other[k], y[k]) if upper else fadd(y[k], other[k])

    def warp_sync():
        threading.current_thread().syncthreads()

else:
    from numba.cuda import libdevice

    fadd = libdevice.fadd_rn
    fsub = libdevice.fsub_rn
    fmul = libdevice.fmul_rn
    fdiv = libdevice.fdiv_rn
    fsqrt = libdevice.fsqrt_rn

    @cuda.jit(device=True, inline=True)
    def ldexp_f32(x, e):
        return float32(libdevice.dmul_rn(float64(x), libdevice.ldexp(float64(1.0), int32(e))))

    @cuda.jit(device=True, inline=True)
    def frexp_exponent(m):
        bits = libdevice.float_as_int(m)
        biased = (bits >> 23) & 0xFF
        if biased != 0:
            return int32(biased - 126)
        mant = bits & 0x7FFFFF
        if mant == 0:
            return int32(0)
        return int32(32 - cuda.clz(mant) - 149)

    @cuda.jit(device=True, inline=True)
    def shfl_down(v, k):
        return cuda.shfl_down_sync(FULL_MASK, v, k)

    @cuda.jit(device=True, inline=True)
    def shfl_xor(v, k):
        return cuda.shfl_xor_sync(FULL_MASK, v, k)

    @cuda.jit(device=True, inline=True)
    def shfl_idx(v, src):
        return cuda.shfl_sync(FULL_MASK, v, src)

    @cuda.jit(device=True, inline=True)
    def xor_stage(y, count, h, upper):
        for k in range(count):
            o = cuda.shfl_xor_sync(FULL_MASK, y[k], h)
            if upper:
                y[k] = libdevice.fsub_rn(o, y[k])
            else:
                y[k] = libdevice.fadd_rn(y[k], o)

    @cuda.jit(device=True, inline=True)
    def warp_sync():
        cuda.syncwarp(FULL_MASK)


def jit_device(fn):
    """``cuda.jit(device=True, inline=True)`` on a GPU; the plain function in the simulator."""
    return fn if SIMULATOR else cuda.jit(device=True, inline=True)(fn)


@jit_device
def count_below(v, thresholds, nthr):
    """Cell index of float32 ``v``: #{i : thresholds[i] < v} for sorted float32 thresholds.

    ``thresholds`` are the codebook boundaries rounded down to float32
    (``Codebook.thresholds_f32``), so this equals the reference's exact float64 count; NaN
    compares false everywhere and maps to 0. ``nthr + 1`` is a power of two: a branch-light
    binary search of ``log2(nthr + 1)`` steps.
    """
    pos = 0
    step = (nthr + 1) >> 1
    while step > 0:
        if thresholds[pos + step - 1] < v:
            pos += step
        step >>= 1
    return pos


@jit_device
def pack_byte(codes, base, byte, bits, count):
    """Byte ``byte`` of the LSB-first b-bit stream of ``codes[base : base + count]`` (uint8).

    Bits [8·byte, 8·byte + 8) come from elements j = ⌊8·byte / b⌋ … ⌊(8·byte + 7) / b⌋; each
    is shifted into a 16-bit window that starts 8 bits below the byte (shift ≥ 1 always).
    """
    first = (8 * byte) // bits
    last = (8 * byte + 7) // bits
    if last > count - 1:
        last = count - 1
    acc = 0
    for j in range(first, last + 1):
        acc |= int(codes[base + j]) << (bits * j - 8 * byte + 8)
    return (acc >> 8) & 0xFF


@jit_device
def unpack_index(stream, base, j, bits, nbytes):
    """Index j of the packed row ``stream[base : base + nbytes]``: bits [b·j, b·j + b)."""
    bit = bits * j
    byte = bit >> 3
    val = int(stream[base + byte])
    if byte + 1 < nbytes:
        val |= int(stream[base + byte + 1]) << 8
    return (val >> (bit & 7)) & ((1 << bits) - 1)


@jit_device
def pack_rows(codes, packed, row0, rows, n, d, nbytes, bits, tid, tpb):
    """packed[row0 + r] <- the b-bit stream of codes[r·d : r·d + d], for the block's rows r.

    The block's ``tpb`` threads stride over its ``rows · nbytes`` output bytes (contiguous
    rows, so the stores coalesce); rows at or past ``n`` are skipped.
    """
    for q in range(tid, rows * nbytes, tpb):
        r = q // nbytes
        if row0 + r < n:
            packed[row0 + r, q - r * nbytes] = pack_byte(codes, r * d, q - r * nbytes, bits, d)


@jit_device
def stage_rows(packed, stage, row0, rows, n, nbytes, tid, tpb):
    """stage[r·nbytes : (r + 1)·nbytes] <- packed[row0 + r] for the block's rows r (0 past ``n``).

    The inverse of :func:`pack_rows`' layout: the block's threads stride over the bytes.
    """
    for q in range(tid, rows * nbytes, tpb):
        r = q // nbytes
        stage[q] = packed[row0 + r, q - r * nbytes] if row0 + r < n else 0
