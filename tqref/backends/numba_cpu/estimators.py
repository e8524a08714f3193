"""Inner-product estimators from packed codes through per-query lookup tables
(mirrors tqref.reference.estimators; never dequantizes the keys).

Layout of a table. The packed stream is cut into groups of 8 coordinates (``bits`` bytes,
read as one little-endian word); a group is cut into F fields of p coordinates (p·bits
bits each). For a rotated query q the table row of field (g, f) holds, for every value e of
the field, Σ_k q[8g + f·p + k] · c[(e >> bits·k) & (K − 1)] — the field's contribution to
⟨q, ŷ⟩. Scanning a key costs one lookup per field. p is chosen so that a table row stays
small (≤ 64 floats per coordinate): 8 coordinates per byte at 1 bit, 4 at 2 bits, 2 at
3 bits, 1 from 4 bits up.

Sign bits (prod) use the same machinery with c = (−1, +1) and bits = 1.

The estimates are float outputs: the order of the sums differs from the reference's BLAS
matmuls, and the tests compare them with a tolerance derived from measured error.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, kernel
from ._tile import load_word

_F32 = np.float32


def field_width(bits: int) -> int:
    """p: coordinates per table field for ``bits``-bit codes (p divides 8, p·bits ≤ 8)."""
    for p in (8, 4, 2, 1):
        if p * bits <= 8 and (1 << (p * bits)) <= 64 * p:
            return p
    return 1


@jit
def fill_table(qi, table, bits, p, out):
    """The table (G·F, 2^(p·b)) of one rotated query qi (d,): see the module docstring."""
    d = qi.shape[0]
    nfields = out.shape[0]
    entries = out.shape[1]
    fields = 8 // p
    mask = (1 << bits) - 1
    for gf in range(nfields):
        j0 = (gf // fields) * 8 + (gf % fields) * p
        for e in range(entries):
            s = np.float32(0.0)
            for k in range(p):
                j = j0 + k
                if j < d:
                    s += qi[j] * table[(e >> (bits * k)) & mask]
            out[gf, e] = s


def table_shape(d: int, bits: int):
    """(fields, entries) of one query's table for ``bits``-bit codes of dimension d."""
    p = field_width(bits)
    return ((d + 7) // 8) * (8 // p), 1 << (p * bits)


@kernel
def build_tables(q, table, bits, p, out, nchunks):
    """Tables of queries q (m, d) -> out (m, G·F, 2^(p·b))."""
    m = q.shape[0]
    for c in prange(nchunks):
        for i in range(c * m // nchunks, (c + 1) * m // nchunks):
            fill_table(q[i], table, bits, p, out[i])


@jit
def scan_key(lut, packed, r, bits, p, nbytes):
    """Σ over fields of lut[field, value] for key r (float32 accumulation in field order)."""
    fields = 8 // p
    fbits = np.uint64(p * bits)
    fmask = np.uint64((1 << (p * bits)) - 1)
    groups = lut.shape[0] // fields
    acc = np.float32(0.0)
    for g in range(groups):
        w = load_word(packed, r, bits * g, nbytes)
        base = g * fields
        for f in range(fields):
            acc += lut[base + f, (w >> (fbits * np.uint64(f))) & fmask]
    return acc


@jit
def scan_keys4(lut, packed, r, bits, p, nbytes, out4):
    """scan_key for keys r .. r+3 at once: four independent float32 sums, so the adds of
    one key do not wait on each other's latency (same per-key order as scan_key)."""
    fields = 8 // p
    fbits = np.uint64(p * bits)
    fmask = np.uint64((1 << (p * bits)) - 1)
    groups = lut.shape[0] // fields
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for g in range(groups):
        col = bits * g
        w0 = load_word(packed, r, col, nbytes)
        w1 = load_word(packed, r + 1, col, nbytes)
        w2 = load_word(packed, r + 2, col, nbytes)
        w3 = load_word(packed, r + 3, col, nbytes)
        base = g * fields
        for f in range(fields):
            sh = fbits * np.uint64(f)
            row = lut[base + f]
            a0 += row[(w0 >> sh) & fmask]
            a1 += row[(w1 >> sh) & fmask]
            a2 += row[(w2 >> sh) & fmask]
            a3 += row[(w3 >> sh) & fmask]
    out4[0] = a0
    out4[1] = a1
    out4[2] = a2
    out4[3] = a3


@kernel
def mse_scan(luts, packed, norms, bits, p, alpha, unbiased, out, nchunks):
    """estimators.mse_inner_product from tables: out (m, n) = ⟨q_rot, ŷ⟩ · norm [/ α]."""
    m = luts.shape[0]
    n, nbytes = packed.shape
    block = 256
    nblocks = (n + block - 1) // block
    for c in prange(nchunks):
        s4 = np.empty(4, _F32)
        for b in range(c * nblocks // nchunks, (c + 1) * nblocks // nchunks):
            stop = min(n, (b + 1) * block)
            for i in range(m):
                lut = luts[i]
                r = b * block
                while r < stop:
                    if r + 4 <= stop:
                        scan_keys4(lut, packed, r, bits, p, nbytes, s4)
                        k = 4
                    else:
                        s4[0] = scan_key(lut, packed, r, bits, p, nbytes)
                        k = 1
                    for u in range(k):
                        est = s4[u] * norms[r + u]
                        if unbiased:
                            est = est / alpha
                        out[i, r + u] = est
                    r += k


@kernel
def prod_scan(luts, sign_luts, packed, norms, signs, gammas, bits, p, kappa, out, nchunks):
    """estimators.prod_inner_product: (⟨q_rot, ŷ⟩ + ⟨S q_rot, z⟩ · (κ γ)) · norm."""
    m = luts.shape[0]
    n, nbytes = packed.shape
    sbytes = signs.shape[1]
    block = 256
    nblocks = (n + block - 1) // block
    for c in prange(nchunks):
        b4 = np.empty(4, _F32)
        c4 = np.empty(4, _F32)
        for b in range(c * nblocks // nchunks, (c + 1) * nblocks // nchunks):
            stop = min(n, (b + 1) * block)
            for i in range(m):
                lut = luts[i]
                slut = sign_luts[i]
                r = b * block
                while r < stop:
                    if r + 4 <= stop:
                        scan_keys4(lut, packed, r, bits, p, nbytes, b4)
                        scan_keys4(slut, signs, r, 1, 8, sbytes, c4)
                        k = 4
                    else:
                        b4[0] = scan_key(lut, packed, r, bits, p, nbytes)
                        c4[0] = scan_key(slut, signs, r, 1, 8, sbytes)
                        k = 1
                    for u in range(k):
                        out[i, r + u] = (b4[u] + c4[u] * (kappa * gammas[r + u])) * norms[r + u]
                    r += k


@kernel
def project_rows(q, mat, out, nchunks):
    """out[i, :] = mat @ q[i, :] (float32, index order): S q_rot for the prod estimator."""
    m, d = q.shape
    rows = mat.shape[0]
    for c in prange(nchunks):
        for i in range(c * m // nchunks, (c + 1) * m // nchunks):
            for a in range(rows):
                s = np.float32(0.0)
                for j in range(d):
                    s += mat[a, j] * q[i, j]
                out[i, a] = s
