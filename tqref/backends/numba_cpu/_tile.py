"""Tile primitives: the reference steps applied to ``TILE`` vectors at once.

A tile is a C-contiguous float32 array ``buf`` of shape (rows, TILE): row j holds
coordinate j of TILE vectors (lane l = vector l), so every step is a loop over rows whose
body is one lane-vector operation (_simd.py) — no shuffles, whatever the butterfly stride.
Each function performs exactly the float operations of the reference function named in its
docstring, in the same order per vector; only the loop nest differs.
"""

from __future__ import annotations

import math

import numpy as np

from . import _simd as S
from ._jit import TILE, jit

L = TILE
LANES = 32


@jit
def _abs_max_bits(bits_row):
    """max |x_j| of a float32 row given as its uint32 bit patterns (finite input: the order
    of |x| equals the order of the patterns with the sign bit cleared)."""
    mx = np.uint32(0)
    for j in range(bits_row.shape[0]):
        a = bits_row[j] & np.uint32(0x7FFFFFFF)
        mx = a if a > mx else mx
    return mx


@jit
def _frexp_exponent(abs_bits):
    """frexp exponent E of the positive finite float32 with bit pattern ``abs_bits``."""
    e8 = np.int64(abs_bits >> np.uint32(23))
    if e8 > 0:
        return e8 - 126
    mant = np.int64(abs_bits & np.uint32(0x7FFFFF))  # subnormal: mant · 2^-149
    nbits = 0
    while mant > 0:
        nbits += 1
        mant >>= 1
    return nbits - 149


@jit
def load_rows(x, r0, cnt, buf):
    """buf[j, l] = x[r0 + l, j] for rows l < cnt, zeros for the other lanes (a transpose)."""
    d = x.shape[1]
    full = d - d % L
    if cnt == L:
        for c0 in range(0, full, L):
            S.transpose_in(x, r0, c0, buf, c0)
        for j in range(full, d):
            for l in range(L):
                buf[j, l] = x[r0 + l, j]
    else:
        for j in range(d):
            for l in range(L):
                buf[j, l] = x[r0 + l, j] if l < cnt else np.float32(0.0)


@jit
def store_rows(tile, r0, cnt, out):
    """out[r0 + l, j] = tile[j, l] for rows l < cnt (the inverse of :func:`load_rows`)."""
    d = out.shape[1]
    for l in range(cnt):
        for j in range(d):
            out[r0 + l, j] = tile[j, l]


@jit
def load_split_norm(x, xbits, r0, cnt, sign0, buf, acc, norms, nsd, scale):
    """mse.split_norm for rows r0 .. r0+cnt of x, fused with the rotation's "pre" signs.

    m = max|x_j|, E = frexp(m)[1]; buf[j, l] = float32(float64(x[l, j]) · 2^−E) · sign0[j]
    (an exact float64 product rounded once: a correctly rounded ldexp, as np.ldexp);
    ns = sqrt(ordered_dot(xs, xs)); buf /= ns; norms[l] = float32(float64(ns) · 2^E);
    nsd[l] = ns (1 for zero vectors, whose rows are all zero). Lanes ≥ cnt are zero vectors.
    Sign flips are exact and commute with the squares and with the division by ns.
    """
    d = x.shape[1]
    expo = np.zeros(L, np.int64)
    for l in range(L):
        e = 0
        if l < cnt:
            mx = _abs_max_bits(xbits[r0 + l])
            if mx > 0:
                e = _frexp_exponent(mx)
        expo[l] = e
        scale[l] = math.ldexp(1.0, -e)
    load_rows(x, r0, cnt, buf)
    for j in range(d):
        S.row_scale_exact(buf, j, scale, sign0[j])
    sum_squares(buf, d, acc, nsd)
    for l in range(L):
        ns = np.sqrt(nsd[l])
        norms[l] = np.float32(np.float64(ns) * math.ldexp(1.0, expo[l]))
        nsd[l] = ns if ns > 0 else np.float32(1.0)
    for j in range(d):
        S.row_div_lanes(buf, j, nsd)


@jit
def butterfly_into(acc, dst, i):
    """reduction._butterfly of acc (32, L), offsets 16, 8, 4, 2, 1; result -> dst[i, :]."""
    w = LANES // 2
    while w > 1:
        for k in range(w):
            S.acc_add_row(acc, k, acc, k + w)
        w //= 2
    S.row_sum_into(dst, i, acc, 0, 1)


@jit
def sum_squares(buf, d, acc, out):
    """reduction.ordered_dot(v, v) of every lane's vector in rows [0, d) of buf -> out (L,).

    Lane k accumulates rows k, k + 32, ... in increasing order from +0.0 (the reference
    starts from the first term: identical, since +0.0 + p = p for the squares p ≥ +0).
    """
    acc[:, :] = np.float32(0.0)
    for j in range(d):
        S.acc_square(acc, j % LANES, buf, j)
    butterfly_into(acc, out, 0)


@jit
def matvec(mat, src, d, dst, acc):
    """reduction.ordered_matvec: dst[i, l] = ordered_dot(mat[i, :], src[:, l]).

    ``acc`` is (4, 32, L): four outputs are summed together so that each tile row of src
    is loaded once for four rows of mat (the tile outgrows L1 at large d); each output's
    lanes still add their products in increasing j, then fold 16, 8, 4, 2, 1.
    Lanes start from +0.0 rather than from the first product; the two differ only in the
    sign of an exactly-zero sum, which no decision reads (y ≥ 0 and ±0 → same cell).
    """
    rows = mat.shape[0]
    i = 0
    while i + 4 <= rows:
        r0 = mat[i]
        r1 = mat[i + 1]
        r2 = mat[i + 2]
        r3 = mat[i + 3]
        acc[:, :, :] = np.float32(0.0)
        a0 = acc[0]
        a1 = acc[1]
        a2 = acc[2]
        a3 = acc[3]
        for j in range(d):
            k = j % LANES
            S.acc_axpy(a0, k, r0[j], src, j)
            S.acc_axpy(a1, k, r1[j], src, j)
            S.acc_axpy(a2, k, r2[j], src, j)
            S.acc_axpy(a3, k, r3[j], src, j)
        butterfly_into(a0, dst, i)
        butterfly_into(a1, dst, i + 1)
        butterfly_into(a2, dst, i + 2)
        butterfly_into(a3, dst, i + 3)
        i += 4
    a0 = acc[0]
    while i < rows:
        row = mat[i]
        a0[:, :] = np.float32(0.0)
        for j in range(d):
            S.acc_axpy(a0, j % LANES, row[j], src, j)
        butterfly_into(a0, dst, i)
        i += 1


@jit
def fwht_rows(buf, off, m, factor):
    """rotation.fwht on rows [off, off+m) (stages h = 1, 2, 4, ... in order), then row j is
    multiplied by factor[j − off] (the normalisation fused with the next sign flip: both
    multiplications by ±1 are exact, so (y·inv)·s = y·(inv·s) bit for bit).

    Stages are grouped into passes of one or two (radix 2 or 4, first) and then three
    (radix 8) to keep eight rows in registers; the last pass applies the factors as it
    stores. Each output is still the same sequence of pairwise adds and subtracts.
    """
    if m == 1:
        S.row_mul_scalar(buf, off, factor[0])
        return
    stages = 0
    while (1 << stages) < m:
        stages += 1
    first = stages % 3  # 0, 1 or 2 stages before the radix-8 passes
    h = 1
    if first == 1:
        last = stages == 1
        for p in range(off, off + m, 2):
            if last:
                S.bf2s(buf, p, 1, factor, off)
            else:
                S.bf2(buf, p, 1, factor, off)
        h = 2
    elif first == 2:
        last = stages == 2
        for p in range(off, off + m, 4):
            if last:
                S.bf4s(buf, p, 1, factor, off)
            else:
                S.bf4(buf, p, 1, factor, off)
        h = 4
    while h < m:
        last = h * 8 == m
        for blk in range(off, off + m, 8 * h):
            for p in range(blk, blk + h):
                if last:
                    S.bf8s(buf, p, h, factor, off)
                else:
                    S.bf8(buf, p, h, factor, off)
        h *= 8


@jit
def hadamard_steps(buf, m, offsets, factors, pre, apply_pre):
    """rotation.hadamard_forward / hadamard_inverse on the tile: optionally the rows' "pre"
    signs, then for each step (in execution order) the FWHT of block [offsets[s],
    offsets[s] + m) followed by the step's row factors (see _plan.hadamard_factors)."""
    if apply_pre:
        for j in range(pre.shape[0]):
            if pre[j] != np.float32(1.0):
                S.row_mul_scalar(buf, j, pre[j])
    for s in range(offsets.shape[0]):
        fwht_rows(buf, offsets[s], m, factors[s])


@jit
def cell_index(v, thr):
    """codebook.nearest_index for one float32 value: #{t : v > thr[t]} by binary search."""
    idx = 0
    step = (thr.shape[0] + 1) // 2
    while step >= 1:
        if v > thr[idx + step - 1]:
            idx += step
        step //= 2
    return idx


@jit
def index_tile(buf, d, thr, idx):
    """Cell index of every element of rows [0, d) of buf -> idx (d, L) uint8."""
    nthr = thr.shape[0]
    if nthr == 1:
        for j in range(d):
            S.row_index_1(idx, j, buf, thr)
    elif nthr == 3:
        for j in range(d):
            S.row_index_3(idx, j, buf, thr)
    elif nthr == 7:
        for j in range(d):
            S.row_index_7(idx, j, buf, thr)
    elif nthr == 15:
        for j in range(d):
            S.row_index_15(idx, j, buf, thr)
    else:
        for j in range(d):
            for l in range(L):
                idx[j, l] = cell_index(buf[j, l], thr)


@jit
def pack_tile(idx, d, bits, out, r0, cnt, word):
    """packing.pack_bits of idx (lane l -> out[r0 + l]), lanes < cnt. idx is a uint8 tile
    with rows padded to a multiple of 8; the padding rows hold zeros.

    Groups of 8 indices fill ``bits`` bytes exactly (8·b bits), assembled in a uint64 word
    and written with one 8-byte store (the bytes past the group are rewritten by the next
    group's store; the last group is written byte by byte so no store leaves the row).
    """
    groups = (d + 7) // 8
    nbytes = out.shape[1]
    for g in range(groups):
        S.pack_words(word, idx, 8 * g, bits)
        col = bits * g
        if col + 8 <= nbytes:
            for l in range(cnt):
                S.store_u64(out, r0 + l, col, word[l])
        else:
            for l in range(cnt):
                w = word[l]
                for q in range(nbytes - col):
                    out[r0 + l, col + q] = np.uint8((w >> np.uint64(8 * q)) & np.uint64(255))


@jit
def load_word(packed, r, col, nbytes):
    """The little-endian word of the 8-index group starting at byte col of row r: one
    8-byte load, or byte by byte for the row's last group (bytes past the row read as 0)."""
    if col + 8 <= nbytes:
        return S.load_u64(packed, r, col)
    w = np.uint64(0)
    for q in range(nbytes - col):
        w |= np.uint64(packed[r, col + q]) << np.uint64(8 * q)
    return w


@jit
def unpack_tile(packed, r0, cnt, bits, d, table, buf, rowbuf, word):
    """buf[j, l] = table[index j of packed[r0 + l]] (mse.centroids_of); lanes ≥ cnt get
    table[0]. buf needs rows padded to a multiple of 8 (the padding rows are scratch).

    bits ≤ 4: each group of 8 indices is one little-endian word per lane, decoded for all
    lanes at once by a select tree (_simd.unpack_words_*). Wider codes go through rowbuf
    (L, d), one lane at a time, then a transpose.
    """
    groups = (d + 7) // 8
    nbytes = packed.shape[1]
    if bits <= 4:
        g0 = 0
        if cnt == L:  # whole tile: runs of 16 groups through one transpose
            while g0 + 16 <= groups and bits * (g0 + 16) <= nbytes:
                if bits == 1:
                    S.unpack_segment_1(buf, 8 * g0, packed, r0, bits * g0, table)
                elif bits == 2:
                    S.unpack_segment_2(buf, 8 * g0, packed, r0, bits * g0, table)
                elif bits == 3:
                    S.unpack_segment_3(buf, 8 * g0, packed, r0, bits * g0, table)
                else:
                    S.unpack_segment_4(buf, 8 * g0, packed, r0, bits * g0, table)
                g0 += 16
        for g in range(g0, groups):
            col = bits * g
            if cnt == L and col + 4 <= nbytes:  # whole tile: 32-bit words straight to a register
                if bits == 1:
                    S.unpack_rows_1(buf, 8 * g, packed, r0, col, table)
                elif bits == 2:
                    S.unpack_rows_2(buf, 8 * g, packed, r0, col, table)
                elif bits == 3:
                    S.unpack_rows_3(buf, 8 * g, packed, r0, col, table)
                else:
                    S.unpack_rows_4(buf, 8 * g, packed, r0, col, table)
                continue
            for l in range(L):
                word[l] = load_word(packed, r0 + l, col, nbytes) if l < cnt else np.uint64(0)
            if bits == 1:
                S.unpack_words_1(buf, 8 * g, word, table)
            elif bits == 2:
                S.unpack_words_2(buf, 8 * g, word, table)
            elif bits == 3:
                S.unpack_words_3(buf, 8 * g, word, table)
            else:
                S.unpack_words_4(buf, 8 * g, word, table)
        return
    mask = np.uint64((1 << bits) - 1)
    for l in range(L):
        dst = rowbuf[l]
        if l < cnt:
            r = r0 + l
            for g in range(groups):
                w = load_word(packed, r, bits * g, nbytes)
                for k in range(min(8, d - 8 * g)):
                    dst[8 * g + k] = table[(w >> np.uint64(bits * k)) & mask]
        else:
            for j in range(d):
                dst[j] = table[0]
    load_rows(rowbuf, 0, L, buf)


@jit
def store_scaled(xh, norms, out, r0, cnt, d, lanes, rowbuf):
    """out[r0 + l, j] = xh[j, l] · norms[r0 + l] (one float32 multiply per element)."""
    for l in range(L):
        lanes[l] = norms[r0 + l] if l < cnt else np.float32(0.0)
    for j in range(d):
        S.row_mul_lanes(xh, j, lanes)
    full = d - d % L
    if cnt == L:
        for c0 in range(0, full, L):
            S.transpose_out(xh, c0, out, r0, c0)
        for j in range(full, d):
            for l in range(L):
                out[r0 + l, j] = xh[j, l]
    else:
        for c0 in range(0, full, L):
            S.transpose_out(xh, c0, rowbuf, 0, c0)
        for l in range(cnt):
            for j in range(full):
                out[r0 + l, j] = rowbuf[l, j]
            for j in range(full, d):
                out[r0 + l, j] = xh[j, l]
