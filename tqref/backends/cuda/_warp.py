"""Warp-per-vector device functions: one 32-lane warp owns one vector held in shared memory.

This is the general layout (every dimension d ≥ 2, both rotations, mse and prod). Each
function mirrors one reference step and uses only the primitives of ``_ops`` for float
arithmetic and lane exchange; ``buf[w, :]`` is the warp's vector in shared memory.
:func:`geometry` (host side) and :func:`rows` are the constants and thread placement that
every warp-layout kernel (mse, prod, estimators) starts from.

The written reduction order (reference/reduction.py) maps onto a warp directly: lane ``l``
accumulates the products of j = l, l + 32, … in increasing j (a missing term past the end
counts as +0.0), then the lanes fold with ``shfl_down`` offsets 16, 8, 4, 2, 1.
"""

from __future__ import annotations

from numba import float32

from ...reference.rotation import hadamard_block
from ._ops import (
    fadd,
    fdiv,
    fmul,
    frexp_exponent,
    fsqrt,
    fsub,
    jit_device,
    ldexp_f32,
    shfl_down,
    shfl_idx,
    shfl_xor,
    warp_sync,
)


def geometry(d: int, rotation: str, warps: int):
    """Compile-time constants of a warp-layout kernel factory: (chunks, m, haar, tpb).

    chunks = ⌈d/32⌉ terms per lane of a written-order dot product; m = the Hadamard block
    (reference rotation.hadamard_block); haar: the rotation is the Haar matrix; tpb = 32·warps
    threads per block.
    """
    return (d + 31) // 32, hadamard_block(d), rotation == "haar", 32 * warps


@jit_device
def rows(tid, row0, n):
    """(w, lane, row, src) of thread ``tid`` of a block whose warp w owns row ``row0 + w``.

    ``src`` is the row the warp reads: its own, or row n − 1 for a warp past the end, which
    still computes (every thread must reach each shuffle and barrier) but stores nothing.
    """
    w = tid // 32
    lane = tid % 32
    row = row0 + w
    src = row if row < n else n - 1
    return w, lane, row, src


@jit_device
def butterfly(acc):
    """Fold 32 lane sums with offsets 16, 8, 4, 2, 1; the total is valid on lane 0."""
    acc = fadd(acc, shfl_down(acc, 16))
    acc = fadd(acc, shfl_down(acc, 8))
    acc = fadd(acc, shfl_down(acc, 4))
    acc = fadd(acc, shfl_down(acc, 2))
    acc = fadd(acc, shfl_down(acc, 1))
    return acc


@jit_device
def lane_dot(a, ai, b, bi, lane, d, chunks):
    """This lane's share of ordered_dot(a[ai, :], b[bi, :]): products rounded, summed in j order."""
    acc = float32(0.0)
    for c in range(chunks):
        j = lane + 32 * c
        p = float32(0.0)
        if j < d:
            p = fmul(a[ai, j], b[bi, j])
        if c == 0:
            acc = p
        else:
            acc = fadd(acc, p)
    return acc


@jit_device
def ordered_dot_bcast(a, ai, b, bi, lane, d, chunks):
    """ordered_dot of two rows, returned to every lane."""
    return shfl_idx(butterfly(lane_dot(a, ai, b, bi, lane, d, chunks)), 0)


@jit_device
def split_exponent(mx, group):
    """E of mse.split_norm: this thread's max |x_j| folded over ``group`` consecutive threads
    (xor offsets 1, 2, …, group/2; a max is exact in any order), then its frexp exponent
    (0 for an all-zero vector). Every thread of the group gets E."""
    h = 1
    while h < group:
        o = shfl_xor(mx, h)
        if o > mx:
            mx = o
        h *= 2
    e = 0
    if mx > 0:
        e = frexp_exponent(mx)
    return e


@jit_device
def split_scale(v, start, stop, step, e):
    """mse.split_norm's exact rescaling of this thread's values v[start:stop:step]:
    xs = ldexp(x, −E), rounded once (the values of a warp row or a thread's registers)."""
    for j in range(start, stop, step):
        v[j] = ldexp_f32(v[j], -e)


@jit_device
def split_finish(v, start, stop, step, s, e):
    """The end of mse.split_norm, given s = ordered_dot(xs, xs) in the layout's written
    order: ns = sqrt(s); v[j] <- xs_j / ns (0 where ns = 0); returns norm = ldexp(ns, E)."""
    ns = fsqrt(s)
    for j in range(start, stop, step):
        if ns > 0:
            v[j] = fdiv(v[j], ns)
        else:
            v[j] = float32(0.0)
    return ldexp_f32(ns, e)


@jit_device
def load_split_norm(x, row, buf, w, lane, d, chunks):
    """mse step 1 (reference mse.split_norm): buf[w] <- x[row] / ‖x[row]‖; returns the norm.

    m = max|x_j| (exact in any order); E = frexp exponent of m; xs = ldexp(x, −E) rounded
    once; s = ordered_dot(xs, xs); ns = sqrt(s); u = xs / ns (0 where ns = 0);
    norm = ldexp(ns, E) — :func:`split_exponent`, :func:`split_scale` and
    :func:`split_finish` on the warp's row (lane l holds j = l, l + 32, …), shared with the
    register layout of mse.py.
    """
    mx = float32(0.0)
    for j in range(lane, d, 32):
        v = x[row, j]
        buf[w, j] = v
        a = abs(v)
        if a > mx:
            mx = a
    e = split_exponent(mx, 32)
    vec = buf[w]
    split_scale(vec, lane, d, 32, e)
    s = ordered_dot_bcast(buf, w, buf, w, lane, d, chunks)
    norm = split_finish(vec, lane, d, 32, s, e)
    warp_sync()
    return norm


@jit_device
def fwht_block(buf, w, lane, lo, m, inv):
    """Normalised FWHT of buf[w, lo : lo + m] (reference rotation.fwht), m a power of two.

    Stage h = 1, 2, …, m/2: pair (i, i + h) with i mod 2h < h becomes (a + b, a − b); then
    every element is multiplied by inv = float32(1) / sqrt(float32(m)).
    """
    half = m >> 1
    h = 1
    while h < m:
        for p in range(lane, half, 32):
            i = lo + (p // h) * 2 * h + (p % h)
            a = buf[w, i]
            b = buf[w, i + h]
            buf[w, i] = fadd(a, b)
            buf[w, i + h] = fsub(a, b)
        warp_sync()
        h *= 2
    for j in range(lane, m, 32):
        buf[w, lo + j] = fmul(buf[w, lo + j], inv)
    warp_sync()


@jit_device
def hadamard_forward(buf, w, lane, signs, steps, inv, d, m):
    """Π u for the randomized Hadamard rotation (reference rotation.hadamard_apply): step s
    multiplies by signs[s], then transforms the block [steps[s], steps[s] + m). ``steps``:
    the block offsets of rotation.hadamard_steps(d), from the plan's device tables."""
    for s in range(steps.shape[0]):
        for j in range(lane, d, 32):
            buf[w, j] = fmul(buf[w, j], signs[s, j])
        warp_sync()
        fwht_block(buf, w, lane, steps[s], m, inv)


@jit_device
def hadamard_inverse(buf, w, lane, signs, steps, inv, d, m):
    """Πᵀ y: the steps of hadamard_forward in reverse, each block transform then its signs
    (rotation.hadamard_apply_inverse)."""
    count = steps.shape[0]
    for ss in range(count):
        s = count - 1 - ss
        fwht_block(buf, w, lane, steps[s], m, inv)
        for j in range(lane, d, 32):
            buf[w, j] = fmul(buf[w, j], signs[s, j])
        warp_sync()


@jit_device
def matvec(mat, transposed, buf, w, out, lane, d, chunks, part):
    """out[w, i] = ordered_dot(row i of M, buf[w]) for i < d (M = mat, or matᵀ if transposed).

    The Haar rotation and the QJL projection (reference reduction.ordered_matvec). Each
    lane computes whole outputs i = lane, lane + 32, …: it keeps the 32 written-order lane
    sums of one dot product in ``part`` (a 32-float register array of the caller), then
    folds them with offsets 16 … 1 itself — the same operations in the same order as 32
    lanes and a shuffle tree, with no shuffle.
    """
    for i in range(lane, d, 32):
        for c in range(chunks):
            for ll in range(32):
                j = 32 * c + ll
                p = float32(0.0)
                if j < d:
                    if transposed:
                        p = fmul(mat[j, i], buf[w, j])
                    else:
                        p = fmul(mat[i, j], buf[w, j])
                if c == 0:
                    part[ll] = p
                else:
                    part[ll] = fadd(part[ll], p)
        for off in (16, 8, 4, 2, 1):
            for ll in range(off):
                part[ll] = fadd(part[ll], part[ll + off])
        out[w, i] = part[0]
    warp_sync()


@jit_device
def copy_row(src, dst, w, lane, d):
    for j in range(lane, d, 32):
        dst[w, j] = src[w, j]
    warp_sync()


@jit_device
def rotate(buf, w, out, lane, haar, inverse, pi, signs, steps, inv, d, m, chunks, part):
    """out[w] <- Π buf[w] (Πᵀ buf[w] if ``inverse``): reference rotation.rotate(_inverse).

    Haar: :func:`matvec` with ``pi`` (transposed for the inverse), ``buf`` unchanged.
    Hadamard: the steps of rotation.hadamard_steps (``signs`` and the block offsets
    ``steps`` of the plan's tables) in place in ``buf``, then copied to ``out``.
    ``haar`` and ``inverse`` are compile-time constants of the calling kernel.
    """
    if haar:
        matvec(pi, inverse, buf, w, out, lane, d, chunks, part)
    else:
        if inverse:
            hadamard_inverse(buf, w, lane, signs, steps, inv, d, m)
        else:
            hadamard_forward(buf, w, lane, signs, steps, inv, d, m)
        copy_row(buf, out, w, lane, d)
