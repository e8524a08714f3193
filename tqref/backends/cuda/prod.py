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

from ...reference.rotation import HADAMARD_ROUNDS, hadamard_block
from . import _warp
from ._ops import count_below, fmul, fsqrt, fsub, fadd, pack_byte, unpack_index

ROUNDS = HADAMARD_ROUNDS


@functools.lru_cache(maxsize=None)
def warp_quantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (x, n, signs, inv, haar, thr, cents, proj, packed, norms, sign_bits, gammas)."""
    chunks = (d + 31) // 32
    m = hadamard_block(d)
    nbytes = (d * bits + 7) // 8
    sbytes = (d + 7) // 8
    nthr = (1 << bits) - 1
    haar = rotation == "haar"
    tpb = 32 * warps
    wd = warps * d
    wnb = warps * nbytes
    wsb = warps * ((d + 7) // 8)

    def kernel(x, n, signs, inv, pi, thr, cents, proj, packed, norms, sign_bits, gammas):
        tid = cuda.threadIdx.x
        w = tid // 32
        lane = tid % 32
        row0 = cuda.blockIdx.x * warps
        row = row0 + w
        src = row if row < n else n - 1
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        codes = cuda.shared.array(wd, uint8)
        bits_q = cuda.shared.array(wd, uint8)
        norm = _warp.load_split_norm(x, src, buf, w, lane, d, chunks)
        if haar:
            _warp.matvec(pi, False, buf, w, rot, lane, d, chunks, part)
        else:
            _warp.hadamard_forward(buf, w, lane, signs, ROUNDS, inv, d, m)
            _warp.copy_row(buf, rot, w, lane, d)
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
        for q in range(tid, warps * nbytes, tpb):
            r = q // nbytes
            if row0 + r < n:
                packed[row0 + r, q - r * nbytes] = pack_byte(codes, r * d, q - r * nbytes, bits, d)
        for q in range(tid, warps * sbytes, tpb):
            r = q // sbytes
            if row0 + r < n:
                sign_bits[row0 + r, q - r * sbytes] = pack_byte(bits_q, r * d, q - r * sbytes, 1, d)
        if row < n and lane == 0:
            norms[row] = norm
            gammas[row] = gamma

    return cuda.jit(kernel), kernel


@functools.lru_cache(maxsize=None)
def warp_dequantize_kernel(d: int, bits: int, rotation: str, warps: int):
    """Kernel (packed, norms, sign_bits, gammas, n, signs, inv, haar, cents, proj, kappa, out)."""
    chunks = (d + 31) // 32
    m = hadamard_block(d)
    nbytes = (d * bits + 7) // 8
    sbytes = (d + 7) // 8
    haar = rotation == "haar"
    tpb = 32 * warps
    wd = warps * d
    wnb = warps * nbytes
    wsb = warps * ((d + 7) // 8)

    def kernel(packed, norms, sign_bits, gammas, n, signs, inv, pi, cents, proj, kappa, out):
        tid = cuda.threadIdx.x
        w = tid // 32
        lane = tid % 32
        row0 = cuda.blockIdx.x * warps
        row = row0 + w
        src = row if row < n else n - 1
        stage = cuda.shared.array(wnb, uint8)
        zs = cuda.shared.array(wsb, uint8)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        for q in range(tid, warps * nbytes, tpb):
            r = q // nbytes
            stage[q] = packed[row0 + r, q - r * nbytes] if row0 + r < n else 0
        for q in range(tid, warps * sbytes, tpb):
            r = q // sbytes
            zs[q] = sign_bits[row0 + r, q - r * sbytes] if row0 + r < n else 0
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
        if haar:
            _warp.matvec(pi, True, buf, w, rot, lane, d, chunks, part)
        else:
            _warp.hadamard_inverse(buf, w, lane, signs, ROUNDS, inv, d, m)
            _warp.copy_row(buf, rot, w, lane, d)
        if row < n:
            nv = norms[row]
            for j in range(lane, d, 32):
                out[row, j] = fmul(rot[w, j], nv)

    return cuda.jit(kernel), kernel
