"""Decode attention fused from packed KV codes (mirrors tqref/reference/attention.py).

Split-K ("flash-decoding") over the cached tokens, entirely in the rotated domain; no
dequantized key or value ever exists in device memory:

1. :func:`partial_kernel`, grid (B·H, splits): one block takes one kv head and ``chunk``
   consecutive tokens, with the G·Lq query rows of that head's group staged in shared
   memory (and S q_rot for prod keys).
   a. scores, one thread per token: the key's packed row is streamed byte by byte, each
      b-bit index picks a centroid from a shared copy of the codebook, and
      s = ‖k‖ (⟨q_rot, ŷ⟩ + κ γ ⟨S q_rot, z⟩); logit = scale · s (−inf if masked);
   b. per query row: chunk max m, p_t = exp(logit − m), l = Σ p_t (warp reductions);
   c. values, lanes over coordinates and warps over tokens: Σ_t p_t ‖v_t‖ c_v[idx_t];
   writes (m, l, acc[d]) per (head, split, row).
2. :func:`combine_kernel` merges the splits: out = value_scale · Σ_s e^{m_s − M} acc_s /
   Σ_s e^{m_s − M} l_s, and lse = M + log Σ_s e^{m_s − M} l_s.

Visible range (``start``, ``lag``, causal) as in reference/attention.py: splits begin at
``start`` (earlier keys are never read); masked keys get logit −inf.

Float outputs (the reference's order is a matmul): compared by tolerance. Memory traffic
per token and kv head is the packed key and value rows plus two norms (and the sign bits
and γ for prod keys): 3-bit keys and values at d = 128 read 104 bytes against 512 for fp16.
"""

from __future__ import annotations

import functools
import math

from numba import cuda, float32

from ...reference.packing import packed_size
from ._ops import shfl_xor, unpack_index

NEG_INF = float32(-math.inf)


@functools.lru_cache(maxsize=None)
def partial_kernel(d: int, kbits: int, vbits: int, rows: int, prod: bool, chunk: int, tpb: int):
    """Kernel (q, qp, kidx, knorm, ksign, kgam, vidx, vnorm, H, T, lq, causal, start, lag, scale,
    kcent, vcent, kappa, m_out, l_out, acc_out); split s covers tokens start + s·chunk onwards."""
    nbk = packed_size(d, kbits)
    nbv = packed_size(d, vbits)
    sb = packed_size(d, 1)
    warps = tpb // 32
    ej = (d + 31) // 32
    kmask = (1 << kbits) - 1
    nk = 1 << kbits
    nv = 1 << vbits

    def kernel(q, qp, kidx, knorm, ksign, kgam, vidx, vnorm, H, T, lq, causal, start, lag, scale,
               kcent, vcent, kappa, m_out, l_out, acc_out):
        tid = cuda.threadIdx.x
        w = tid // 32
        lane = tid % 32
        bh = cuda.blockIdx.x
        b = bh // H
        h = bh - b * H
        split = cuda.blockIdx.y
        t0 = start + split * chunk
        qs = cuda.shared.array((rows, d), float32)
        qps = cuda.shared.array((rows, d), float32)
        sc = cuda.shared.array((rows, chunk), float32)
        kc = cuda.shared.array(nk, float32)
        vc = cuda.shared.array(nv, float32)
        red = cuda.shared.array((warps, rows, d), float32)
        for e in range(tid, rows * d, tpb):
            r = e // d
            j = e - r * d
            qs[r, j] = q[bh, r, j]
            if prod:
                qps[r, j] = qp[bh, r, j]
        for e in range(tid, nk, tpb):
            kc[e] = kcent[e]
        for e in range(tid, nv, tpb):
            vc[e] = vcent[e]
        cuda.syncthreads()
        # (a) scores, one thread per token, key row streamed byte by byte
        acc = cuda.local.array(rows, float32)
        cor = cuda.local.array(rows, float32)
        for tl in range(tid, chunk, tpb):
            t = t0 + tl
            if t < T:
                for r in range(rows):
                    acc[r] = float32(0.0)
                    cor[r] = float32(0.0)
                window = 0
                have = 0
                nxt = 0
                for j in range(d):
                    while have < kbits:
                        window |= int(kidx[b, h, t, nxt]) << have
                        have += 8
                        nxt += 1
                    c = kc[window & kmask]
                    window >>= kbits
                    have -= kbits
                    for r in range(rows):
                        acc[r] += qs[r, j] * c
                if prod:
                    for j in range(d):
                        bit = (int(ksign[b, h, t, j >> 3]) >> (j & 7)) & 1
                        for r in range(rows):
                            if bit:
                                cor[r] += qps[r, j]
                            else:
                                cor[r] -= qps[r, j]
                kn = knorm[b, h, t]
                gk = float32(0.0)
                if prod:
                    gk = kappa * kgam[b, h, t]
                for r in range(rows):
                    s = acc[r]
                    if prod:
                        s = s + cor[r] * gk
                    logit = (s * kn) * scale
                    if causal and t > T - lq + (r % lq) - lag:
                        logit = NEG_INF
                    sc[r, tl] = logit
            else:
                for r in range(rows):
                    sc[r, tl] = NEG_INF
        cuda.syncthreads()
        # (b) chunk max, exponentials, sum; one warp per query row
        for r0 in range(0, rows, warps):  # uniform trip count: every warp shuffles alike
            r = r0 + w
            ok = r < rows
            rs = r if ok else 0
            mx = NEG_INF
            for tl in range(lane, chunk, 32):
                if sc[rs, tl] > mx:
                    mx = sc[rs, tl]
            for k in (16, 8, 4, 2, 1):
                o = shfl_xor(mx, k)
                if o > mx:
                    mx = o
            tot = float32(0.0)
            for tl in range(lane, chunk, 32):
                p = float32(0.0)
                if sc[rs, tl] > NEG_INF:
                    p = math.exp(sc[rs, tl] - mx)
                if ok:
                    sc[rs, tl] = p
                tot += p
            for k in (16, 8, 4, 2, 1):
                tot += shfl_xor(tot, k)
            if ok and lane == 0:
                m_out[bh, split, r] = mx
                l_out[bh, split, r] = tot
        cuda.syncthreads()
        # (c) values: warps over tokens, lanes over coordinates
        vacc = cuda.local.array((rows, ej), float32)
        for r in range(rows):
            for e in range(ej):
                vacc[r, e] = float32(0.0)
        for tl in range(w, chunk, warps):
            t = t0 + tl
            if t < T:
                vn = vnorm[b, h, t]
                for e in range(ej):
                    j = lane + 32 * e
                    if j < d:
                        c = vc[unpack_index(vidx[b, h, t], 0, j, vbits, nbv)] * vn
                        for r in range(rows):
                            vacc[r, e] += sc[r, tl] * c
        for r in range(rows):
            for e in range(ej):
                j = lane + 32 * e
                if j < d:
                    red[w, r, j] = vacc[r, e]
        cuda.syncthreads()
        for e in range(tid, rows * d, tpb):
            r = e // d
            j = e - r * d
            s = float32(0.0)
            for ww in range(warps):
                s += red[ww, r, j]
            acc_out[bh, split, r, j] = s

    return cuda.jit(kernel), kernel


@functools.lru_cache(maxsize=None)
def combine_kernel(d: int, rows: int):
    """Kernel (m_in, l_in, acc_in, splits, value_scale, out, lse_out); grid (B·H, rows), block d
    threads (rounded up to 32). A row no split sees gets out 0 and lse −inf."""

    def kernel(m_in, l_in, acc_in, splits, value_scale, out, lse_out):
        bh = cuda.blockIdx.x
        r = cuda.blockIdx.y
        j = cuda.threadIdx.x
        if j < d:
            big = NEG_INF
            for s in range(splits):
                if m_in[bh, s, r] > big:
                    big = m_in[bh, s, r]
            num = float32(0.0)
            den = float32(0.0)
            for s in range(splits):
                ms = m_in[bh, s, r]
                if ms > NEG_INF:
                    f = math.exp(ms - big)
                    num += f * acc_in[bh, s, r, j]
                    den += f * l_in[bh, s, r]
            if den > float32(0.0):
                out[bh, r, j] = (num / den) * value_scale
            else:
                out[bh, r, j] = float32(0.0)
            if j == 0:
                lse_out[bh, r] = big + math.log(den) if den > float32(0.0) else NEG_INF

    return cuda.jit(kernel), kernel
