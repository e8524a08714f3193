"""The reference backend: the NumPy modules of tqref.reference, unchanged.

Batch operations run in chunks of ``CHUNK_ROWS`` vectors so the temporaries stay in cache;
vectors are independent, so chunking changes no bit of the result.
"""

from __future__ import annotations

import numpy as np

from ..reference import attention, codebook, estimators, mse, packing, prod

CHUNK_ROWS = 2048


def _chunked(fn, *arrays):
    """Apply ``fn`` to row chunks of ``arrays`` and concatenate each output along axis 0."""
    n = arrays[0].shape[0]
    if n <= CHUNK_ROWS:
        return fn(*arrays)
    parts = [fn(*(a[i : i + CHUNK_ROWS] for a in arrays)) for i in range(0, n, CHUNK_ROWS)]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(p) for p in zip(*parts))
    return np.concatenate(parts)


class ReferenceBackend:
    """The reference modules behind the backend Protocols (protocol.py): whole operations and
    the host step operations."""

    name = "reference"

    def mse_quantize(self, x, plan):
        return _chunked(lambda a: mse.quantize(a, plan), x)

    def mse_dequantize(self, packed, norms, plan):
        return _chunked(lambda p, n: mse.dequantize(p, n, plan), packed, norms)

    def prod_quantize(self, x, plan):
        return _chunked(lambda a: prod.quantize(a, plan), x)

    def prod_dequantize(self, packed, norms, signs, gammas, plan):
        return _chunked(lambda p, n, s, g: prod.dequantize(p, n, s, g, plan), packed, norms, signs, gammas)

    def mse_inner_product(self, queries, packed, norms, plan, unbiased=False):
        return estimators.mse_inner_product(queries, packed, norms, plan, unbiased=unbiased)

    def prod_inner_product(self, queries, packed, norms, signs, gammas, plan):
        return estimators.prod_inner_product(queries, packed, norms, signs, gammas, plan)

    # ------------------------------------------------------------------ step operations
    def rotate(self, x, plan):
        return plan.rotate(x)

    def rotate_inverse(self, y, plan):
        return plan.rotate_inverse(y)

    def nearest_index(self, values, boundaries):
        return codebook.nearest_index(np.asarray(values, np.float32), np.asarray(boundaries, np.float64))

    def pack_bits(self, indices, bits: int):
        return packing.pack_bits(indices, bits)

    def unpack_bits(self, packed, bits: int, count: int):
        return packing.unpack_bits(packed, bits, count)

    def attend(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
               key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
               return_lse=False):
        """Softmax attention over a compressed KV cache, entirely in the rotated domain.

        This signature is the contract every backend's ``attend`` follows (numba, cuda).
        Arguments are validated by the caller (:class:`tqref.KVCache`); a backend may assume
        the shapes, dtypes and values below and must not write to any input.

        Shapes: B batch, H kv heads, G = ``group_size`` query heads per kv head, A = H·G,
        Lq query positions, T cached positions (T ≥ 1), d = head_dim.

        Args:
            q_rot: float32 (B, A, Lq, d), finite — the queries already rotated by the key
                plan's rotation (``estimators.rotate_queries(q, key_plan)``).
            key_indices: uint8 (B, H, T, ceil(d·key_plan.bits/8)) — packed mse-stage codes of
                the keys (packing.py layout; key_plan.bits is the mse-stage width, i.e.
                key bits − 1 in prod mode).
            key_norms: float32 (B, H, T) — ‖k_t‖.
            value_indices: uint8 (B, H, T, ceil(d·value_plan.bits/8)) — packed value codes.
            value_norms: float32 (B, H, T) — ‖v_t‖.
            key_plan, value_plan: :class:`tqref.reference.plan.Plan` of the keys (kind "mse"
                or "prod") and of the values (kind "mse"); they share one rotation.
            key_signs: uint8 (B, H, T, ceil(d/8)) QJL sign bits, prod plans only, else None.
            key_gammas: float32 (B, H, T) QJL residual norms γ (unit scale), prod only, else None.
            scale: float > 0 multiplying the raw score estimates before the softmax (the
                caller folds 1/α into it for the debiased mse estimator).
            value_scale: float multiplying the output (1.0 unless values are debiased).
            group_size: G ≥ 1; attention head a reads kv head a // G.
            causal: when True, query i (absolute position T − Lq + i) sees keys
                start .. T − Lq + i − lag only; when False every query sees keys start .. T − 1.
            start: int, 0 ≤ start ≤ T — keys before it are not attended (never read).
            lag: int ≥ 0, only with causal=True — the ``lag`` newest keys a query would see
                are excluded. A query whose range is empty gets output 0 (and lse −inf).
            return_lse: also return the natural-log log-sum-exp of ``scale · s`` over each
                query's visible keys, float32 (B, A, Lq), for an exact merge of partial
                attentions (:func:`tqref.reference.attention.merge_partials`).

        Array inputs may be non-contiguous views (the cache passes the used part of its
        storage, ``array[:, :, :T]``); copy them if a kernel needs contiguous memory.

        Computes, for every (b, a, i):
            s_t = ‖k_t‖ · ⟨q_rot, c[idx_t]⟩                      (mse key plan)
            s_t = ‖k_t‖ · (⟨q_rot, c[idx_t]⟩ + κ γ_t ⟨S q_rot, z_t⟩)   (prod key plan;
                  S = key_plan.projection, κ = key_plan.qjl_scale, z = 2·bit − 1)
            w   = softmax(scale · s) over the visible keys (masked keys weigh exactly 0)
            out = value_scale · Σ_t w_t ‖v_t‖ c_v[idx_{v,t}]

        Returns:
            float32 (B, A, Lq, d): the output **in the value plan's rotated domain**; the
            caller applies Πᵀ once (``rotation.rotate_inverse``). With ``return_lse`` a pair
            (out, lse). Float outputs: backends agree with this reference within a
            tolerance, not bit for bit.
        """
        return attention.attend(q_rot, key_indices, key_norms, value_indices, value_norms, key_plan,
                                value_plan, key_signs=key_signs, key_gammas=key_gammas, scale=scale,
                                value_scale=value_scale, group_size=group_size, causal=causal, start=start,
                                lag=lag, return_lse=return_lse)
