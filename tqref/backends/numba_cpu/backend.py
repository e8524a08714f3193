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


def _out(out, shape) -> np.ndarray:
    if out is None:
        return np.empty(shape, _F32)
    if not (isinstance(out, np.ndarray) and out.dtype == _F32 and out.shape == shape and out.flags.c_contiguous
            and out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous float32 array of shape {shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    return out


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
        x = _f32(x)
        kp = kernel_plan(plan)
        n = x.shape[0]
        packed = np.empty((n, packing.packed_size(kp.dim, kp.bits)), np.uint8)
        norms = np.empty(n, _F32)
        fn, chunks = self._launch(K.mse_quantize, n)
        fn(x, x.view(np.uint32), kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar,
           kp.thresholds, kp.bits, packed, norms, chunks)
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
        x = _f32(x)
        kp = kernel_plan(plan)
        n = x.shape[0]
        packed = np.empty((n, packing.packed_size(kp.dim, kp.bits)), np.uint8)
        signs = np.empty((n, packing.packed_size(kp.dim, 1)), np.uint8)
        norms = np.empty(n, _F32)
        gammas = np.empty(n, _F32)
        fn, chunks = self._launch(K.prod_quantize, n)
        fn(x, x.view(np.uint32), kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar,
           kp.thresholds, kp.centroids, kp.bits, kp.projection, packed, norms, signs, gammas, chunks)
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
        x = _f32(x)
        kp = kernel_plan(plan)
        out = np.empty_like(x)
        fn, chunks = self._launch(K.rotate_rows, x.shape[0])
        fn(x, kp.sign0, kp.m, kp.fwd_offsets, kp.fwd_factors, kp.pi, kp.haar, out, chunks)
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
    def attend(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
               key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
               return_lse=False):
        """Softmax attention over a compressed KV cache in the rotated domain; the contract
        is :meth:`tqref.backends.reference.ReferenceBackend.attend`. Float32 (B, A, Lq, d)
        (and lse float32 (B, A, Lq) with ``return_lse``)."""
        q_rot = _f32(q_rot)
        key_indices, value_indices = _u8(key_indices), _u8(value_indices)
        key_norms, value_norms = _f32(key_norms), _f32(value_norms)
        kp, vp = kernel_plan(key_plan), kernel_plan(value_plan)
        nb, na, lq, d = q_rot.shape
        nh, t_len = key_indices.shape[1], key_indices.shape[2]
        prod_mode = key_signs is not None
        if prod_mode:
            key_signs, key_gammas = _u8(key_signs), _f32(key_gammas)
            flat = q_rot.reshape(-1, d)
            q_proj = np.empty_like(flat)
            fn, chunks = self._launch(E.project_rows, flat.shape[0] * 64)
            fn(flat, kp.projection, q_proj, min(chunks, max(1, flat.shape[0])))
            q_proj = q_proj.reshape(q_rot.shape)
        else:
            key_signs = np.zeros((nb, nh, t_len, 1), np.uint8)
            key_gammas = np.zeros((nb, nh, t_len), _F32)
            q_proj = q_rot
        key_p = E.field_width(kp.bits)
        key_fields, key_entries = E.table_shape(d, kp.bits)
        sign_fields = (d + 7) // 8
        out = np.empty((nb, na, lq, d), _F32)
        lse = np.empty((nb, na, lq), _F32)
        items = nb * na * lq
        work = items * max(1, t_len)
        if self.parallel and work >= 4096 and items > 1:
            fn, chunks = A.attend_kernel.parallel, min(items, 4 * num_threads())
        else:
            fn, chunks = A.attend_kernel.serial, 1
        fn(q_rot, q_proj, key_indices, key_norms, key_signs, key_gammas, value_indices, value_norms,
           kp.centroids, kp.bits, key_p, vp.centroids, vp.bits, kp.qjl_scale, prod_mode,
           _F32(scale), _F32(value_scale), int(group_size), bool(causal), int(start), int(lag), key_fields,
           key_entries, sign_fields, out, lse, chunks)
        return (out, lse) if return_lse else out
