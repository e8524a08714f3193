"""Attention over the compressed KV cache, flash-decoding style (mirrors
tqref.reference.attention.attend; float output, compared with a tolerance).

Work item = (batch b, kv head h, block of query positions, split of the tokens). The block's
rows are every query head of h's GQA group at ``rows_q`` consecutive query positions, so a
key or value code is decoded **once per group** and used by all of its rows:

1. keys, 16 tokens per tile: the packed codes become a (d, 16) tile of centroids
   (_tile.unpack_tile); each row's 16 scores are Σ_j q_j · tile[j, :] (one lane-vector
   multiply-add per coordinate, j in index order), prod keys add κ γ ⟨S q, z⟩ from the sign
   tile the same way; logit = (s · ‖k‖) · scale; keys outside a row's visible range
   (``start``, causal, ``lag``) are −inf;
2. per chunk of ``CHUNK`` tokens and row: chunk max, p = exp(logit − max), and the running
   (max m, sum l, accumulator) of the split is rescaled by exp(m_old − m_new) when the max
   grows (online softmax);
3. values, 16 tokens per tile: acc[j, :] += tile_v[j, :] · (p · ‖v‖) (lane vectors; the 16
   lanes are summed when the split ends).

Each item writes (m, l, Σ p ‖v‖ c_v) for its rows; :func:`merge_splits` combines the splits
exactly (out = Σ_s e^{m_s − M} acc_s / Σ_s e^{m_s − M} l_s, lse = M + log Σ_s e^{m_s − M} l_s),
the combination of reference.attention.merge_partials. Tiles beyond every row's causal range
are skipped, so causal prefill does about half the work of the full score matrix. Neither
keys nor values are ever dequantized.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import _simd as S
from . import _tile as T
from ._jit import TILE, jit, kernel

_F32 = np.float32
L = TILE
#: tokens whose logits are held at once per row (scores buffer rows × CHUNK)
CHUNK = 256


@jit
def _dot(out, o0, q, tile, nr, d):
    """out[o0 + r, :] = Σ_j q[r, j] · tile[j, :] for r < nr (four rows at a time in registers)."""
    r = 0
    while r + 4 <= nr:
        S.dot_rows4(out, o0 + r, q, r, tile, d)
        r += 4
    while r < nr:
        S.dot_rows1(out, o0 + r, q, r, tile, d)
        r += 1


@jit
def _value_tile(vidx, t0, cnt, bits, d, table, vtile, rowbuf, word, vn, vnl, sc, base, nr):
    """Decode the value tile of tokens t0 .. t0+cnt and turn the rows' p into p · ‖v‖ (lanes
    past cnt weigh 0)."""
    T.unpack_tile(vidx, t0, cnt, bits, d, table, vtile, rowbuf, word)
    for u in range(L):
        vnl[u] = vn[t0 + u] if u < cnt else np.float32(0.0)
    for r in range(nr):
        S.row_mul_lanes(sc, base + r, vnl)


@jit
def _scores(out, o0, q, packed, t0, cnt, bits, d, table, tile, rowbuf, word, nr):
    """out[o0 + r, :] = Σ_j q[r, j] · c[j, :] for the key tile of tokens t0 .. t0+cnt (c its
    centroids, decoded from ``packed`` with ``table``), r < nr. Decode's 4 or 8 rows of a
    whole tile with 16-group runs (d a multiple of 128, bits ≤ 4) take the fused
    score_segment (centroids never stored); the rest decode the tile, then _dot."""
    groups = (d + 7) // 8
    if cnt == L and bits <= 4 and groups % 16 == 0 and (nr == 4 or nr == 8):
        for r in range(nr):
            for u in range(L):
                out[o0 + r, u] = 0.0
        for seg in range(groups // 16):
            S.score_segment(out, o0, q, 128 * seg, packed, t0, bits * 16 * seg, table, bits, nr)
        return
    T.unpack_tile(packed, t0, cnt, bits, d, table, tile, rowbuf, word)
    _dot(out, o0, q, tile, nr, d)


@jit
def _values_in_registers(acc16, nr, d, words, vgroups, nfull, table, bits, sc, rmax):
    """acc16[r·d + j, :] += Σ_k c_v[k, j] · sc[k·rmax + r, :] over the chunk's first nfull
    (whole) tiles k, whose group words are in ``words`` (row k·vgroups + g): group by
    group, the sums of four rows stay in registers across all the tiles."""
    for g in range(vgroups):
        r = 0
        while r + 4 <= nr:
            S.value_rows(acc16, r * d + 8 * g, d, words, g, vgroups, nfull, table, sc, r, rmax, bits, 4)
            r += 4
        while r < nr:
            S.value_rows(acc16, r * d + 8 * g, d, words, g, vgroups, nfull, table, sc, r, rmax, bits, 1)
            r += 1


@jit
def _lane_sums(acc16, a0, out, rowbuf):
    """out[j] = Σ_u acc16[a0 + j, u] (u = 0 .. L−1 in order, from +0.0) for j < d, and the
    rows a0 .. a0+d of acc16 zeroed for the next work item while they are in L1 (no separate
    clearing pass: prefill's items are short, and ``d`` rows of L lanes per query row are
    as much memory traffic as its work). Blocks of L coordinates are transposed into rowbuf
    (L, d) and summed as vectors over j, in the same order per coordinate."""
    d = out.shape[0]
    full = d - d % L
    for c0 in range(0, full, L):
        S.transpose_out(acc16, a0 + c0, rowbuf, 0, c0)
    for j in range(full):
        out[j] = 0.0
    for u in range(L):
        for j in range(full):
            out[j] += rowbuf[u, j]
    for j in range(full, d):
        tot = np.float32(0.0)
        for u in range(L):
            tot += acc16[a0 + j, u]
        out[j] = tot
    acc16[a0 : a0 + d] = 0.0


@kernel
def attend_splits(q, qp, t_len, key_idx, key_norms, key_signs, key_gammas, val_idx, val_norms,
                  key_table, key_bits, val_table, val_bits, kappa, prod_mode, scale,
                  causal, start, lag, rows_q, splits, split_len, m_out, l_out, acc_out, nchunks):
    """q, qp: float32 (B, H, G, Lq, d) (qp = S q for prod keys, else unused); codes as
    ReferenceBackend.attend, C-contiguous, positions ≥ t_len on axis 2 never read. Writes,
    per (b, h, split, i, g): m_out, l_out float32 (B, H, splits, Lq, G) and acc_out float32
    (B, H, splits, Lq, G, d)."""
    nb, nh, grp, lq, d = q.shape
    nblocks = (lq + rows_q - 1) // rows_q
    items = nb * nh * nblocks * splits
    rmax = rows_q * grp
    pad = (d + 7) // 8 * 8
    vgroups = (d + 7) // 8
    fast_v = val_bits <= 4 and vgroups % 16 == 0  # whole tiles in runs of 16 groups (_values_in_registers)
    pm = np.empty(2, _F32)
    pm[0] = -1.0
    pm[1] = 1.0
    for c in prange(nchunks):
        ktile = np.empty((pad, L), _F32)
        ztile = np.empty((pad, L), _F32)
        vtile = np.empty((pad, L), _F32)
        vtile2 = np.empty((pad, L), _F32)
        rowbuf = np.empty((L, d), _F32)
        word = np.empty(L, np.uint64)
        qloc = np.empty((rmax, d), _F32)
        qploc = np.empty((rmax, d), _F32)
        z16 = np.empty((rmax, L), _F32)
        knl = np.empty(L, _F32)
        kgl = np.empty(L, _F32)
        vnl = np.empty(L, _F32)
        sc = np.empty((CHUNK // L * rmax, L), _F32)  # row k·rmax + r: tile k of the chunk, row r
        acc16 = np.zeros((rmax * d, L), _F32)  # row r·d + j: lanes of coordinate j of row r (zero between items)
        m = np.empty(rmax, _F32)
        lsum = np.empty(rmax, _F32)
        hi = np.empty(rmax, np.int64)
        words = np.empty((CHUNK // L * vgroups, L), np.uint32)  # group words of the chunk's value tiles
        for item in range(c, items, nchunks):  # strided: causal items of unequal work mix
            s = item % splits
            rest = item // splits
            blk = rest % nblocks
            rest //= nblocks
            h = rest % nh
            b = rest // nh
            i0 = blk * rows_q
            nr = (min(lq, i0 + rows_q) - i0) * grp
            t_lo = start + s * split_len
            t_hi = min(t_len, t_lo + split_len)
            block_hi = t_lo
            for r in range(nr):
                i = i0 + r // grp
                g = r % grp
                top = t_len
                if causal:
                    top = min(t_len, t_len - lq + i + 1 - lag)
                hi[r] = min(t_hi, top)
                block_hi = max(block_hi, hi[r])
                m[r] = -np.inf
                lsum[r] = 0.0
                for j in range(d):
                    qloc[r, j] = q[b, h, g, i, j]
                    if prod_mode:
                        qploc[r, j] = qp[b, h, g, i, j]
            kidx = key_idx[b, h]
            ksgn = key_signs[b, h]
            vidx = val_idx[b, h]
            kn = key_norms[b, h]
            kg = key_gammas[b, h]
            vn = val_norms[b, h]
            for c0 in range(t_lo, block_hi, CHUNK):
                c1 = min(block_hi, c0 + CHUNK)
                # 1. logits of the chunk, one key tile shared by every row
                for t0 in range(c0, c1, L):
                    cnt = min(L, c1 - t0)
                    base = (t0 - c0) // L * rmax
                    _scores(sc, base, qloc, kidx, t0, cnt, key_bits, d, key_table, ktile, rowbuf, word, nr)
                    for u in range(L):
                        knl[u] = kn[t0 + u] if u < cnt else np.float32(0.0)
                    if prod_mode:
                        _scores(z16, 0, qploc, ksgn, t0, cnt, 1, d, pm, ztile, rowbuf, word, nr)
                        for u in range(L):
                            kgl[u] = kappa * kg[t0 + u] if u < cnt else np.float32(0.0)
                    for r in range(nr):
                        row = base + r
                        if prod_mode:
                            S.acc_mul_lanes(sc, row, z16, r, kgl)  # s + ⟨S q, z⟩ · (κ γ)
                        S.row_mul_lanes(sc, row, knl)  # · ‖k‖
                        S.row_mul_scalar(sc, row, scale)
                        if hi[r] < t0 + L:  # keys past the row's range (and lanes past c1)
                            for u in range(max(0, hi[r] - t0), L):
                                sc[row, u] = -np.inf
                # 2. online softmax: chunk max, exponentials, rescale of the running sums
                ntiles = (c1 - c0 + L - 1) // L
                for r in range(nr):
                    cmax = S.rows_max(sc, r, rmax, ntiles)
                    if cmax > m[r]:
                        if m[r] > -np.inf:
                            f = np.exp(m[r] - cmax)
                            lsum[r] *= f
                            for j in range(r * d, (r + 1) * d):
                                S.row_mul_scalar(acc16, j, f)
                        m[r] = cmax
                    mr = m[r]
                    tot = np.float32(0.0)
                    if mr > -np.inf:  # e^(logit − m) on lanes; masked keys (−inf) give 0
                        tot = S.rows_exp_sum(sc, r, rmax, ntiles, mr)
                    else:
                        for k in range(ntiles):
                            sc[k * rmax + r] = 0.0
                    lsum[r] += tot
                # 3. values: acc += c_v · (p · ‖v‖), each value code decoded once for every row
                t_rest = c0
                if fast_v:
                    nfull = (c1 - c0) // L
                    for k in range(nfull):
                        t0 = c0 + k * L
                        for u in range(L):
                            vnl[u] = vn[t0 + u]
                        for r in range(nr):
                            S.row_mul_lanes(sc, k * rmax + r, vnl)
                        for seg in range(vgroups // 16):
                            S.segment_words(words, k * vgroups + 16 * seg, vidx, t0, val_bits * 16 * seg, val_bits)
                    _values_in_registers(acc16, nr, d, words, vgroups, nfull, val_table, val_bits, sc, rmax)
                    t_rest = c0 + nfull * L
                for t0 in range(t_rest, c1, 2 * L):  # two value tiles per pass over the accumulators
                    pair = t0 + L < c1
                    base = (t0 - c0) // L * rmax
                    _value_tile(vidx, t0, min(L, c1 - t0), val_bits, d, val_table, vtile, rowbuf, word, vn, vnl,
                                sc, base, nr)
                    if pair:
                        _value_tile(vidx, t0 + L, min(L, c1 - t0 - L), val_bits, d, val_table, vtile2, rowbuf,
                                    word, vn, vnl, sc, base + rmax, nr)
                    r = 0
                    while r + 4 <= nr:
                        if pair:
                            S.acc_rows4_pair(acc16, r * d, d, vtile, vtile2, d, sc, base + r, base + rmax + r)
                        else:
                            S.acc_rows4(acc16, r * d, d, vtile, d, sc, base + r)
                        r += 4
                    while r < nr:
                        if pair:
                            S.acc_rows1_pair(acc16, r * d, d, vtile, vtile2, d, sc, base + r, base + rmax + r)
                        else:
                            S.acc_rows1(acc16, r * d, d, vtile, d, sc, base + r)
                        r += 1
            for r in range(nr):
                i = i0 + r // grp
                g = r % grp
                m_out[b, h, s, i, g] = m[r]
                l_out[b, h, s, i, g] = lsum[r]
                _lane_sums(acc16, r * d, acc_out[b, h, s, i, g], rowbuf)


def merge_splits(m, lsum, acc, value_scale):
    """Exact combination of the splits (axis 2): m, lsum (B, H, S, Lq, G), acc (..., d) ->
    out float32 (B, H, Lq, G, d) (value_scale applied), lse float32 (B, H, Lq, G). A row no
    split sees gets out 0 and lse −inf. One split (prefill, long decode batches) is the same
    formula with e^(m − m) = 1: out = acc / l, lse = m + log l, without the weighted sums.
    ``out`` is the (B, H, Lq, G, d) view of a C-contiguous (B, H, G, Lq, d) array: the
    caller's swap back to heads-major order costs no copy."""
    nb, nh, splits, lq, g = m.shape
    out = np.empty((nb, nh, g, lq, acc.shape[-1]), _F32).swapaxes(2, 3)
    if splits == 1:
        safe, den, num = m[:, :, 0], lsum[:, :, 0], acc[:, :, 0]
        seen = safe > -np.inf
    else:
        peak = m.max(axis=2)
        seen = peak > -np.inf
        safe = np.where(seen, peak, _F32(0.0))
        f = np.exp(m - safe[:, :, None])  # exp(−inf) = 0 for splits a row does not see
        den = np.sum(f * lsum, axis=2)
        num = np.sum(f[..., None] * acc, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(num, den[..., None], out=out)
        out[~seen] = 0.0
        if value_scale != 1.0:
            out *= _F32(value_scale)
        lse = np.where(seen, safe + np.log(den), _F32(-np.inf))
    return out, lse.astype(_F32, copy=False)
