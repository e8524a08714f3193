"""TurboQuant_prod kernels (mirrors tqref/reference/prod.py and qjl.py; paper Algorithm 2).

Warp layout (one warp per vector, ``_warp``). Quantize runs the mse steps with b − 1 bits,
forms the residual in the rotated domain r = y − float32(c[idx]) (one rounded subtraction),
γ = sqrt(ordered_dot(r, r)), and the QJL signs [ordered_dot(S_i, r) ≥ 0] for i < d — each
projection is a written-order 32-lane dot product, so the sign bits are exact given S.

Dequantize adds κ·γ·Sᵀz in the rotated domain before the inverse rotation. The reference
computes Sᵀz with a matmul (statistical order), so this output is compared by tolerance.
"""

from __future__ import annotations

import functools

from numba import cuda, float32, uint8

from ...reference.packing import packed_size
from . import _warp
from ._ops import count_below, fadd, fmul, fsqrt, fsub, pack_rows, stage_rows, unpack_index


@functools.lru_cache(maxsize=None)
def warp_quantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (x, n, signs, steps, inv, pi, thr, cents, proj, packed, norms, sign_bits, gammas)."""
    chunks, m, haar, tpb = _warp.geometry(d, rotation, warps)
    nbytes = packed_size(d, bits)
    sbytes = packed_size(d, 1)
    nthr = (1 << bits) - 1
    wd = warps * d

    def kernel(x, n, signs, steps, inv, pi, thr, cents, proj, packed, norms, sign_bits, gammas):
        tid = cuda.threadIdx.x
        row0 = cuda.blockIdx.x * warps
        w, lane, row, src = _warp.rows(tid, row0, n)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        codes = cuda.shared.array(wd, uint8)
        bits_q = cuda.shared.array(wd, uint8)
        norm = _warp.load_split_norm(x, src, buf, w, lane, d, chunks)
        _warp.rotate(buf, w, rot, lane, haar, False, pi, signs, steps, inv, d, m, chunks, part)
        for j in range(lane, d, 32):
            idx = count_below(rot[w, j], thr, nthr)
            codes[w * d + j] = idx
            buf[w, j] = fsub(rot[w, j], cents[idx])  # residual, rotated domain
        _warp.warp_sync()
        gamma = fsqrt(_warp.ordered_dot_bcast(buf, w, buf, w, lane, d, chunks))
        _warp.matvec(proj, False, buf, w, rot, lane, d, chunks, part)
        for j in range(lane, d, 32):
            bits_q[w * d + j] = 1 if rot[w, j] >= 0 else 0  # sign(0) = +1, also for -0.0
        cuda.syncthreads()
        pack_rows(codes, packed, row0, warps, n, d, nbytes, bits, tid, tpb)
        pack_rows(bits_q, sign_bits, row0, warps, n, d, sbytes, 1, tid, tpb)
        if row < n and lane == 0:
            norms[row] = norm
            gammas[row] = gamma

    return cuda.jit(kernel), kernel


@functools.lru_cache(maxsize=None)
def warp_dequantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (packed, norms, sign_bits, gammas, n, signs, steps, inv, pi, cents, proj, kappa, out)."""
    chunks, m, haar, tpb = _warp.geometry(d, rotation, warps)
    nbytes = packed_size(d, bits)
    sbytes = packed_size(d, 1)
    wnb = warps * nbytes
    wsb = warps * sbytes

    def kernel(packed, norms, sign_bits, gammas, n, signs, steps, inv, pi, cents, proj, kappa, out):
        tid = cuda.threadIdx.x
        row0 = cuda.blockIdx.x * warps
        w, lane, row, src = _warp.rows(tid, row0, n)
        stage = cuda.shared.array(wnb, uint8)
        zs = cuda.shared.array(wsb, uint8)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        stage_rows(packed, stage, row0, warps, n, nbytes, tid, tpb)
        stage_rows(sign_bits, zs, row0, warps, n, sbytes, tid, tpb)
        cuda.syncthreads()
        scale = fmul(kappa, gammas[src])
        for j in range(lane, d, 32):
            corr = float32(0.0)
            for i in range(d):  # (z @ S)_j, statistical order
                z = float32(1.0) if unpack_index(zs, w * sbytes, i, 1, sbytes) else float32(-1.0)
                corr = fadd(corr, fmul(z, proj[i, j]))
            c = cents[unpack_index(stage, w * nbytes, j, bits, nbytes)]
            buf[w, j] = fadd(c, fmul(corr, scale))
        cuda.syncthreads()
        _warp.rotate(buf, w, rot, lane, haar, True, pi, signs, steps, inv, d, m, chunks, part)
        if row < n:
            nv = norms[row]
            for j in range(lane, d, 32):
                out[row, j] = fmul(rot[w, j], nv)

    return cuda.jit(kernel), kernel
