"""Lane-vector primitives for the (rows, TILE) float32 tiles, emitted as LLVM vector IR.

Each primitive reads and writes whole tile rows (TILE float32 lanes, one per vector) as one
``<TILE x float>`` value. They exist because LLVM's loop vectoriser cannot prove that the
butterfly's rows p and p + h do not overlap (h is a run-time value), and guards every
inner loop with alias checks that cost more than the arithmetic.

Exactness: the IR uses plain ``fadd``/``fsub``/``fmul``/``fdiv``/``fpext``/``fptrunc``
without fast-math flags, which LLVM evaluates lane by lane with IEEE round-to-nearest —
exactly the scalar float32 operations of the reference, and never contracted into FMA
(no ``contract`` flag). Loads and stores assume no alignment (byte tiles, user arrays).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._jit import TILE

_FLOAT = ir.FloatType()
_DOUBLE = ir.DoubleType()
_VEC = ir.VectorType(_FLOAT, TILE)
_VEC64 = ir.VectorType(_DOUBLE, TILE)


def _row_ptr(context, builder, arrty, arr, row, col=None):
    """Pointer to element (row, col) of a C-contiguous 2-D array (col = 0 by default),
    or to element ``row`` of a 1-D array."""
    ary = context.make_array(arrty)(context, builder, arr)
    if arrty.ndim == 2:
        ncols = cgutils.unpack_tuple(builder, ary.shape, 2)[1]
        off = builder.mul(row, ncols)
        if col is not None:
            off = builder.add(off, col)
    else:
        off = row
    return builder.gep(ary.data, [off], inbounds=True)


def _vload(builder, ptr, vec=_VEC):
    return builder.load(builder.bitcast(ptr, ir.PointerType(vec)), align=1)


def _vstore(builder, value, ptr):
    builder.store(value, builder.bitcast(ptr, ir.PointerType(value.type)), align=1)


def _splat(builder, scalar, vec=_VEC):
    undef = ir.Constant(vec, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count))


def _is_tile(t):
    return isinstance(t, types.Array) and t.dtype == types.float32 and t.layout == "C"


def _butterfly(radix, scaled):
    @intrinsic
    def bf(typingctx, buf, p, h, factor, foff):
        """Stages h, 2h, ... (log2(radix) of them) of rotation.fwht on rows p + k·h; with
        ``scaled``, row p + k·h is then multiplied by factor[p + k·h − foff]."""
        if not (_is_tile(buf) and isinstance(factor, types.Array) and factor.dtype == types.float32):
            return None
        sig = types.void(buf, types.intp, types.intp, factor, types.intp)

        def codegen(context, builder, signature, args):
            arr, p, h, fac, foff = args
            rows = [builder.add(p, builder.mul(h, ir.Constant(h.type, k))) for k in range(radix)]
            ptrs = [_row_ptr(context, builder, signature.args[0], arr, row) for row in rows]
            v = [_vload(builder, q) for q in ptrs]
            step = 1
            while step < radix:  # stage of stride `step` within the radix group
                nxt = list(v)
                for i in range(radix):
                    if i & step == 0:
                        nxt[i] = builder.fadd(v[i], v[i + step])
                        nxt[i + step] = builder.fsub(v[i], v[i + step])
                v = nxt
                step *= 2
            if scaled:
                fary = context.make_array(signature.args[3])(context, builder, fac)
                for k in range(radix):
                    fp = builder.gep(fary.data, [builder.sub(rows[k], foff)], inbounds=True)
                    v[k] = builder.fmul(v[k], _splat(builder, builder.load(fp)))
            for q, val in zip(ptrs, v):
                _vstore(builder, val, q)
            return context.get_dummy_value()

        return sig, codegen

    return bf


bf2 = _butterfly(2, False)
bf4 = _butterfly(4, False)
bf8 = _butterfly(8, False)
bf2s = _butterfly(2, True)  # the last pass of a block, fused with the row factors
bf4s = _butterfly(4, True)
bf8s = _butterfly(8, True)


@intrinsic
def row_mul_scalar(typingctx, buf, p, f):
    """buf[p, :] *= f (float32 scalar)."""
    if not _is_tile(buf):
        return None
    sig = types.void(buf, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        arr, p, f = args
        q = _row_ptr(context, builder, signature.args[0], arr, p)
        _vstore(builder, builder.fmul(_vload(builder, q), _splat(builder, f)), q)
        return context.get_dummy_value()

    return sig, codegen


def _row_lanes(op):
    @intrinsic
    def fn(typingctx, buf, p, lanes):
        if not (_is_tile(buf) and _is_tile(lanes)):
            return None
        sig = types.void(buf, types.intp, lanes)

        def codegen(context, builder, signature, args):
            arr, p, lv = args
            q = _row_ptr(context, builder, signature.args[0], arr, p)
            w = _vload(builder, _row_ptr(context, builder, signature.args[2], lv, ir.Constant(p.type, 0)))
            _vstore(builder, getattr(builder, op)(_vload(builder, q), w), q)
            return context.get_dummy_value()

        return sig, codegen

    return fn


row_div_lanes = _row_lanes("fdiv")  # buf[p, :] /= lanes[:]
row_mul_lanes = _row_lanes("fmul")  # buf[p, :] *= lanes[:]


@intrinsic
def row_scale_exact(typingctx, buf, p, scale64, sign):
    """buf[p, :] = float32(float64(buf[p, :]) · scale64[:]) · sign — ldexp by an exact power
    of two (one rounding), then a sign flip."""
    if not (_is_tile(buf) and isinstance(scale64, types.Array) and scale64.dtype == types.float64):
        return None
    sig = types.void(buf, types.intp, scale64, types.float32)

    def codegen(context, builder, signature, args):
        arr, p, sv, sign = args
        q = _row_ptr(context, builder, signature.args[0], arr, p)
        s = _vload(builder, _row_ptr(context, builder, signature.args[2], sv, ir.Constant(p.type, 0)), _VEC64)
        wide = builder.fpext(_vload(builder, q), _VEC64)
        narrow = builder.fptrunc(builder.fmul(wide, s), _VEC)
        _vstore(builder, builder.fmul(narrow, _splat(builder, sign)), q)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def acc_square(typingctx, acc, k, buf, p):
    """acc[k, :] += buf[p, :] · buf[p, :] (product rounded, then the sum rounded)."""
    if not (_is_tile(acc) and _is_tile(buf)):
        return None
    sig = types.void(acc, types.intp, buf, types.intp)

    def codegen(context, builder, signature, args):
        a, k, b, p = args
        qa = _row_ptr(context, builder, signature.args[0], a, k)
        v = _vload(builder, _row_ptr(context, builder, signature.args[2], b, p))
        _vstore(builder, builder.fadd(_vload(builder, qa), builder.fmul(v, v)), qa)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def acc_axpy(typingctx, acc, k, w, buf, p):
    """acc[k, :] += w · buf[p, :] (w float32 scalar; product rounded, then the sum)."""
    if not (_is_tile(acc) and _is_tile(buf)):
        return None
    sig = types.void(acc, types.intp, types.float32, buf, types.intp)

    def codegen(context, builder, signature, args):
        a, k, w, b, p = args
        qa = _row_ptr(context, builder, signature.args[0], a, k)
        v = _vload(builder, _row_ptr(context, builder, signature.args[3], b, p))
        prod = builder.fmul(_splat(builder, w), v)
        _vstore(builder, builder.fadd(_vload(builder, qa), prod), qa)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def acc_add_row(typingctx, acc, k, k2):
    """acc[k, :] += acc[k2, :]."""
    if not _is_tile(acc):
        return None
    sig = types.void(acc, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a, k, k2 = args
        qa = _row_ptr(context, builder, signature.args[0], a, k)
        qb = _row_ptr(context, builder, signature.args[0], a, k2)
        _vstore(builder, builder.fadd(_vload(builder, qa), _vload(builder, qb)), qa)
        return context.get_dummy_value()

    return sig, codegen


def _transpose_values(builder, rows):
    """Transpose TILE vectors of TILE lanes by recursive block swaps (shufflevector only)."""
    n = len(rows)
    mask_t = ir.VectorType(ir.IntType(32), n)
    b = n // 2
    while b >= 1:
        out = list(rows)
        for i in range(n):
            if i & b:
                continue
            lo = [e if e & b == 0 else n + e - b for e in range(n)]
            hi = [e + b if e & b == 0 else n + e for e in range(n)]
            out[i] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mask_t, lo))
            out[i + b] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(mask_t, hi))
        rows = out
        b //= 2
    return rows


@intrinsic
def transpose_in(typingctx, src, r0, c0, buf, j0):
    """buf[j0 + e, i] = src[r0 + i, c0 + e] for i, e < TILE (a full TILE×TILE block)."""
    if not (isinstance(src, types.Array) and src.ndim == 2 and src.layout == "C"
            and src.dtype == types.float32 and _is_tile(buf)):
        return None
    sig = types.void(src, types.intp, types.intp, buf, types.intp)

    def codegen(context, builder, signature, args):
        s, r0, c0, b, j0 = args
        rows = [_vload(builder, _row_ptr(context, builder, signature.args[0], s,
                                         builder.add(r0, ir.Constant(r0.type, i)), c0))
                for i in range(TILE)]
        cols = _transpose_values(builder, rows)
        for e in range(TILE):
            _vstore(builder, cols[e], _row_ptr(context, builder, signature.args[3], b,
                                               builder.add(j0, ir.Constant(j0.type, e))))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose_out(typingctx, buf, j0, dst, r0, c0):
    """dst[r0 + i, c0 + e] = buf[j0 + e, i] for i, e < TILE (a full TILE×TILE block)."""
    if not (isinstance(dst, types.Array) and dst.ndim == 2 and dst.layout == "C"
            and dst.dtype == types.float32 and _is_tile(buf)):
        return None
    sig = types.void(buf, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        b, j0, d, r0, c0 = args
        rows = [_vload(builder, _row_ptr(context, builder, signature.args[0], b,
                                         builder.add(j0, ir.Constant(j0.type, e))))
                for e in range(TILE)]
        cols = _transpose_values(builder, rows)
        for i in range(TILE):
            _vstore(builder, cols[i], _row_ptr(context, builder, signature.args[2], d,
                                               builder.add(r0, ir.Constant(r0.type, i)), c0))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def row_sum_into(typingctx, dst, i, acc, k0, k1):
    """dst[i, :] = acc[k0, :] + acc[k1, :] (dst may be 1-D: then i must be 0)."""
    if not (_is_tile(dst) and _is_tile(acc)):
        return None
    sig = types.void(dst, types.intp, acc, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        d, i, a, k0, k1 = args
        va = _vload(builder, _row_ptr(context, builder, signature.args[2], a, k0))
        vb = _vload(builder, _row_ptr(context, builder, signature.args[2], a, k1))
        _vstore(builder, builder.fadd(va, vb), _row_ptr(context, builder, signature.args[0], d, i))
        return context.get_dummy_value()

    return sig, codegen


def _row_index(count):
    @intrinsic
    def fn(typingctx, idx, j, buf, thr):
        """idx[j, :] = #{t < count : buf[j, :] > thr[t]} as uint8 (codebook.nearest_index)."""
        if not (isinstance(idx, types.Array) and idx.dtype == types.uint8 and idx.layout == "C"
                and _is_tile(buf) and isinstance(thr, types.Array) and thr.dtype == types.float32):
            return None
        sig = types.void(idx, types.intp, buf, thr)

        def codegen(context, builder, signature, args):
            ix, j, b, th = args
            v = _vload(builder, _row_ptr(context, builder, signature.args[2], b, j))
            tary = context.make_array(signature.args[3])(context, builder, th)
            i8v = ir.VectorType(ir.IntType(8), TILE)
            total = ir.Constant(i8v, [0] * TILE)
            for t in range(count):
                tv = builder.load(builder.gep(tary.data, [ir.Constant(ir.IntType(64), t)], inbounds=True))
                gt = builder.fcmp_ordered(">", v, _splat(builder, tv))
                total = builder.add(total, builder.zext(gt, i8v))
            _vstore(builder, total, _row_ptr(context, builder, signature.args[0], ix, j))
            return context.get_dummy_value()

        return sig, codegen

    return fn


row_index_1 = _row_index(1)
row_index_3 = _row_index(3)
row_index_7 = _row_index(7)
row_index_15 = _row_index(15)


def _is_bytes2d(t):
    return isinstance(t, types.Array) and t.dtype == types.uint8 and t.ndim == 2 and t.layout == "C"


@intrinsic
def store_u64(typingctx, arr, row, col, value):
    """Little-endian 8-byte store of ``value`` at arr[row, col:col + 8] (unaligned; the
    caller guarantees col + 8 <= arr.shape[1])."""
    if not _is_bytes2d(arr):
        return None
    sig = types.void(arr, types.intp, types.intp, types.uint64)

    def codegen(context, builder, signature, args):
        a, row, col, value = args
        q = _row_ptr(context, builder, signature.args[0], a, row, col)
        builder.store(value, builder.bitcast(q, ir.PointerType(ir.IntType(64))), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_u64(typingctx, arr, row, col):
    """Little-endian 8-byte load of arr[row, col:col + 8] (unaligned; col + 8 <= shape[1])."""
    if not _is_bytes2d(arr):
        return None
    sig = types.uint64(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        a, row, col = args
        q = _row_ptr(context, builder, signature.args[0], a, row, col)
        return builder.load(builder.bitcast(q, ir.PointerType(ir.IntType(64))), align=1)

    return sig, codegen


@intrinsic
def pack_words(typingctx, word, idx, j0, bits):
    """word[l] = OR_k idx[j0 + k, l] << (bits·k) for k < 8 (uint64 lanes; idx uint8 tile
    with at least j0 + 8 rows)."""
    if not (isinstance(word, types.Array) and word.dtype == types.uint64 and _is_bytes2d(idx)):
        return None
    sig = types.void(word, idx, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        w, ix, j0, bits = args
        i8v = ir.VectorType(ir.IntType(8), TILE)
        i64v = ir.VectorType(ir.IntType(64), TILE)
        total = ir.Constant(i64v, [0] * TILE)
        for k in range(8):
            row = builder.add(j0, ir.Constant(j0.type, k))
            v = builder.zext(_vload(builder, _row_ptr(context, builder, signature.args[1], ix, row), i8v), i64v)
            sh = builder.mul(bits, ir.Constant(bits.type, k))
            total = builder.or_(total, builder.shl(v, _splat(builder, sh, i64v)))
        wp = _row_ptr(context, builder, signature.args[0], w, ir.Constant(j0.type, 0))
        _vstore(builder, total, wp)
        return context.get_dummy_value()

    return sig, codegen


def _unpack_words(bits):
    @intrinsic
    def fn(typingctx, buf, j0, word, table):
        """buf[j0 + k, l] = table[(word[l] >> bits·k) & (2^bits − 1)] for k < 8: a binary
        tree of selects on the index bits (no gather). buf needs j0 + 8 rows."""
        if not (_is_tile(buf) and isinstance(word, types.Array) and word.dtype == types.uint64
                and _is_tile(table)):
            return None
        sig = types.void(buf, types.intp, word, table)

        def codegen(context, builder, signature, args):
            b, j0, w, tb = args
            i64v = ir.VectorType(ir.IntType(64), TILE)
            zero = ir.Constant(j0.type, 0)
            wv = _vload(builder, _row_ptr(context, builder, signature.args[2], w, zero), i64v)
            tary = context.make_array(signature.args[3])(context, builder, tb)
            consts = [_splat(builder, builder.load(builder.gep(tary.data, [ir.Constant(ir.IntType(64), t)],
                                                                inbounds=True)))
                      for t in range(1 << bits)]
            one = ir.Constant(i64v, [1] * TILE)
            for k in range(8):
                level = consts
                for bit in range(bits):
                    sh = ir.Constant(i64v, [bits * k + bit] * TILE)
                    flag = builder.trunc(builder.and_(builder.lshr(wv, sh), one), ir.VectorType(ir.IntType(1), TILE))
                    level = [builder.select(flag, level[2 * i + 1], level[2 * i]) for i in range(len(level) // 2)]
                row = builder.add(j0, ir.Constant(j0.type, k))
                _vstore(builder, level[0], _row_ptr(context, builder, signature.args[0], b, row))
            return context.get_dummy_value()

        return sig, codegen

    return fn


unpack_words_1 = _unpack_words(1)
unpack_words_2 = _unpack_words(2)
unpack_words_3 = _unpack_words(3)
unpack_words_4 = _unpack_words(4)


@intrinsic
def acc_add_row2(typingctx, dst, i, src, k):
    """dst[i, :] += src[k, :] (two tiles)."""
    if not (_is_tile(dst) and _is_tile(src)):
        return None
    sig = types.void(dst, types.intp, src, types.intp)

    def codegen(context, builder, signature, args):
        d, i, s, k = args
        qd = _row_ptr(context, builder, signature.args[0], d, i)
        vs = _vload(builder, _row_ptr(context, builder, signature.args[2], s, k))
        _vstore(builder, builder.fadd(_vload(builder, qd), vs), qd)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def acc_mul_lanes(typingctx, acc, i, buf, j, lanes):
    """acc[i, :] += buf[j, :] · lanes[:] (product rounded, then the sum)."""
    if not (_is_tile(acc) and _is_tile(buf) and _is_tile(lanes)):
        return None
    sig = types.void(acc, types.intp, buf, types.intp, lanes)

    def codegen(context, builder, signature, args):
        a, i, b, j, lv = args
        qa = _row_ptr(context, builder, signature.args[0], a, i)
        vb = _vload(builder, _row_ptr(context, builder, signature.args[2], b, j))
        w = _vload(builder, _row_ptr(context, builder, signature.args[4], lv, ir.Constant(i.type, 0)))
        _vstore(builder, builder.fadd(_vload(builder, qa), builder.fmul(vb, w)), qa)
        return context.get_dummy_value()

    return sig, codegen
