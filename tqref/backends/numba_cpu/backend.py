"""NumbaBackend: the methods of tqref.backends.reference.ReferenceBackend on Numba kernels."""

from __future__ import annotations

import numpy as np

from ...reference import packing
from . import attention as A
from . import estimators as E
from . import kernels as K
from ._jit import PARALLEL_MIN_ROWS, TILE, num_threads
from ._plan import kernel_plan, thresholds

_F32 = np.float32


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


def _u8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.uint8)


#: the ``src`` of rows read in place (never read: the kernels see that x has rows)
_NO_SOURCE = (np.lib.stride_tricks.as_strided(np.empty(0, _F32), writeable=False), 0, 0, 1, False)


def _rows(x, dim: int):
    """Kernel arguments ``(x, xbits, src)`` for rows x (n, dim) of any float dtype and layout
    (kernels.mse_quantize), nothing copied in the common cases:

    * C-contiguous float32: read in place (x and its uint32 view);
    * anything else: ``src = (flat, first, rs, cs, half)``, flat a read-only C-contiguous
      1-D view of exactly the span of memory the rows occupy (from the lowest to the highest
      element address, so nothing past the buffer is ever read), element (r, j) at
      flat[first + r·rs + j·cs]. Rows that are contiguous inside (cs = 1: every other row,
      a column slice of a wider array) are converted with a vectorised loop; float16 travels
      as its uint16 bits (Numba has no float16 on the CPU). Non-native byte order and
      strides that are not whole elements are copied first (numpy's astype).
    """
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"x: expected rows (n, {dim}), got shape {x.shape}")
    if x.dtype == _F32 and x.flags.c_contiguous:
        return x, x.view(np.uint32), _NO_SOURCE
    if not x.dtype.isnative or any(s % x.itemsize for s in x.strides):
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    half = x.dtype == np.float16
    if half:
        x = x.view(np.uint16)
    (n, d), item = x.shape, x.itemsize
    rs, cs = x.strides[0] // item, x.strides[1] // item
    low = x[::-1] if rs < 0 else x  # low[0, 0]: the element at the lowest address
    low = low[:, ::-1] if cs < 0 else low
    span = (n - 1) * abs(rs) + (d - 1) * abs(cs) + 1 if n else 0
    flat = np.lib.stride_tricks.as_strided(low, shape=(span,), strides=(item,), writeable=False)
    first = (n - 1) * max(0, -rs) + (d - 1) * max(0, -cs) if n else 0
    none = np.empty((0, d), _F32)
    return none, none.view(np.uint32), (flat, first, rs, cs, half)


def _out(out, shape) -> np.ndarray:
    if out is None:
        return np.empty(shape, _F32)
    if not (isinstance(out, np.ndarray) and out.dtype == _F32 and out.shape == shape and out.flags.c_contiguous
            and out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous float32 array of shape {shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    return out


def _prefix(a, dtype):
    """(C-contiguous array, length of axis 2): a view ``base[:, :, :n]`` of a C-contiguous
    array (the cache's used part of its storage) gives ``base`` itself and n — the kernels
    read positions < n only, and nothing is copied; anything else is made contiguous."""
    base = a.base
    if (isinstance(base, np.ndarray) and base.dtype == dtype and a.dtype == dtype and base.flags.c_contiguous
            and base.ndim == a.ndim >= 3 and base.shape[:2] == a.shape[:2] and base.shape[3:] == a.shape[3:]
            and base.shape[2] >= a.shape[2] and a.strides == base.strides
            and a.__array_interface__["data"][0] == base.__array_interface__["data"][0]):
        return base, a.shape[2]
    return np.ascontiguousarray(a, dtype=dtype), a.shape[2]


class NumbaBackend:
    """Numba CPU kernels. ``parallel=False`` keeps every kernel on the calling thread (for
    callers that parallelise themselves, such as dask workers)."""

    name = "numba"

    def __init__(self, parallel: bool = True):
        self.parallel = bool(parallel)

    # ------------------------------------------------------------------ dispatch helpers
    def _launch(self, kern, rows: int):
        """(compiled variant, nchunks) for ``rows`` rows."""
        if self.parallel and rows >= PARALLEL_MIN_ROWS:
            tiles = (rows + TILE - 1) // TILE
            return kern.parallel, max(1, min(tiles, 4 * num_threads()))
        return kern.serial, 1

    # ------------------------------------------------------------------ mse
    def mse_quantize(self, x, plan):
        """As the reference, for rows (n, d) of any float dtype and layout: C-contiguous
        float32 is read in place, anything else converted to float32 tile by tile inside
        the kernel (no full-size copy; values beyond float32 give non-finite norms)."""
        x = np.asarray(x)
        kp = kernel_plan(plan)
        n = x.shape[0]
        packed = np.empty((n, packing.packed_size(kp.dim, kp.bits)), np.uint8)
        norms = np.empty(n, _F32)
        fn, chunks = self._launch(K.mse_quantize, n)
        fn(*_rows(x, kp.dim), kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar, kp.thresholds,
           kp.bits, packed, norms, chunks)
        return packed, norms

    def mse_dequantize(self, packed, norms, plan, out=None):
        """As the reference; ``out`` (optional): a C-contiguous float32 (n, d) array to fill
        (streaming callers reuse one buffer instead of faulting in fresh pages per call)."""
        packed, norms = _u8(packed), _f32(norms)
        kp = kernel_plan(plan)
        n = packed.shape[0]
        out = _out(out, (n, kp.dim))
        fn, chunks = self._launch(K.mse_dequantize, n)
        fn(packed, norms, kp.centroids, kp.bits, kp.m, kp.inv_pre, kp.inv_offsets, kp.inv_factors, kp.pi_t,
           kp.haar, out, chunks)
        return out

    # ------------------------------------------------------------------ prod
    def prod_quantize(self, x, plan):
        """As the reference, for rows of any float dtype and layout (as :meth:`mse_quantize`)."""
        x = np.asarray(x)
        kp = kernel_plan(plan)
        n = x.shape[0]
        packed = np.empty((n, packing.packed_size(kp.dim, kp.bits)), np.uint8)
        signs = np.empty((n, packing.packed_size(kp.dim, 1)), np.uint8)
        norms = np.empty(n, _F32)
        gammas = np.empty(n, _F32)
        fn, chunks = self._launch(K.prod_quantize, n)
        fn(*_rows(x, kp.dim), kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar, kp.thresholds,
           kp.centroids, kp.bits, kp.projection, packed, norms, signs, gammas, chunks)
        return packed, norms, signs, gammas

    #: from this dimension on, prod dequantization computes zᵀS with a BLAS matmul (d² work
    #: per vector, where BLAS's FMA and register blocking beat the kernel's ordered loop)
    BLAS_MIN_DIM = 192
    _BLAS_ROWS = 8192

    def prod_dequantize(self, packed, norms, signs, gammas, plan, out=None):
        """As the reference; ``out`` as in :meth:`mse_dequantize`."""
        packed, norms, signs, gammas = _u8(packed), _f32(norms), _u8(signs), _f32(gammas)
        kp = kernel_plan(plan)
        n, d = packed.shape[0], kp.dim
        out = _out(out, (n, d))
        if d < self.BLAS_MIN_DIM:
            self._prod_dequantize(packed, norms, signs, gammas, kp, np.zeros((0, d), _F32), out)
            return out
        pm = np.array([-1.0, 1.0], _F32)
        for s in range(0, n, self._BLAS_ROWS):
            e = min(n, s + self._BLAS_ROWS)
            z = pm[self.unpack_bits(signs[s:e], 1, d)]
            zs = np.ascontiguousarray(z @ kp.projection, dtype=_F32)
            self._prod_dequantize(packed[s:e], norms[s:e], signs[s:e], gammas[s:e], kp, zs, out[s:e])
        return out

    def _prod_dequantize(self, packed, norms, signs, gammas, kp, zs, out):
        fn, chunks = self._launch(K.prod_dequantize, packed.shape[0])
        fn(packed, norms, signs, gammas, kp.centroids, kp.bits, kp.projection, kp.qjl_scale,
           kp.m, kp.inv_pre, kp.inv_offsets, kp.inv_factors, kp.pi_t, kp.haar, zs, out, chunks)

    # ------------------------------------------------------------------ building blocks
    def rotate(self, x, plan):
        """Π x for float32 rows (n, d) (rotation.rotate)."""
        kp = kernel_plan(plan)
        return self._rotate_rows(x, kp, kp.sign0, kp.fwd_offsets, kp.fwd_factors, kp.pi)

    def rotate_inverse(self, y, plan):
        """Πᵀ y for float32 rows (n, d) (rotation.rotate_inverse, bit-identical)."""
        kp = kernel_plan(plan)
        return self._rotate_rows(y, kp, kp.inv_pre, kp.inv_offsets, kp.inv_factors, kp.pi_t)

    def _rotate_rows(self, x, kp, pre, offsets, factors, mat):
        x = _f32(x)
        out = np.empty_like(x)
        fn, chunks = self._launch(K.rotate_rows, x.shape[0])
        fn(x, pre, kp.m, offsets, factors, mat, kp.haar, out, chunks)
        return out

    def nearest_index(self, values, boundaries):
        """codebook.nearest_index of float32 values (n, d) against float64 boundaries (K − 1,)
        through the kernels' float32 thresholds (_plan.thresholds)."""
        y = _f32(values)
        out = np.empty(y.shape, np.uint8)
        fn, chunks = self._launch(K.index_rows, y.shape[0])
        fn(y, thresholds(np.asarray(boundaries, np.float64)), out, chunks)
        return out

    def pack_bits(self, indices, bits: int):
        """packing.pack_bits for indices (n, count) of any integer dtype (low bits used)."""
        idx = np.asarray(indices)
        lead, count = idx.shape[:-1], idx.shape[-1]
        flat = _u8(idx.reshape(-1, count).astype(np.uint8, copy=False))
        out = np.empty((flat.shape[0], packing.packed_size(count, bits)), np.uint8)
        fn, chunks = self._launch(K.pack_rows, flat.shape[0])
        fn(flat, int(bits), out, chunks)
        return out.reshape(lead + out.shape[-1:])

    def unpack_bits(self, packed, bits: int, count: int):
        """packing.unpack_bits: uint8 (..., ceil(count·bits/8)) -> uint8 (..., count)."""
        packed = np.asarray(packed)
        expected = packing.packed_size(count, bits)
        if packed.dtype != np.uint8 or packed.shape[-1:] != (expected,):
            packing.unpack_bits(packed, bits, count)  # raises the reference's error
        lead = packed.shape[:-1]
        flat = _u8(packed.reshape(-1, expected))
        out = np.empty((flat.shape[0], count), np.uint8)
        fn, chunks = self._launch(K.unpack_rows, flat.shape[0])
        fn(flat, int(bits), out, chunks)
        return out.reshape(lead + (count,))

    # ------------------------------------------------------------------ estimators
    _QUERY_BLOCK = 256  # queries whose tables are built and scanned together

    def _tables(self, q_rot, table, bits):
        p = E.field_width(bits)
        groups = (q_rot.shape[1] + 7) // 8
        luts = np.empty((q_rot.shape[0], groups * (8 // p), 1 << (p * bits)), _F32)
        fn, chunks = self._launch(E.build_tables, q_rot.shape[0] * 64)
        fn(q_rot, table, bits, p, luts, min(chunks, max(1, q_rot.shape[0])))
        return luts, p

    def _scan_launch(self, kern, m, n):
        return self._launch(kern, n * max(1, m))

    def mse_inner_product(self, queries, packed, norms, plan, unbiased=False):
        queries, packed, norms = _f32(queries), _u8(packed), _f32(norms)
        kp = kernel_plan(plan)
        m, n = queries.shape[0], packed.shape[0]
        out = np.empty((m, n), _F32)
        for s in range(0, m, self._QUERY_BLOCK):
            q_rot = self.rotate(queries[s : s + self._QUERY_BLOCK], plan)
            luts, p = self._tables(q_rot, kp.centroids, kp.bits)
            fn, chunks = self._scan_launch(E.mse_scan, q_rot.shape[0], n)
            fn(luts, packed, norms, kp.bits, p, kp.shrinkage, bool(unbiased),
               out[s : s + self._QUERY_BLOCK], chunks)
        return out

    def prod_inner_product(self, queries, packed, norms, signs, gammas, plan):
        queries, packed, norms = _f32(queries), _u8(packed), _f32(norms)
        signs, gammas = _u8(signs), _f32(gammas)
        kp = kernel_plan(plan)
        m, n = queries.shape[0], packed.shape[0]
        out = np.empty((m, n), _F32)
        pm = np.array([-1.0, 1.0], _F32)
        for s in range(0, m, self._QUERY_BLOCK):
            q_rot = self.rotate(queries[s : s + self._QUERY_BLOCK], plan)
            luts, p = self._tables(q_rot, kp.centroids, kp.bits)
            q_proj = np.empty_like(q_rot)
            fn, chunks = self._launch(E.project_rows, q_rot.shape[0] * 64)
            fn(q_rot, kp.projection, q_proj, min(chunks, q_rot.shape[0]))
            sign_luts, _ = self._tables(q_proj, pm, 1)
            fn, chunks = self._scan_launch(E.prod_scan, q_rot.shape[0], n)
            fn(luts, sign_luts, packed, norms, signs, gammas, kp.bits, p, kp.qjl_scale,
               out[s : s + self._QUERY_BLOCK], chunks)
        return out

    # ------------------------------------------------------------------ KV cache
    _ATTEND_ROWS = 32  # query rows (heads of a group × positions) sharing each decoded tile
    _ATTEND_MIN_SPLIT = 512  # tokens: shortest split worth a separate work item

    def attend(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
               key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
               return_lse=False):
        """Softmax attention over a compressed KV cache in the rotated domain; the contract
        is :meth:`tqref.backends.reference.ReferenceBackend.attend`. Float32 (B, A, Lq, d)
        (and lse float32 (B, A, Lq) with ``return_lse``)."""
        nb, na, lq, d = q_rot.shape
        nh, t_len = key_indices.shape[1], key_indices.shape[2]
        (key_indices, _), (value_indices, _) = _prefix(key_indices, np.uint8), _prefix(value_indices, np.uint8)
        (key_norms, _), (value_norms, _) = _prefix(key_norms, _F32), _prefix(value_norms, _F32)
        kp, vp = kernel_plan(key_plan), kernel_plan(value_plan)
        g = int(group_size)
        q = _f32(np.asarray(q_rot, _F32).reshape(nb, nh, g, lq, d))  # the heads of kv head h: q[:, h] (a view)
        prod_mode = key_signs is not None
        if prod_mode:
            (key_signs, _), (key_gammas, _) = _prefix(key_signs, np.uint8), _prefix(key_gammas, _F32)
            flat = q.reshape(-1, d)
            q_proj = np.empty_like(flat)
            fn, chunks = self._launch(E.project_rows, flat.shape[0] * 64)
            fn(flat, kp.projection, q_proj, min(chunks, max(1, flat.shape[0])))
            q_proj = q_proj.reshape(q.shape)
        else:
            key_signs = np.zeros((nb, nh, 1, 1), np.uint8)  # never read
            key_gammas = np.zeros((nb, nh, 1), _F32)
            q_proj = q
        rows_q = max(1, min(lq, self._ATTEND_ROWS // g))  # decode: one position, the group's heads
        blocks = nb * nh * -(-lq // rows_q)
        span = max(0, t_len - int(start))
        threads = num_threads() if self.parallel else 1
        splits = 1
        if threads > 1 and blocks < 4 * threads:
            splits = max(1, min(-(-4 * threads // blocks), span // self._ATTEND_MIN_SPLIT))
        per_split = -(-span // splits)
        split_len = max(TILE, -(-per_split // TILE) * TILE)  # whole tiles
        splits = max(1, -(-span // split_len))
        items = blocks * splits
        if threads > 1 and items > 1 and items * span * lq >= 1 << 14:
            fn, chunks = A.attend_splits.parallel, min(items, 4 * threads)
        else:
            fn, chunks = A.attend_splits.serial, 1
        m = np.empty((nb, nh, splits, lq, g), _F32)
        lsum = np.empty_like(m)
        acc = np.empty((nb, nh, splits, lq, g, d), _F32)
        fn(q, q_proj, t_len, key_indices, key_norms, key_signs, key_gammas, value_indices, value_norms,
           kp.centroids, kp.bits, vp.centroids, vp.bits, kp.qjl_scale, prod_mode, _F32(scale), bool(causal),
           int(start), int(lag), rows_q, splits, split_len, m, lsum, acc, chunks)
        out, lse = A.merge_splits(m, lsum, acc, value_scale)
        out = np.swapaxes(out, 2, 3).reshape(nb, na, lq, d)
        lse = np.swapaxes(lse, 2, 3).reshape(nb, na, lq)
        return (out, lse) if return_lse else out
