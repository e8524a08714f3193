"""Attention computed straight from compressed keys and values (docs/kv-cache.md).

The rotation Π is orthogonal, so for a key k stored as (norm ‖k‖, codes idx) and a value v
stored likewise, everything can be done in the rotated domain:

    score(q, k)  = ‖k‖ · ⟨Π q, ŷ_k⟩                               (mse stage)
                 + ‖k‖ · κ γ_k ⟨S Π q, z_k⟩                        (prod: QJL correction)
    out_rot      = value_scale · Σ_t w_t ‖v_t‖ ŷ_{v,t}            (weights w = softmax)
    out          = Πᵀ out_rot                                      (done by the caller)

where ŷ = c[idx] are codebook values (never the dequantized keys), z = ±1 sign bits, κ the
QJL constant, γ the residual norm on the unit scale (plan.py, prod.py, qjl.py).

**Lookup-table form.** ⟨Π q, ŷ_k⟩ = Σ_j LUT[j, idx_kj] with LUT[j, i] = fl(q_rot_j · c_i): a
per-query table of d × 2^b products, read once per coordinate of every key
(:func:`lut_scores` spells it out). The products are the same float32 numbers whether they
come from a table or from multiplying q_rot_j by the gathered centroid, so the reference
evaluates it as ``q_rot @ c[idx]ᵀ`` over chunks of tokens (:func:`key_scores`) — only
``chunk`` rows of rotated-domain centroids exist at any time. Kernels are free to use the
table. Every output here is a float output (docs/compatibility.md): the summation order is
not specified and backends are compared with a tolerance.

**Shapes.** B batch, H kv heads, G = group_size query heads per kv head, A = H·G attention
heads, Lq query positions, T cached positions, d head_dim. Attention head a reads kv head
a // G (heads of one group are adjacent, as in turboquant-rs and Hugging Face GQA).

**Visible range.** The Lq queries are the *last* Lq positions of the sequence: query i sits
at absolute position T − Lq + i. It sees keys ``start .. T − Lq + i − lag`` (inclusive) with
``causal=True`` and ``start .. T − 1`` without. With one query, ``start = lag = 0``, that is
every key. ``start`` and ``lag`` let a caller hold some keys elsewhere (float16 sink tokens
before ``start``, a float16 window of the ``lag`` newest positions) and merge the partial
attentions exactly with :func:`merge_partials`; a query whose range is empty gets output 0
and log-sum-exp −inf.

**Exact merge.** With ``lse = log Σ_t exp(scale · s_t)`` over a part's visible keys (natural
log), attention over the union of disjoint key sets is ``Σ_p exp(lse_p − lse) · out_p`` with
``lse = logsumexp_p(lse_p)`` — the flash-decoding combination.
"""

from __future__ import annotations

import numpy as np

from . import mse, packing, qjl

_F32 = np.float32
#: tokens per chunk when gathering centroid rows (bounds the temporary to chunk·d floats per head)
CHUNK = 4096


def _group(q_rot: np.ndarray, num_kv_heads: int, group_size: int) -> np.ndarray:
    """(B, A, Lq, d) -> (B, H, G·Lq, d): the queries of each kv head's group, stacked."""
    b, a, lq, d = q_rot.shape
    return q_rot.reshape(b, num_kv_heads, group_size * lq, d)


def _ungroup(x: np.ndarray, group_size: int, lq: int) -> np.ndarray:
    """(B, H, G·Lq, n) -> (B, A, Lq, n)."""
    b, h, _, n = x.shape
    return x.reshape(b, h * group_size, lq, n)


def lut_scores(q_rot, key_indices, key_norms, key_plan) -> np.ndarray:
    """mse-stage scores in the explicit lookup-table form (readable, small inputs only).

    q_rot float32 (A, Lq, d) for one batch element whose A heads all read the one kv head's
    key_indices uint8 (T, nbytes) and key_norms float32 (T,). Returns float32 (A, Lq, T):
    ``norm_t · Σ_j LUT[j, idx_tj]`` with ``LUT[j, i] = q_rot_j · c_i``, summed over j in index
    order (float64 accumulation of the float32 products, so the result is the exact sum
    rounded once).
    """
    d = key_plan.dim
    centroids = key_plan.codebook.centroids_f32  # (2^b,)
    idx = packing.unpack_bits(key_indices, key_plan.bits, d).astype(np.intp)  # (T, d)
    lut = (q_rot[..., :, None] * centroids).astype(_F32)  # (A, Lq, d, 2^b)
    coords = np.arange(d)
    gathered = lut[..., coords[None, :], idx]  # (A, Lq, T, d): LUT[j, idx_tj]
    dots = gathered.astype(np.float64).sum(axis=-1).astype(_F32)
    return (dots * np.asarray(key_norms, _F32)).astype(_F32)


def key_scores(q_rot, key_indices, key_norms, key_plan, *, group_size, key_signs=None, key_gammas=None,
               chunk: int = CHUNK) -> np.ndarray:
    """Raw score estimates ⟨q, k_t⟩ (no softmax scale), float32 (B, A, Lq, T).

    mse: ‖k_t‖ ⟨q_rot, ŷ_t⟩; prod (``key_signs``/``key_gammas`` given):
    ‖k_t‖ (⟨q_rot, ŷ_t⟩ + κ γ_t ⟨S q_rot, z_t⟩) — the order of estimators.prod_inner_product.
    Shapes as in :func:`attend`.
    """
    b, a, lq, d = q_rot.shape
    h, t_len = key_indices.shape[1], key_indices.shape[2]
    q = _group(np.asarray(q_rot, _F32), h, group_size)  # (B, H, G·Lq, d)
    prod_mode = key_signs is not None
    if prod_mode:
        q_proj = (q @ key_plan.projection.T).astype(_F32)  # S q_rot
        kappa = _F32(key_plan.qjl_scale)
    out = np.empty((b, h, group_size * lq, t_len), dtype=_F32)
    for start in range(0, t_len, chunk):
        stop = min(start + chunk, t_len)
        y_hat = mse.centroids_of(key_indices[:, :, start:stop], key_plan)  # (B, H, Tc, d)
        s = q @ np.swapaxes(y_hat, -1, -2)
        if prod_mode:
            z = qjl.signs_of(key_signs[:, :, start:stop], d)
            gam = np.asarray(key_gammas[:, :, start:stop], _F32)
            s = s + (q_proj @ np.swapaxes(z, -1, -2)) * (kappa * gam)[:, :, None, :]
        out[..., start:stop] = s * np.asarray(key_norms[:, :, start:stop], _F32)[:, :, None, :]
    return _ungroup(out, group_size, lq)


def qjl_bias(q_rot, key_signs, key_gammas, key_norms, key_plan, *, group_size, chunk: int = CHUNK) -> np.ndarray:
    """The prod-mode logit bias alone, ‖k_t‖ κ γ_t ⟨S q_rot, z_t⟩, float32 (B, A, Lq, T)."""
    b, a, lq, d = q_rot.shape
    h, t_len = key_signs.shape[1], key_signs.shape[2]
    q_proj = (_group(np.asarray(q_rot, _F32), h, group_size) @ key_plan.projection.T).astype(_F32)
    kappa = _F32(key_plan.qjl_scale)
    out = np.empty((b, h, group_size * lq, t_len), dtype=_F32)
    for start in range(0, t_len, chunk):
        stop = min(start + chunk, t_len)
        z = qjl.signs_of(key_signs[:, :, start:stop], d)
        gam = np.asarray(key_gammas[:, :, start:stop], _F32)
        corr = (q_proj @ np.swapaxes(z, -1, -2)) * (kappa * gam)[:, :, None, :]
        out[..., start:stop] = corr * np.asarray(key_norms[:, :, start:stop], _F32)[:, :, None, :]
    return _ungroup(out, group_size, lq)


def causal_mask(q_len: int, kv_len: int) -> np.ndarray:
    """bool (Lq, T): True where query i (absolute position T − Lq + i) may see key t."""
    return visible_mask(q_len, kv_len, causal=True)


def visible_mask(q_len: int, kv_len: int, *, causal: bool, start: int = 0, lag: int = 0) -> np.ndarray:
    """bool (Lq, T): True where query i sees key t — ``start ≤ t`` and, when ``causal``,
    ``t ≤ T − Lq + i − lag`` (module docstring, "Visible range")."""
    keys = np.arange(kv_len)[None, :]
    mask = np.broadcast_to(keys >= start, (q_len, kv_len))
    if causal:
        last = kv_len - q_len + np.arange(q_len) - lag
        mask = mask & (keys <= last[:, None])
    return mask


def masked_softmax(logits: np.ndarray, mask: np.ndarray | None):
    """(softmax, log-sum-exp) of float32 logits (..., Lq, T) over the keys where ``mask`` (Lq, T).

    Max-subtracted, exp, divided by the sum (float32). Masked keys weigh exactly 0; a row
    with no visible key gets weights 0 and lse −inf. lse = peak + log(Σ exp(logit − peak)),
    float32 (..., Lq).
    """
    logits = np.asarray(logits, _F32)
    if logits.shape[-1] == 0:  # no key at all (start = T)
        return logits, np.full(logits.shape[:-1], -np.inf, _F32)
    if mask is not None:
        logits = np.where(mask, logits, _F32(-np.inf))
    peak = np.max(logits, axis=-1, keepdims=True)
    empty = peak == -np.inf
    peak = np.where(empty, _F32(0.0), peak)
    e = np.exp(logits - peak)
    total = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(empty, _F32(0.0), e / total).astype(_F32)
        lse = (peak + np.log(total))[..., 0].astype(_F32)
    return weights, lse


def softmax_weights(scores: np.ndarray, scale, *, causal: bool) -> np.ndarray:
    """softmax(scale · scores) over the last axis, masked keys get weight 0 (float32).

    ``scores`` float32 (..., Lq, T). Max-subtracted, exp, divided by the sum (float32).
    """
    logits = np.asarray(scores, _F32) * _F32(scale)
    lq, t_len = logits.shape[-2:]
    mask = causal_mask(lq, t_len) if causal and lq > 1 else None
    return masked_softmax(logits, mask)[0]


def merge_partials(outs, lses):
    """Exact softmax attention over the union of disjoint key sets from per-part results.

    outs: sequence of float (..., Lq, d) — each part's normalised attention output; lses:
    matching float (..., Lq) — each part's natural-log log-sum-exp of its scaled scores (−inf
    for a part a query does not see). Returns (out float32 (..., Lq, d), lse float32 (..., Lq))
    with lse = logsumexp_p(lse_p) and out = Σ_p exp(lse_p − lse) · out_p, computed in float64
    and rounded once; a query that sees no key in any part gets out 0 and lse −inf.
    """
    if len(outs) != len(lses) or not outs:
        raise ValueError(f"outs, lses: expected two sequences of the same length >= 1, got {len(outs)} "
                         f"and {len(lses)}")
    lse = np.stack([np.asarray(x, np.float64) for x in lses])  # (P, ..., Lq)
    peak = np.max(lse, axis=0)
    safe = np.where(peak == -np.inf, 0.0, peak)
    factors = np.exp(lse - safe)  # exp(−inf) = 0 for parts a query does not see
    total = np.sum(factors, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        merged_lse = np.where(total > 0, safe + np.log(total), -np.inf)
        weights = np.where(total > 0, factors / total, 0.0)
    out = sum(w[..., None] * np.asarray(o, np.float64) for w, o in zip(weights, outs))
    return out.astype(_F32), merged_lse.astype(_F32)


def accumulate_values(weights, value_indices, value_norms, value_plan, *, group_size,
                      chunk: int = CHUNK) -> np.ndarray:
    """Σ_t w_t ‖v_t‖ ŷ_{v,t} in the rotated domain: weights (B, A, Lq, T) -> (B, A, Lq, d) float32."""
    b, a, lq, t_len = weights.shape
    h = value_indices.shape[1]
    w = _group(np.asarray(weights, _F32), h, group_size)  # (B, H, G·Lq, T)
    w = w * np.asarray(value_norms, _F32)[:, :, None, :]
    acc = np.zeros((b, h, group_size * lq, value_plan.dim), dtype=_F32)
    for start in range(0, t_len, chunk):
        stop = min(start + chunk, t_len)
        y_hat = mse.centroids_of(value_indices[:, :, start:stop], value_plan)  # (B, H, Tc, d)
        acc += w[..., start:stop] @ y_hat
    return _ungroup(acc, group_size, lq)


def attend(q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
           key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0,
           return_lse=False):
    """Softmax attention over compressed keys and values, in the rotated domain.

    See :meth:`tqref.backends.reference.ReferenceBackend.attend` for the full contract.
    Returns float32 (B, A, Lq, d): ``value_scale · Σ_t w_t ‖v_t‖ ŷ_{v,t}`` with
    ``w = softmax(scale · key_scores)`` over each query's visible keys (module docstring);
    with ``return_lse`` also the log-sum-exp of ``scale · key_scores`` float32 (B, A, Lq).
    Keys before ``start`` are never read.
    """
    lq, t_len = q_rot.shape[2], key_indices.shape[2]
    sl = slice(start, t_len)
    if key_signs is not None:
        key_signs, key_gammas = key_signs[:, :, sl], key_gammas[:, :, sl]
    scores = key_scores(q_rot, key_indices[:, :, sl], key_norms[:, :, sl], key_plan, group_size=group_size,
                        key_signs=key_signs, key_gammas=key_gammas)
    logits = scores * _F32(scale)
    mask = visible_mask(lq, t_len, causal=causal, start=start, lag=lag)[:, start:]
    weights, lse = masked_softmax(logits, None if mask.all() else mask)
    out = accumulate_values(weights, value_indices[:, :, sl], value_norms[:, :, sl], value_plan,
                            group_size=group_size)
    if value_scale != 1.0:
        out = out * _F32(value_scale)
    out = out.astype(_F32, copy=False)
    return (out, lse) if return_lse else out
