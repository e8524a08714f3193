"""Numba kernels mirroring tqref.reference.mse, prod, qjl and packing, one tile at a time.

Every kernel takes plain arrays (see _plan.KernelPlan) and loops ``prange`` over
``nchunks`` contiguous runs of tiles, each run with its own scratch (allocated once per
run, never per vector). ``nchunks == 1`` with the serial variant is single-threaded.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import _simd as S
from . import _tile as T
from ._jit import TILE, jit, jit_inline, kernel

L = TILE
LANES = T.LANES
_F32 = np.float32


@jit
def _pad8(d):
    """Rows of an index tile: d rounded up to whole groups of 8 (the padding stays zero)."""
    return (d + 7) // 8 * 8


@jit
def _rotate(buf, buf2, d, m, pre, apply_pre, offsets, factors, mat, haar, acc):
    """rotation.rotate (the forward tables, mat = Π) or rotation.rotate_inverse (the inverse
    tables, mat = Πᵀ) on the tile: Haar, mat · buf into buf2; Hadamard, the "pre" signs
    (unless already applied: apply_pre False) and the steps, in place. Returns the tile
    holding the result."""
    if haar:
        T.matvec(mat, buf, d, buf2, acc)
        return buf2
    T.hadamard_steps(buf, m, offsets, factors, pre, apply_pre)
    return buf


@jit
def _quantize_scratch(d):
    """One run's scratch for _quantize_tile: (buf, buf2, idx, acc, nrm, tmp, scale, word, xs,
    xsbits); xs (L, d) stages converted rows, xsbits is its uint32 view."""
    xs = np.zeros((L, d), _F32)
    return (np.empty((d, L), _F32), np.empty((d, L), _F32), np.zeros((_pad8(d), L), np.uint8),
            np.empty((4, LANES, L), _F32), np.empty(L, _F32), np.empty(L, _F32), np.empty(L, np.float64),
            np.empty(L, np.uint64), xs, xs.view(np.uint32))


#: 2^112 = 2^(127 − 15): moves a float16 exponent field, shifted into float32 position, to
#: float32's bias (exact for normal and subnormal float16, whose float32 values are normal)
_HALF_TO_FLOAT = np.float32(2.0**112)
#: bits of 2^16 as float32: a float16 magnitude field of exponent 31 (±inf, NaN), placed as
#: above, becomes at least this after the multiply; every finite float16 stays below 65504
_HALF_SPECIAL = np.uint32(0x47800000)


@jit
def _half_to_float(xs, xsbits, cnt):
    """Rows l < cnt of xsbits hold float16 bit patterns (low 16 bits); make xs their float32
    values, exactly as numpy's cast. Branch-free per element: sign and 15 magnitude bits
    shifted into float32 position read as the value times 2^−112; one exact multiply
    restores it; exponent field 31 (±inf, NaN: now ≥ 2^16) gets float32's all-ones field."""
    d = xs.shape[1]
    for l in range(cnt):
        for j in range(d):
            h = xsbits[l, j]
            xsbits[l, j] = ((h & np.uint32(0x7FFF)) << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
        for j in range(d):
            xs[l, j] = xs[l, j] * _HALF_TO_FLOAT
        for j in range(d):
            b = xsbits[l, j]
            xsbits[l, j] = b | np.uint32(0x7F800000) if (b & np.uint32(0x7FFFFFFF)) >= _HALF_SPECIAL else b


@jit
def _load_source(src, r0, cnt, xs, xsbits):
    """xs[l, :] = float32(row r0 + l of the source) for l < cnt, rounded to nearest as numpy's
    astype (beyond float32: ±inf, reported from the norms).

    ``src = (flat, first, rs, cs, half)``: element (r, j) is flat[first + r·rs + j·cs] (flat a
    C-contiguous 1-D view over the rows' memory, strides in elements, any sign); ``half``:
    flat holds float16 bit patterns (uint16). A row with cs = 1 is a contiguous slice, so
    the conversion loop vectorises; other layouts are read element by element.
    """
    flat, first, rs, cs, half = src
    d = xs.shape[1]
    for l in range(cnt):
        o = first + (r0 + l) * rs
        if cs == 1:
            row = flat[o : o + d]
            if half:
                for j in range(d):
                    xsbits[l, j] = np.uint32(row[j])
            else:
                for j in range(d):
                    xs[l, j] = np.float32(row[j])
        else:
            for j in range(d):
                if half:
                    xsbits[l, j] = np.uint32(flat[o + j * cs])
                else:
                    xs[l, j] = np.float32(flat[o + j * cs])
    if half:
        _half_to_float(xs, xsbits, cnt)


@jit
def _quantize_tile(x, xbits, src, r0, cnt, sign0, m, fo, ff, pi, haar, thr, bits, scratch, packed, norms):
    """mse.quantize_rotated + pack for rows r0 .. r0+cnt -> packed, norms; returns the tile
    holding y = Π u. The rows are x's (C-contiguous float32, xbits its uint32 view) when x
    has any, else the source ``src`` (see _load_source) converted into scratch first."""
    buf, buf2, idx, acc, nrm, tmp, scale, word, xs, xsbits = scratch
    d = buf.shape[0]
    if x.shape[0] > 0:
        T.load_split_norm(x, xbits, r0, cnt, sign0, buf, acc[0], nrm, tmp, scale)
    else:
        _load_source(src, r0, cnt, xs, xsbits)
        T.load_split_norm(xs, xsbits, 0, cnt, sign0, buf, acc[0], nrm, tmp, scale)
    y = _rotate(buf, buf2, d, m, sign0, False, fo, ff, pi, haar, acc)  # signs applied by load_split_norm
    T.index_tile(y, d, thr, idx)
    T.pack_tile(idx, d, bits, packed, r0, cnt, word)
    for l in range(cnt):
        norms[r0 + l] = nrm[l]
    return y


@kernel
def mse_quantize(x, xbits, src, sign0, m, fo, ff, pi, haar, thr, bits, packed, norms, nchunks):
    """mse.quantize -> packed (n, nb), norms (n,): rows x float32 (n, d) C-contiguous (xbits:
    its uint32 view), or, when x is (0, d), the n rows of ``src`` (_load_source)."""
    n, d = norms.shape[0], sign0.shape[0]
    ntiles = (n + L - 1) // L
    for c in prange(nchunks):
        scratch = _quantize_scratch(d)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            _quantize_tile(x, xbits, src, r0, min(L, n - r0), sign0, m, fo, ff, pi, haar, thr, bits, scratch,
                           packed, norms)


@jit
def _dequantize_scratch(d):
    """One run's scratch for unpack_tile, _rotate and store_scaled:
    (buf, buf2, rowbuf, word, acc, lanes); buf has _pad8(d) rows (unpack_tile's groups)."""
    return (np.empty((_pad8(d), L), _F32), np.empty((d, L), _F32), np.empty((L, d), _F32),
            np.empty(L, np.uint64), np.empty((4, LANES, L), _F32), np.empty(L, _F32))


@kernel
def mse_dequantize(packed, norms, centroids, bits, m, ip, io, if_, pi_t, haar, out, nchunks):
    """mse.dequantize: packed (n, nb), norms (n,) -> out float32 (n, d)."""
    n, d = out.shape
    ntiles = (n + L - 1) // L
    for c in prange(nchunks):
        buf, buf2, rowbuf, word, acc, lanes = _dequantize_scratch(d)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            cnt = min(L, n - r0)
            T.unpack_tile(packed, r0, cnt, bits, d, centroids, buf, rowbuf, word)
            xh = _rotate(buf, buf2, d, m, ip, True, io, if_, pi_t, haar, acc)
            T.store_scaled(xh, norms, out, r0, cnt, d, lanes, rowbuf)


@jit
def _prod_scratch(d):
    """prod's extra scratch: (residual tile, sign tile)."""
    return np.empty((d, L), _F32), np.zeros((_pad8(d), L), np.uint8)


@jit
def _prod_tile(x, xbits, src, r0, cnt, sign0, m, fo, ff, pi, haar, thr, centroids, bits, proj,
               scratch, extra, packed, norms, signs, gammas):
    """prod.quantize of rows r0 .. r0+cnt (x, xbits, src as _quantize_tile)."""
    _buf, _buf2, idx, acc, _nrm, tmp, _scale, word, _xs, _xsbits = scratch  # prod also reads these
    res, sgn = extra
    d = res.shape[0]
    y = _quantize_tile(x, xbits, src, r0, cnt, sign0, m, fo, ff, pi, haar, thr, bits, scratch, packed, norms)
    # prod step 2: residual in the rotated domain; step 3: γ = ordered_norm(r)
    for j in range(d):
        for q in range(L):
            res[j, q] = y[j, q] - centroids[idx[j, q]]
    T.sum_squares(res, d, acc[0], tmp)
    for l in range(cnt):
        gammas[r0 + l] = np.sqrt(tmp[l])
    # QJL sign bits: bit i = [ordered_dot(S_i, r) >= 0] (−0.0 >= 0 holds)
    T.matvec(proj, res, d, y, acc)  # y is spent: reuse its storage for S r
    for j in range(d):
        for q in range(L):
            sgn[j, q] = y[j, q] >= 0
    T.pack_tile(sgn, d, 1, signs, r0, cnt, word)


@kernel
def prod_quantize(x, xbits, src, sign0, m, fo, ff, pi, haar, thr, centroids, bits, proj,
                  packed, norms, signs, gammas, nchunks):
    """prod.quantize -> packed (n, nb), norms (n,), signs (n, ceil(d/8)), γ (n,); rows as
    mse_quantize."""
    n, d = norms.shape[0], sign0.shape[0]
    ntiles = (n + L - 1) // L
    for c in prange(nchunks):
        scratch = _quantize_scratch(d)
        extra = _prod_scratch(d)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            _prod_tile(x, xbits, src, r0, min(L, n - r0), sign0, m, fo, ff, pi, haar, thr, centroids, bits, proj,
                       scratch, extra, packed, norms, signs, gammas)


@kernel
def prod_dequantize(packed, norms, signs, gammas, centroids, bits, proj, kappa,
                    m, ip, io, if_, pi_t, haar, zs, out, nchunks):
    """prod.dequantize: x̃ = norm · Πᵀ(ŷ + (zᵀ S) · (κ γ)).

    ``zs``: either (0, d) — zᵀ S is then summed here, over i in increasing order — or the
    rows' zᵀ S (n, d) computed by the caller (a BLAS matmul, as the reference does, for
    large d). The reference's order for this sum is a matmul's (unspecified): it is the
    one float step compared with a tolerance.
    """
    n, d = out.shape
    ntiles = (n + L - 1) // L
    given = zs.shape[0] == n and n > 0
    pm = np.empty(2, _F32)
    pm[0] = -1.0
    pm[1] = 1.0
    for c in prange(nchunks):
        buf, buf2, rowbuf, word, acc, lanes = _dequantize_scratch(d)
        z = np.empty((_pad8(d), L), _F32)
        corr = np.empty((d, L), _F32)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            cnt = min(L, n - r0)
            T.unpack_tile(packed, r0, cnt, bits, d, centroids, buf, rowbuf, word)
            if given:
                T.load_rows(zs, r0, cnt, corr)
            else:
                T.unpack_tile(signs, r0, cnt, 1, d, pm, z, rowbuf, word)
                corr[:, :] = np.float32(0.0)
                for j0 in range(0, d, 8):  # 8 rows of corr stay in L1 while i runs
                    j1 = min(d, j0 + 8)
                    for i in range(d):
                        srow = proj[i]
                        for j in range(j0, j1):
                            S.acc_axpy(corr, j, srow[j], z, i)  # corr[j] += S[i, j] · z[i]
            for q in range(L):
                lanes[q] = kappa * (gammas[r0 + q] if q < cnt else np.float32(0.0))
            for j in range(d):
                S.row_mul_lanes(corr, j, lanes)
                S.acc_add_row(buf, j, corr, j)
            xh = _rotate(buf, buf2, d, m, ip, True, io, if_, pi_t, haar, acc)
            T.store_scaled(xh, norms, out, r0, cnt, d, lanes, rowbuf)


@kernel
def rotate_rows(x, pre, m, offsets, factors, mat, haar, out, nchunks):
    """rotation.rotate of raw rows (no normalisation) with the forward tables, or
    rotation.rotate_inverse with the inverse ones (see _rotate): x (n, d) -> out (n, d)."""
    n, d = x.shape
    ntiles = (n + L - 1) // L
    for c in prange(nchunks):
        buf = np.empty((d, L), _F32)
        buf2 = np.empty((d, L), _F32)
        acc = np.empty((4, LANES, L), _F32)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            cnt = min(L, n - r0)
            T.load_rows(x, r0, cnt, buf)
            T.store_rows(_rotate(buf, buf2, d, m, pre, True, offsets, factors, mat, haar, acc), r0, cnt, out)


@jit_inline
def _regroup(src, sbits, dst, dbits, groups):
    """The LSB-first bit stream of src's sbits-bit fields, cut again into dbits-bit fields of
    dst (packing: sbits = b, dbits = 8; unpacking: sbits = 8, dbits = b). Group g is 8·b
    stream bits — dbits fields of src, sbits fields of dst — assembled in one uint64; the last
    group stops at the end of each row. Source fields are masked to their low sbits bits."""
    smask = np.uint64((1 << sbits) - 1)
    dmask = np.uint64((1 << dbits) - 1)
    for g in range(groups):
        w = np.uint64(0)
        for k in range(min(dbits, src.shape[0] - dbits * g)):
            w |= (np.uint64(src[dbits * g + k]) & smask) << np.uint64(sbits * k)
        for k in range(min(sbits, dst.shape[0] - sbits * g)):
            dst[sbits * g + k] = np.uint8((w >> np.uint64(dbits * k)) & dmask)


@kernel
def pack_rows(indices, bits, out, nchunks):
    """packing.pack_bits: indices uint8 (n, count) -> out uint8 (n, ceil(count·bits/8))."""
    n, count = indices.shape
    for c in prange(nchunks):
        for r in range(c * n // nchunks, (c + 1) * n // nchunks):
            _regroup(indices[r], bits, out[r], 8, (count + 7) // 8)


@kernel
def unpack_rows(packed, bits, out, nchunks):
    """packing.unpack_bits: packed uint8 (n, nb) -> out uint8 (n, count)."""
    n, count = out.shape
    for c in prange(nchunks):
        for r in range(c * n // nchunks, (c + 1) * n // nchunks):
            _regroup(packed[r], 8, out[r], bits, (count + 7) // 8)


@kernel
def index_rows(y, thr, out, nchunks):
    """codebook.nearest_index of float32 rows y (n, d) through the tile path -> out uint8."""
    n, d = y.shape
    ntiles = (n + L - 1) // L
    for c in prange(nchunks):
        buf = np.empty((d, L), _F32)
        idx = np.zeros((_pad8(d), L), np.uint8)
        for t in range(c * ntiles // nchunks, (c + 1) * ntiles // nchunks):
            r0 = t * L
            cnt = min(L, n - r0)
            for j in range(d):
                for q in range(L):
                    buf[j, q] = y[r0 + q, j] if q < cnt else np.float32(0.0)
            T.index_tile(buf, d, thr, idx)
            for q in range(cnt):
                for j in range(d):
                    out[r0 + q, j] = idx[j, q]
