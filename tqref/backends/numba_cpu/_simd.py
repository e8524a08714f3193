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

import inspect

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._jit import TILE

_FLOAT = ir.FloatType()
_DOUBLE = ir.DoubleType()
_VEC = ir.VectorType(_FLOAT, TILE)
_VEC64 = ir.VectorType(_DOUBLE, TILE)

#: fast-math flag that lets LLVM fuse a multiply and the add using it into one FMA — for
#: attention's float sums only (never in a kernel whose result feeds a quantization decision)
_CONTRACT = ("contract",)


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


def _is_matrix(t):
    return _is_tile(t) and t.ndim == 2


def _is_bytes(t):
    return isinstance(t, types.Array) and t.dtype == types.uint8 and t.layout == "C"


def _is_bytes2d(t):
    return _is_bytes(t) and t.ndim == 2


def _array_of(dtype):
    return lambda t: isinstance(t, types.Array) and t.dtype == dtype


class _Array:
    """An array argument of a primitive, inside its codegen: element pointers, and unaligned
    ``vec`` loads and stores at a row (a whole TILE-lane row of a tile; row 0 of a 1-D one)."""

    def __init__(self, context, builder, arrty, value):
        self.context, self.builder, self.arrty, self.value = context, builder, arrty, value

    def ptr(self, row, col=None):
        if isinstance(row, int):
            row = self.context.get_constant(types.intp, row)
        return _row_ptr(self.context, self.builder, self.arrty, self.value, row, col)

    def load(self, row, vec=_VEC):
        return _vload(self.builder, self.ptr(row), vec)

    def store(self, row, value):
        _vstore(self.builder, value, self.ptr(row))


def _primitive(*params, returns=types.void):
    """Declare a primitive: an intrinsic whose arguments are ``params`` — each a predicate on
    the argument's Numba type (an array, passed as it is; the primitive does not apply
    otherwise) or a Numba type the argument is converted to — and whose IR the decorated
    ``emit(builder, *args)`` writes, with arrays as :class:`_Array` and scalars as LLVM
    values. ``emit`` returns the result, or nothing for a void primitive. The intrinsic
    takes the emitter's name, docstring and parameter names."""

    def wrap(emit):
        def typer(typingctx, *argtys):
            if len(argtys) != len(params):
                return None
            if not all(isinstance(kind, types.Type) or kind(ty) for kind, ty in zip(params, argtys)):
                return None
            sig = returns(*[kind if isinstance(kind, types.Type) else ty for kind, ty in zip(params, argtys)])

            def codegen(context, builder, signature, args):
                vals = [_Array(context, builder, ty, v) if isinstance(ty, types.Array) else v
                        for ty, v in zip(signature.args, args)]
                out = emit(builder, *vals)
                return context.get_dummy_value() if out is None else out

            return sig, codegen

        names = ["typingctx"] + list(inspect.signature(emit).parameters)[1:]
        typer.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
        typer.__name__ = typer.__qualname__ = emit.__name__
        typer.__doc__ = emit.__doc__
        return intrinsic(typer)

    return wrap


def _by_rows_and_bits(make, params, rows, name):
    """One primitive for a family of variants ``make(n, bits)`` (emitters over ``params``,
    n in ``rows``, bits 1..4): its arguments are the variants' then ``bits`` and ``n``, and
    it emits every variant, each under a branch on (n, bits) — the run-time choice of the
    one variant that runs (loop-invariant in the callers, so predicted). Other (n, bits)
    do nothing (callers pass only these)."""
    emitters = {(n, b): make(n, b) for n in rows for b in range(1, 5)}
    first = emitters[rows[0], 1]
    names = list(inspect.signature(first).parameters)

    def emit(builder, *args):
        *args, bits, n = args
        for (rn, rb), variant in emitters.items():
            hit = builder.and_(builder.icmp_signed("==", n, ir.Constant(n.type, rn)),
                               builder.icmp_signed("==", bits, ir.Constant(bits.type, rb)))
            with builder.if_then(hit):
                variant(builder, *args)

    emit.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in names + ["bits", "n"]])
    emit.__name__ = name
    emit.__doc__ = f"{first.__doc__}\n\n(n, bits) chosen at run time: n in {rows}, bits 1..4."
    return _primitive(*params, types.intp, types.intp)(emit)


def _butterfly(radix, scaled):
    @_primitive(_is_tile, types.intp, types.intp, _array_of(types.float32), types.intp)
    def bf(builder, buf, p, h, factor, foff):
        """Stages h, 2h, ... (log2(radix) of them) of rotation.fwht on rows p + k·h; with
        ``scaled``, row p + k·h is then multiplied by factor[p + k·h − foff]."""
        rows = [builder.add(p, builder.mul(h, ir.Constant(h.type, k))) for k in range(radix)]
        ptrs = [buf.ptr(row) for row in rows]
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
            for k in range(radix):
                v[k] = builder.fmul(v[k], _splat(builder, builder.load(factor.ptr(builder.sub(rows[k], foff)))))
        for q, val in zip(ptrs, v):
            _vstore(builder, val, q)

    return bf


bf2 = _butterfly(2, False)
bf4 = _butterfly(4, False)
bf8 = _butterfly(8, False)
bf2s = _butterfly(2, True)  # the last pass of a block, fused with the row factors
bf4s = _butterfly(4, True)
bf8s = _butterfly(8, True)


@_primitive(_is_tile, types.intp, types.float32)
def row_mul_scalar(builder, buf, p, f):
    """buf[p, :] *= f (float32 scalar)."""
    q = buf.ptr(p)
    _vstore(builder, builder.fmul(_vload(builder, q), _splat(builder, f)), q)


def _row_lanes(op):
    @_primitive(_is_tile, types.intp, _is_tile)
    def fn(builder, buf, p, lanes):
        q = buf.ptr(p)
        w = lanes.load(0)
        _vstore(builder, getattr(builder, op)(_vload(builder, q), w), q)

    return fn


row_div_lanes = _row_lanes("fdiv")  # buf[p, :] /= lanes[:]
row_mul_lanes = _row_lanes("fmul")  # buf[p, :] *= lanes[:]


@_primitive(_is_tile, types.intp, _array_of(types.float64), types.float32)
def row_scale_exact(builder, buf, p, scale64, sign):
    """buf[p, :] = float32(float64(buf[p, :]) · scale64[:]) · sign — ldexp by an exact power
    of two (one rounding), then a sign flip."""
    q = buf.ptr(p)
    s = scale64.load(0, _VEC64)
    wide = builder.fpext(_vload(builder, q), _VEC64)
    narrow = builder.fptrunc(builder.fmul(wide, s), _VEC)
    _vstore(builder, builder.fmul(narrow, _splat(builder, sign)), q)


@_primitive(_is_tile, types.intp, _is_tile, types.intp)
def acc_square(builder, acc, k, buf, p):
    """acc[k, :] += buf[p, :] · buf[p, :] (product rounded, then the sum rounded)."""
    qa = acc.ptr(k)
    v = buf.load(p)
    _vstore(builder, builder.fadd(_vload(builder, qa), builder.fmul(v, v)), qa)


@_primitive(_is_tile, types.intp, types.float32, _is_tile, types.intp)
def acc_axpy(builder, acc, k, w, buf, p):
    """acc[k, :] += w · buf[p, :] (w float32 scalar; product rounded, then the sum)."""
    qa = acc.ptr(k)
    v = buf.load(p)
    prod = builder.fmul(_splat(builder, w), v)
    _vstore(builder, builder.fadd(_vload(builder, qa), prod), qa)


@_primitive(_is_tile, types.intp, _is_tile, types.intp)
def acc_add_row(builder, dst, i, src, k):
    """dst[i, :] += src[k, :] (src may be dst)."""
    qd = dst.ptr(i)
    qs = src.ptr(k)
    _vstore(builder, builder.fadd(_vload(builder, qd), _vload(builder, qs)), qd)


@_primitive(_is_tile, types.intp, _is_tile, types.intp, _is_tile)
def acc_mul_lanes(builder, acc, i, buf, j, lanes):
    """acc[i, :] += buf[j, :] · lanes[:] (product rounded, then the sum)."""
    qa = acc.ptr(i)
    vb = buf.load(j)
    w = lanes.load(0)
    _vstore(builder, builder.fadd(_vload(builder, qa), builder.fmul(vb, w)), qa)


@_primitive(_is_tile, types.intp, _is_tile, types.intp, types.intp)
def row_sum_into(builder, dst, i, acc, k0, k1):
    """dst[i, :] = acc[k0, :] + acc[k1, :] (dst may be 1-D: then i must be 0)."""
    va = acc.load(k0)
    vb = acc.load(k1)
    dst.store(i, builder.fadd(va, vb))


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


@_primitive(_is_matrix, types.intp, types.intp, _is_tile, types.intp)
def transpose_in(builder, src, r0, c0, buf, j0):
    """buf[j0 + e, i] = src[r0 + i, c0 + e] for i, e < TILE (a full TILE×TILE block)."""
    rows = [_vload(builder, src.ptr(builder.add(r0, ir.Constant(r0.type, i)), c0)) for i in range(TILE)]
    cols = _transpose_values(builder, rows)
    for e in range(TILE):
        buf.store(builder.add(j0, ir.Constant(j0.type, e)), cols[e])


@_primitive(_is_tile, types.intp, _is_matrix, types.intp, types.intp)
def transpose_out(builder, buf, j0, dst, r0, c0):
    """dst[r0 + i, c0 + e] = buf[j0 + e, i] for i, e < TILE (a full TILE×TILE block)."""
    rows = [buf.load(builder.add(j0, ir.Constant(j0.type, e))) for e in range(TILE)]
    cols = _transpose_values(builder, rows)
    for i in range(TILE):
        _vstore(builder, cols[i], dst.ptr(builder.add(r0, ir.Constant(r0.type, i)), c0))


def _row_index(count):
    @_primitive(_is_bytes, types.intp, _is_tile, _array_of(types.float32))
    def fn(builder, idx, j, buf, thr):
        """idx[j, :] = #{t < count : buf[j, :] > thr[t]} as uint8 (codebook.nearest_index)."""
        v = buf.load(j)
        i8v = ir.VectorType(ir.IntType(8), TILE)
        total = ir.Constant(i8v, [0] * TILE)
        for t in range(count):
            gt = builder.fcmp_ordered(">", v, _splat(builder, builder.load(thr.ptr(t))))
            total = builder.add(total, builder.zext(gt, i8v))
        idx.store(j, total)

    return fn


row_index_1 = _row_index(1)
row_index_3 = _row_index(3)
row_index_7 = _row_index(7)
row_index_15 = _row_index(15)


@_primitive(_is_bytes2d, types.intp, types.intp, types.uint64)
def store_u64(builder, arr, row, col, value):
    """Little-endian 8-byte store of ``value`` at arr[row, col:col + 8] (unaligned; the
    caller guarantees col + 8 <= arr.shape[1])."""
    builder.store(value, builder.bitcast(arr.ptr(row, col), ir.PointerType(ir.IntType(64))), align=1)


@_primitive(_is_bytes2d, types.intp, types.intp, returns=types.uint64)
def load_u64(builder, arr, row, col):
    """Little-endian 8-byte load of arr[row, col:col + 8] (unaligned; col + 8 <= shape[1])."""
    return builder.load(builder.bitcast(arr.ptr(row, col), ir.PointerType(ir.IntType(64))), align=1)


@_primitive(_array_of(types.uint64), _is_bytes2d, types.intp, types.intp)
def pack_words(builder, word, idx, j0, bits):
    """word[l] = OR_k idx[j0 + k, l] << (bits·k) for k < 8 (uint64 lanes; idx uint8 tile
    with at least j0 + 8 rows)."""
    i8v = ir.VectorType(ir.IntType(8), TILE)
    i64v = ir.VectorType(ir.IntType(64), TILE)
    total = ir.Constant(i64v, [0] * TILE)
    for k in range(8):
        v = builder.zext(idx.load(builder.add(j0, ir.Constant(j0.type, k)), i8v), i64v)
        sh = builder.mul(bits, ir.Constant(bits.type, k))
        total = builder.or_(total, builder.shl(v, _splat(builder, sh, i64v)))
    word.store(0, total)


def _host_has_avx512() -> bool:
    """True when Numba compiles for this machine's CPU and it has AVX-512F (a one-instruction
    16-entry table lookup, vpermps); NUMBA_CPU_NAME/FEATURES (portable caches) opt out."""
    from numba.core import config

    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return False
    try:
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except Exception:
        return False


_PERMUTE = TILE == 16 and _host_has_avx512()


class _Lookup:
    """table[idx] on lanes for indices < 2^bits (≤ 16 entries), the table read once where
    the object is made (LLVM cannot hoist the reads past stores to other float arrays):
    one permute of the table by the lane indices on AVX-512 hosts, otherwise a binary tree
    of selects on the index bits. Either way the results are table entries, so identical."""

    def __init__(self, builder, table, bits):
        self.builder, self.bits = builder, bits
        self.i32v = ir.VectorType(ir.IntType(32), TILE)
        if _PERMUTE:
            tab = ir.Constant(_VEC, [0.0] * TILE)
            for t in range(1 << bits):
                tab = builder.insert_element(tab, builder.load(table.ptr(t)), ir.Constant(ir.IntType(32), t))
            self.tab = tab
            self.perm = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC, self.i32v]),
                                                       "llvm.x86.avx512.permvar.sf.512")
        else:
            self.consts = [_splat(builder, builder.load(table.ptr(t))) for t in range(1 << bits)]

    def field(self, wv, shift):
        """table[(wv >> shift) & (2^bits − 1)] (wv <TILE x i32>, shift a Python int)."""
        b, i32v = self.builder, self.i32v
        if _PERMUTE:
            idx = b.lshr(wv, ir.Constant(i32v, [shift] * TILE)) if shift else wv
            idx = b.and_(idx, ir.Constant(i32v, [(1 << self.bits) - 1] * TILE))
            return b.call(self.perm, [self.tab, idx])
        level = self.consts
        zero = ir.Constant(i32v, [0] * TILE)
        for bit in range(self.bits):
            flag = b.icmp_unsigned("!=", b.and_(wv, ir.Constant(i32v, [1 << (shift + bit)] * TILE)), zero)
            level = [b.select(flag, level[2 * i + 1], level[2 * i]) for i in range(len(level) // 2)]
        return level[0]


def _select_tree(builder, buf, j0, wv, look):
    """buf[j0 + k, l] = table[(wv[l] >> bits·k) & (2^bits − 1)] for k < 8 (wv <TILE x i32>,
    ``look`` a _Lookup of the table)."""
    for k in range(8):
        buf.store(builder.add(j0, ir.Constant(j0.type, k)), look.field(wv, look.bits * k))


def _unpack_words(bits):
    @_primitive(_is_tile, types.intp, _array_of(types.uint64), _is_tile)
    def fn(builder, buf, j0, word, table):
        """buf[j0 + k, l] = table[(word[l] >> bits·k) & (2^bits − 1)] for k < 8: a binary
        tree of selects on the index bits (no gather). buf needs j0 + 8 rows. The 8 fields
        (8·bits ≤ 32 bits) are tested in 32-bit lanes: one AND and one compare per bit."""
        i32v = ir.VectorType(ir.IntType(32), TILE)
        _select_tree(builder, buf, j0, builder.trunc(word.load(0, ir.VectorType(ir.IntType(64), TILE)), i32v),
                     _Lookup(builder, table, bits))

    return fn


def _unpack_rows(bits):
    @_primitive(_is_tile, types.intp, _is_bytes2d, types.intp, types.intp, _is_tile)
    def fn(builder, buf, j0, packed, r0, col, table):
        """unpack_words for the 4-byte words packed[r0 + l, col : col + 4], l < TILE (all TILE
        rows present, col + 4 ≤ row length), loaded straight into one vector register."""
        i32 = ir.IntType(32)
        i32v = ir.VectorType(i32, TILE)
        wv = ir.Constant(i32v, ir.Undefined)
        for lane in range(TILE):
            ptr = packed.ptr(builder.add(r0, ir.Constant(r0.type, lane)), col)
            w = builder.load(builder.bitcast(ptr, ir.PointerType(i32)), align=1)
            wv = builder.insert_element(wv, w, ir.Constant(i32, lane))
        _select_tree(builder, buf, j0, wv, _Lookup(builder, table, bits))

    return fn


def _segment_words(builder, packed, r0, col, bits):
    """The 16 group words (8·bits bits each, in the low bits of 32-bit lanes) of the 16·bits
    bytes packed[r0 + l, col : col + 16·bits], l < TILE (all rows present, col + 16·bits ≤
    row length): one vector load per row, then a transpose into 32-bit words per lane
    (shuffles, instead of one scalar insert per row and group); group g starts at bit
    8·bits·g of the lane's run (two words joined where it straddles)."""
    nwords = 4 * bits
    i32 = ir.IntType(32)
    i32v = ir.VectorType(i32, TILE)
    widen = ir.Constant(ir.VectorType(i32, TILE), list(range(nwords)) + [nwords] * (TILE - nwords))
    rows = []
    for lane in range(TILE):
        ptr = packed.ptr(builder.add(r0, ir.Constant(r0.type, lane)), col)
        w = builder.load(builder.bitcast(ptr, ir.PointerType(ir.VectorType(i32, nwords))), align=1)
        rows.append(builder.shuffle_vector(w, ir.Constant(w.type, [0] * nwords), widen))
    cols = _transpose_values(builder, rows)  # cols[e][l] = word e of lane l's run
    out = []
    for g in range(16):
        k, s = divmod(8 * bits * g, 32)
        wv = cols[k]
        if s:
            wv = builder.lshr(wv, ir.Constant(i32v, [s] * TILE))
        if s + 8 * bits > 32:
            wv = builder.or_(wv, builder.shl(cols[k + 1], ir.Constant(i32v, [32 - s] * TILE)))
        out.append(wv)
    return out


def _unpack_segment(bits):
    @_primitive(_is_tile, types.intp, _is_bytes2d, types.intp, types.intp, _is_tile)
    def fn(builder, buf, j0, packed, r0, col, table):
        """unpack_rows for 16 consecutive groups (128 indices) at once, from _segment_words."""
        look = _Lookup(builder, table, bits)
        for g, wv in enumerate(_segment_words(builder, packed, r0, col, bits)):
            _select_tree(builder, buf, builder.add(j0, ir.Constant(j0.type, 8 * g)), wv, look)

    fn.__name__ = f"unpack_segment_{bits}"
    return fn


def _is_words(t):
    return isinstance(t, types.Array) and t.dtype == types.uint32 and t.layout == "C" and t.ndim == 2


@_primitive(_is_words, types.intp, _is_bytes2d, types.intp, types.intp, types.intp)
def segment_words(builder, words, w0, packed, r0, col, bits):
    """words[w0 + g, :] = _segment_words(packed, r0, col, bits)[g] for g < 16 (bits ≤ 4)."""
    for b in range(1, 5):
        with cgutils.if_unlikely(builder, builder.icmp_signed("==", bits, ir.Constant(bits.type, b))):
            for g, wv in enumerate(_segment_words(builder, packed, r0, col, b)):
                words.store(builder.add(w0, ir.Constant(w0.type, g)), wv)


def _score_segment(n, bits):
    chains = max(1, 8 // n)

    def fn(builder, out, o0, q, j0, packed, r0, col, table):
        """out[o0 + k, :] += Σ_j q[k, j0 + j] · table[index j of the run packed[r0 + l, col :
        col + 16·bits]] for k < n, j < 128 (attention only: interleaved partial sums, fused
        multiply-adds): dot_rows fused with unpack_segment, the centroids never stored."""
        zero = ir.Constant(_VEC, [0.0] * TILE)
        look = _Lookup(builder, table, bits)
        accs = [[zero] * chains for _ in range(n)]
        for g, wv in enumerate(_segment_words(builder, packed, r0, col, bits)):
            for i in range(8):
                j = builder.add(j0, ir.Constant(j0.type, 8 * g + i))
                v = look.field(wv, bits * i)
                c = (8 * g + i) % chains
                for k in range(n):
                    qk = _splat(builder, builder.load(q.ptr(ir.Constant(j0.type, k), j)))
                    accs[k][c] = builder.fadd(accs[k][c], builder.fmul(qk, v, flags=_CONTRACT), flags=_CONTRACT)
        for k in range(n):
            total = accs[k][0]
            for c in range(1, chains):
                total = builder.fadd(total, accs[k][c])
            row = builder.add(o0, ir.Constant(o0.type, k))
            out.store(row, builder.fadd(out.load(row), total))

    fn.__name__ = f"score_segment{n}_{bits}"
    return fn


score_segment = _by_rows_and_bits(
    _score_segment, (_is_tile, types.intp, _is_matrix, types.intp, _is_bytes2d, types.intp, types.intp, _is_tile),
    (4, 8), "score_segment")


def _value_rows(n, bits):
    def fn(builder, acc, a0, stride, words, w0, wstep, ntiles, table, lanes, lr, lstride):
        """acc[a0 + r·stride + k, :] += Σ_t table[index k of words[w0 + t·wstep]] ·
        lanes[lr + t·lstride + r, :] for r < n, k < 8, t < ntiles: the values of one group
        of 8 coordinates over ``ntiles`` tiles (each word decoded here, never stored), with
        the n × 4 sums of a half group held in registers across the tiles (multiply-adds
        may be fused: attention only)."""
        i32v = ir.VectorType(ir.IntType(32), TILE)
        look = _Lookup(builder, table, bits)
        zero = ir.Constant(_VEC, [0.0] * TILE)
        for half in range(2):
            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(4)] for _ in range(n)]
            with cgutils.for_range(builder, ntiles) as loop:
                t = loop.index
                wv = words.load(builder.add(w0, builder.mul(t, wstep)), i32v)
                lbase = builder.add(lr, builder.mul(t, lstride))
                w = [lanes.load(builder.add(lbase, ir.Constant(lbase.type, r))) for r in range(n)]
                for k in range(4):
                    v = look.field(wv, bits * (4 * half + k))
                    for r in range(n):
                        prod = builder.fmul(v, w[r], flags=_CONTRACT)
                        builder.store(builder.fadd(builder.load(sums[r][k]), prod, flags=_CONTRACT), sums[r][k])
            for r in range(n):
                for k in range(4):
                    row = builder.add(builder.add(a0, builder.mul(stride, ir.Constant(a0.type, r))),
                                      ir.Constant(a0.type, 4 * half + k))
                    qa = acc.ptr(row)
                    _vstore(builder, builder.fadd(_vload(builder, qa), builder.load(sums[r][k])), qa)

    fn.__name__ = f"value_rows{n}_{bits}"
    return fn


value_rows = _by_rows_and_bits(
    _value_rows, (_is_tile, types.intp, types.intp, _is_words, types.intp, types.intp, types.intp, _is_tile,
                  _is_tile, types.intp, types.intp), (4, 1), "value_rows")


#: the unpack primitives per bit width 1..4 (_tile.unpack_tile picks one by ``bits``)
unpack_segment_1, unpack_segment_2, unpack_segment_3, unpack_segment_4 = (_unpack_segment(b) for b in range(1, 5))
unpack_rows_1, unpack_rows_2, unpack_rows_3, unpack_rows_4 = (_unpack_rows(b) for b in range(1, 5))
unpack_words_1, unpack_words_2, unpack_words_3, unpack_words_4 = (_unpack_words(b) for b in range(1, 5))


def _dot_rows(n):
    chains = 8 // n  # independent sums per row: n · chains ≥ 8 multiply-adds in flight

    @_primitive(_is_tile, types.intp, _is_matrix, types.intp, _is_tile, types.intp)
    def dot(builder, out, r, q, qr, tile, d):
        """out[r + k, :] = Σ_j q[qr + k, j] · tile[j, :] for k < n (attention only: the sum
        over j runs as ``chains`` interleaved partial sums, j ≡ c mod chains, added at the
        end, and multiply-adds may fuse): n rows of scores against one decoded tile, the
        partial sums held in registers for the whole loop."""
        zero = ir.Constant(_VEC, [0.0] * TILE)
        accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(chains)] for _ in range(n)]
        steps = builder.sdiv(d, ir.Constant(d.type, chains))

        def step(j, c):
            v = tile.load(j)
            for k in range(n):
                qk = builder.load(q.ptr(builder.add(qr, ir.Constant(qr.type, k)), j))
                prod = builder.fmul(_splat(builder, qk), v, flags=_CONTRACT)
                builder.store(builder.fadd(builder.load(accs[k][c]), prod, flags=_CONTRACT), accs[k][c])

        with cgutils.for_range(builder, steps) as loop:
            for c in range(chains):
                step(builder.add(builder.mul(loop.index, ir.Constant(d.type, chains)), ir.Constant(d.type, c)), c)
        with cgutils.for_range_slice(builder, builder.mul(steps, ir.Constant(d.type, chains)), d,
                                     ir.Constant(d.type, 1)) as (j, _):
            step(j, 0)  # the last d mod chains coordinates
        for k in range(n):
            total = builder.load(accs[k][0])
            for c in range(1, chains):
                total = builder.fadd(total, builder.load(accs[k][c]))
            out.store(builder.add(r, ir.Constant(r.type, k)), total)

    dot.__name__ = f"dot_rows{n}"
    return dot


dot_rows1 = _dot_rows(1)
dot_rows4 = _dot_rows(4)


def _acc_rows(n):
    @_primitive(_is_tile, types.intp, types.intp, _is_tile, types.intp, _is_tile, types.intp)
    def accumulate(builder, acc, a0, stride, tile, d, lanes, lr):
        """acc[a0 + k·stride + j, :] += tile[j, :] · lanes[lr + k, :] for j < d, k < n (product
        rounded, then the sum): n rows' weighted values from one decoded tile, each tile
        row loaded once for the n rows."""
        w = [lanes.load(builder.add(lr, ir.Constant(lr.type, k))) for k in range(n)]
        with cgutils.for_range(builder, d) as loop:
            j = loop.index
            v = tile.load(j)
            for k in range(n):
                row = builder.add(builder.add(a0, builder.mul(stride, ir.Constant(a0.type, k))), j)
                qa = acc.ptr(row)
                _vstore(builder, builder.fadd(_vload(builder, qa), builder.fmul(v, w[k])), qa)

    accumulate.__name__ = f"acc_rows{n}"
    return accumulate


acc_rows1 = _acc_rows(1)
acc_rows4 = _acc_rows(4)


#: exp on lanes: 2^n · P(r) with n = round(x·log2 e), r = x − n·ln 2 in two parts (ln 2 =
#: LN2_HI + LN2_LO, LN2_HI exact in 9 bits so n·LN2_HI is exact), P the degree-7 Taylor-like
#: minimax polynomial of e^r on |r| ≤ ln2/2 written as 1 + r + r²·Q(r) (relative error about
#: 1 ulp of float32). Below EXP_MIN the result is 0 (flushed; e^x < 2^−126 there).
LOG2E = 1.44269504088896341
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
EXP_MIN = -87.33654
EXP_Q = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
         5.0000001201e-1)


def _exp_lanes(builder, x):
    """e^x on lanes (see EXP_Q; −inf and anything below EXP_MIN give 0)."""
    def const(value):
        return ir.Constant(_VEC, [float(value)] * TILE)

    low = builder.fcmp_ordered("<", x, const(EXP_MIN))  # also false for NaN (never produced here)
    xc = builder.select(low, const(0.0), x)  # keeps −inf out of the arithmetic
    floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC]), f"llvm.floor.v{TILE}f32")
    n = builder.call(floor, [builder.fadd(builder.fmul(xc, const(LOG2E)), const(0.5))])
    r = builder.fsub(builder.fsub(xc, builder.fmul(n, const(LN2_HI))), builder.fmul(n, const(LN2_LO)))
    poly = const(EXP_Q[0])
    for c in EXP_Q[1:]:
        poly = builder.fadd(builder.fmul(poly, r), const(c))
    e = builder.fadd(builder.fadd(builder.fmul(builder.fmul(poly, r), r), r), const(1.0))
    i32v = ir.VectorType(ir.IntType(32), TILE)
    ni = builder.fptosi(n, i32v)
    scale = builder.bitcast(builder.shl(builder.add(ni, ir.Constant(i32v, [127] * TILE)),
                                        ir.Constant(i32v, [23] * TILE)), _VEC)
    return builder.select(low, const(0.0), builder.fmul(e, scale))


@_primitive(_is_tile, types.intp, types.intp, types.intp, types.float32, returns=types.float32)
def rows_exp_sum(builder, buf, p, stride, count, m):
    """buf[p + k·stride, :] = e^(buf[p + k·stride, :] − m) for k < count (_exp_lanes);
    returns the sum of all the results (float32: lane sums over k, then _lane_sum)."""
    total = cgutils.alloca_once_value(builder, ir.Constant(_VEC, [0.0] * TILE))
    with cgutils.for_range(builder, count) as loop:
        q = buf.ptr(builder.add(p, builder.mul(loop.index, stride)))
        out = _exp_lanes(builder, builder.fsub(_vload(builder, q), _splat(builder, m)))
        _vstore(builder, out, q)
        builder.store(builder.fadd(builder.load(total), out), total)
    return _lane_sum(builder, builder.load(total))


@_primitive(_is_tile, types.intp, types.intp, types.intp, returns=types.float32)
def rows_max(builder, buf, p, stride, count):
    """max of buf[p + k·stride, :] over k < count and the lanes (−inf when count is 0)."""
    i32 = ir.IntType(32)
    mask_t = ir.VectorType(i32, TILE)
    best = cgutils.alloca_once_value(builder, ir.Constant(_VEC, [float("-inf")] * TILE))
    with cgutils.for_range(builder, count) as loop:
        v = buf.load(builder.add(p, builder.mul(loop.index, stride)))
        cur = builder.load(best)
        builder.store(builder.select(builder.fcmp_ordered(">", v, cur), v, cur), best)
    vec = builder.load(best)
    n = TILE
    while n > 1:
        n //= 2
        upper = builder.shuffle_vector(vec, vec, ir.Constant(mask_t, [n + i if i < n else i for i in range(TILE)]))
        vec = builder.select(builder.fcmp_ordered(">", upper, vec), upper, vec)
    return builder.extract_element(vec, ir.Constant(i32, 0))


def _lane_sum(builder, vec):
    """Sum of the TILE lanes of ``vec`` as a tree (halves added pairwise: log2 TILE steps)."""
    n = TILE
    mask_t = ir.VectorType(ir.IntType(32), TILE)
    while n > 1:
        n //= 2
        upper = builder.shuffle_vector(vec, vec, ir.Constant(mask_t, [n + i if i < n else i for i in range(TILE)]))
        vec = builder.fadd(vec, upper)
    return builder.extract_element(vec, ir.Constant(ir.IntType(32), 0))


def _acc_rows_pair(n):
    @_primitive(_is_tile, types.intp, types.intp, _is_tile, _is_tile, types.intp, _is_tile, types.intp, types.intp)
    def accumulate(builder, acc, a0, stride, tile_a, tile_b, d, lanes, la, lb):
        """acc[a0 + k·stride + j, :] += tile_a[j, :] · lanes[la + k, :] + … then
        + tile_b[j, :] · lanes[lb + k, :] (two sums, in that order) for j < d, k < n: two
        decoded tiles per pass over the accumulators, which are read and written half as
        often as with acc_rows."""
        wa = [lanes.load(builder.add(la, ir.Constant(la.type, k))) for k in range(n)]
        wb = [lanes.load(builder.add(lb, ir.Constant(lb.type, k))) for k in range(n)]
        with cgutils.for_range(builder, d) as loop:
            j = loop.index
            va = tile_a.load(j)
            vb = tile_b.load(j)
            for k in range(n):
                row = builder.add(builder.add(a0, builder.mul(stride, ir.Constant(a0.type, k))), j)
                qa = acc.ptr(row)
                x = builder.fadd(_vload(builder, qa), builder.fmul(va, wa[k]))
                _vstore(builder, builder.fadd(x, builder.fmul(vb, wb[k])), qa)

    accumulate.__name__ = f"acc_rows{n}_pair"
    return accumulate


acc_rows1_pair = _acc_rows_pair(1)
acc_rows4_pair = _acc_rows_pair(4)
