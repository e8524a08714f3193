"""TurboQuant_mse kernels (mirrors tqref/reference/mse.py; paper Algorithm 1).

Two layouts compute the same bits:

* **warp layout** (:func:`warp_quantize_kernel`, :func:`warp_dequantize_kernel`): one
  warp per vector, the vector in shared memory (``_warp``). Every d ≥ 2, Hadamard or Haar.
* **lane layout** (:func:`lane_quantize_kernel`, :func:`lane_dequantize_kernel`): the fast
  path for the Hadamard rotation at power-of-two d ≤ ``LANE_MAX_DIM``. A group of
  T = clamp(d/32, 1, 32) consecutive threads owns one vector; thread t of the group keeps
  the E = d/T coordinates j = t + T·k (k = 0 … E − 1) in registers. Butterfly stages h < T
  exchange registers with ``shfl_xor(h)``; stages h ≥ T pair registers inside a thread.
  The written reduction order still holds: logical lane l = t + T·i (i < 32/T) lives in
  thread t and its terms are the registers k = i, i + 32/T, … (increasing j); butterfly
  offsets 16 … T fold registers inside the thread, offsets T/2 … 1 fold threads with
  ``shfl_down``.

Kernels are built per (d, bits, layout) by the factories below, so sizes are compile-time
constants (register arrays, shared tiles), and cached. Every float operation is one of
``_ops``' correctly rounded float32 operations in the reference's order, so codes, norms
and dequantized vectors are bit-identical to the reference (tests/backends/test_cuda_mse.py).
Threads with no vector (the partial last block) still take part in every shuffle and
barrier and skip only their stores.
"""

from __future__ import annotations

import functools

from numba import cuda, float32, uint8

from ...reference.packing import packed_size
from ...reference.rotation import hadamard_steps
from . import _warp
from ._ops import (
    count_below,
    fadd,
    fmul,
    fsub,
    jit_device,
    pack_rows,
    shfl_down,
    shfl_idx,
    stage_rows,
    unpack_index,
    xor_stage,
)

LANE_MAX_DIM = 2048


def lane_layout_ok(d: int, rotation: str) -> bool:
    """Whether the register (lane) layout handles this configuration: the Hadamard rotation
    with every step of rotation.hadamard_steps(d) transforming the whole vector (d a power
    of two), 2 ≤ d ≤ LANE_MAX_DIM."""
    return rotation == "hadamard" and 2 <= d <= LANE_MAX_DIM and set(hadamard_steps(d)) == {(0, d)}


def lane_group(d: int) -> int:
    """T, the threads per vector of the lane layout."""
    return max(1, min(32, d // 32))


# ----------------------------------------------------------------------------- warp layout


@functools.lru_cache(maxsize=None)
def warp_quantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (x, n, signs, steps, inv, pi, thr, packed, norms) for blocks of ``32·warps`` threads."""
    chunks, m, haar, tpb = _warp.geometry(d, rotation, warps)
    nbytes = packed_size(d, bits)
    nthr = (1 << bits) - 1
    wd = warps * d

    def kernel(x, n, signs, steps, inv, pi, thr, packed, norms):
        tid = cuda.threadIdx.x
        row0 = cuda.blockIdx.x * warps
        w, lane, row, src = _warp.rows(tid, row0, n)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        codes = cuda.shared.array(wd, uint8)
        norm = _warp.load_split_norm(x, src, buf, w, lane, d, chunks)
        _warp.rotate(buf, w, rot, lane, haar, False, pi, signs, steps, inv, d, m, chunks, part)
        for j in range(lane, d, 32):
            codes[w * d + j] = count_below(rot[w, j], thr, nthr)
        cuda.syncthreads()
        pack_rows(codes, packed, row0, warps, n, d, nbytes, bits, tid, tpb)
        if row < n and lane == 0:
            norms[row] = norm

    return cuda.jit(kernel), kernel


@functools.lru_cache(maxsize=None)
def warp_dequantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (packed, norms, n, signs, steps, inv, pi, cents, out)."""
    chunks, m, haar, tpb = _warp.geometry(d, rotation, warps)
    nbytes = packed_size(d, bits)
    wnb = warps * nbytes

    def kernel(packed, norms, n, signs, steps, inv, pi, cents, out):
        tid = cuda.threadIdx.x
        row0 = cuda.blockIdx.x * warps
        w, lane, row, _ = _warp.rows(tid, row0, n)
        stage = cuda.shared.array(wnb, uint8)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        stage_rows(packed, stage, row0, warps, n, nbytes, tid, tpb)
        cuda.syncthreads()
        for j in range(lane, d, 32):
            buf[w, j] = cents[unpack_index(stage, w * nbytes, j, bits, nbytes)]
        cuda.syncthreads()
        _warp.rotate(buf, w, rot, lane, haar, True, pi, signs, steps, inv, d, m, chunks, part)
        if row < n:
            scale = norms[row]
            for j in range(lane, d, 32):
                out[row, j] = fmul(rot[w, j], scale)

    return cuda.jit(kernel), kernel


# ----------------------------------------------------------------------------- lane layout


def _lane_constants(d: int, tpb: int):
    t_group = lane_group(d)
    if tpb % 32 or tpb < 32:
        raise ValueError(f"threads per block: expected a positive multiple of 32, got {tpb}")
    return t_group, d // t_group, 32 // t_group, max(1, d // 32), tpb // t_group


@jit_device
def _lane_butterflies(y, t, T, E):
    """The FWHT stages (unnormalised) of the group's vector, thread t holding y[k] = v[t + T·k].

    Stage h < T pairs threads t and t ^ h (``xor_stage``); stage h = T·hk pairs registers k
    and k + hk of one thread; each pair (a, b) becomes (a + b, a − b), h = 1, 2, … as in
    reference rotation.fwht.
    """
    h = 1
    while h < T:
        xor_stage(y, E, h, (t & h) != 0)
        h *= 2
    hk = 1
    while hk < E:
        for k in range(E):
            if (k & hk) == 0:
                a = y[k]
                b = y[k + hk]
                y[k] = fadd(a, b)
                y[k + hk] = fsub(a, b)
        hk *= 2


@functools.lru_cache(maxsize=None)
def lane_quantize_kernel(d: int, bits: int, tpb: int):
    """Kernel (x, n, signs, inv, thr, packed, norms); Hadamard rotation, power-of-two d."""
    T, E, L, C, R = _lane_constants(d, tpb)
    nsteps = len(hadamard_steps(d))
    nbytes = packed_size(d, bits)
    nthr = (1 << bits) - 1
    rd = R * d

    def kernel(x, n, signs, inv, thr, packed, norms):
        tid = cuda.threadIdx.x
        g = tid // T
        t = tid % T
        row0 = cuda.blockIdx.x * R
        row = row0 + g
        src = row if row < n else n - 1
        y = cuda.local.array(E, float32)
        s = cuda.local.array(L, float32)
        codes = cuda.shared.array(rd, uint8)
        # 1. split norm (_warp's split_* steps over the registers; the sum of squares in
        # the register layout's written order, module docstring).
        mx = float32(0.0)
        for k in range(E):
            v = x[src, t + T * k]
            y[k] = v
            a = abs(v)
            if a > mx:
                mx = a
        e = _warp.split_exponent(mx, T)
        _warp.split_scale(y, 0, E, 1, e)
        for i in range(L):
            s[i] = fmul(y[i], y[i]) if i < E else float32(0.0)
        for c in range(1, C):
            for i in range(L):
                s[i] = fadd(s[i], fmul(y[i + c * L], y[i + c * L]))
        off = 16
        while off >= T:
            for i in range(off // T):
                s[i] = fadd(s[i], s[i + off // T])
            off //= 2
        acc = s[0]
        off = T // 2
        while off >= 1:
            acc = fadd(acc, shfl_down(acc, off))
            off //= 2
        total = shfl_idx(acc, (tid % 32) - t)
        norm = _warp.split_finish(y, 0, E, 1, total, e)
        # 2. rotation: the steps of rotation.hadamard_steps(d) (each the whole vector):
        # signs, normalised FWHT.
        for r in range(nsteps):
            for k in range(E):
                y[k] = fmul(y[k], signs[r, t + T * k])
            _lane_butterflies(y, t, T, E)
            for k in range(E):
                y[k] = fmul(y[k], inv)
        # 3. nearest centroid; 4. pack the block's rows (contiguous bytes, coalesced).
        for k in range(E):
            codes[g * d + t + T * k] = count_below(y[k], thr, nthr)
        cuda.syncthreads()
        pack_rows(codes, packed, row0, R, n, d, nbytes, bits, tid, tpb)
        if row < n and t == 0:
            norms[row] = norm

    return cuda.jit(kernel), kernel


@functools.lru_cache(maxsize=None)
def lane_dequantize_kernel(d: int, bits: int, tpb: int):
    """Kernel (packed, norms, n, signs, inv, cents, out); Hadamard rotation, power-of-two d."""
    T, E, L, C, R = _lane_constants(d, tpb)
    nsteps = len(hadamard_steps(d))
    nbytes = packed_size(d, bits)
    rnb = R * nbytes

    def kernel(packed, norms, n, signs, inv, cents, out):
        tid = cuda.threadIdx.x
        g = tid // T
        t = tid % T
        row0 = cuda.blockIdx.x * R
        row = row0 + g
        y = cuda.local.array(E, float32)
        stage = cuda.shared.array(rnb, uint8)
        stage_rows(packed, stage, row0, R, n, nbytes, tid, tpb)
        cuda.syncthreads()
        for k in range(E):
            y[k] = cents[unpack_index(stage, g * nbytes, t + T * k, bits, nbytes)]
        for rr in range(nsteps):
            r = nsteps - 1 - rr
            _lane_butterflies(y, t, T, E)
            for k in range(E):
                y[k] = fmul(fmul(y[k], inv), signs[r, t + T * k])
        if row < n:
            scale = norms[row]
            for k in range(E):
                out[row, t + T * k] = fmul(y[k], scale)

    return cuda.jit(kernel), kernel
