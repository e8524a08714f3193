"""Inner-product estimators of many queries against many packed codes (mirrors
tqref/reference/estimators.py).

1. Queries are rotated once, q_rot = Π q (:func:`rotate_kernel`, the normative rotation of
   ``_warp``: bit-identical to ``estimators.rotate_queries``); for prod also
   q_proj = S q_rot (:func:`matvec_kernel`, written-order dot products).
2. :func:`score_kernel` computes the (m, n) estimates on a 2-D grid: a block stages the
   centroid values ŷ (and for prod the signs z) of 32 codes in shared memory once and
   ``qt`` warps read them against ``qt`` queries each pass. These sums are float outputs
   (the reference uses matmuls): accumulation may contract into FMA, and results are
   compared with the reference by tolerance.
"""

from __future__ import annotations

import functools

from numba import cuda, float32

from ...reference.packing import packed_size
from . import _warp
from ._ops import fdiv, unpack_index


@functools.lru_cache(maxsize=None)
def rotate_kernel(d: int, rotation: str, warps: int, inverse: bool):
    """Kernel (x, n, signs, steps, inv, pi, out): out[row] = Π x[row] (Πᵀ if ``inverse``).

    With ``rotation="haar"`` this is out[row, i] = ordered_dot(pi[i, :], x[row, :]) for any
    matrix ``pi`` (its transpose if ``inverse``); ``signs``, ``steps`` and ``inv`` are then
    unused.
    """
    chunks, m, haar, _ = _warp.geometry(d, rotation, warps)

    def kernel(x, n, signs, steps, inv, pi, out):
        w, lane, row, src = _warp.rows(cuda.threadIdx.x, cuda.blockIdx.x * warps, n)
        buf = cuda.shared.array((warps, d), float32)
        rot = cuda.shared.array((warps, d), float32)
        part = cuda.local.array(32, float32)
        for j in range(lane, d, 32):
            buf[w, j] = x[src, j]
        _warp.warp_sync()
        _warp.rotate(buf, w, rot, lane, haar, inverse, pi, signs, steps, inv, d, m, chunks, part)
        if row < n:
            for j in range(lane, d, 32):
                out[row, j] = rot[w, j]

    return cuda.jit(kernel), kernel


def matvec_kernel(d: int, warps: int):
    """Kernel (x, n, signs, steps, inv, mat, out): out[row, i] = ordered_dot(mat[i, :], x[row, :]).

    The Haar path of :func:`rotate_kernel` (one cached kernel); ``signs``, ``steps``, ``inv``
    unused.
    """
    return rotate_kernel(d, "haar", warps, False)


@functools.lru_cache(maxsize=None)
def score_kernel(d: int, bits: int, qt: int, prod: bool, unbiased: bool):
    """Kernel (q_rot, q_proj, m, packed, norms, sign_bits, gammas, n, cents, kappa, alpha, out).

    Block (32, qt): threadIdx.x picks one of 32 codes of the tile, threadIdx.y a query; the
    grid's y axis strides over query tiles.
    """
    nbytes = packed_size(d, bits)
    sbytes = packed_size(d, 1)
    pad = d + 1  # odd row stride: the 32 threads of a warp read 32 different banks

    def kernel(q_rot, q_proj, m, packed, norms, sign_bits, gammas, n, cents, kappa, alpha, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        lid = ty * 32 + tx
        nbase = cuda.blockIdx.x * 32
        yhat = cuda.shared.array((32, pad), float32)
        zt = cuda.shared.array((32, pad), float32)
        for e in range(lid, 32 * d, 32 * qt):
            c = e // d
            j = e - c * d
            row = nbase + c
            if row < n:
                yhat[c, j] = cents[unpack_index(packed[row], 0, j, bits, nbytes)]
                if prod:
                    zt[c, j] = float32(1.0) if unpack_index(sign_bits[row], 0, j, 1, sbytes) else float32(-1.0)
        cuda.syncthreads()
        code = nbase + tx
        if code < n:
            nv = norms[code]
            gk = float32(0.0)
            if prod:
                gk = kappa * gammas[code]
            for qi in range(cuda.blockIdx.y * qt + ty, m, cuda.gridDim.y * qt):
                base = float32(0.0)
                for j in range(d):
                    base += q_rot[qi, j] * yhat[tx, j]
                if prod:
                    corr = float32(0.0)
                    for j in range(d):
                        corr += q_proj[qi, j] * zt[tx, j]
                    base = base + corr * gk
                est = base * nv
                if unbiased:
                    est = fdiv(est, alpha)
                out[qi, code] = est

    return cuda.jit(kernel), kernel
