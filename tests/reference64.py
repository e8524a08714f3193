"""The reference's unordered float outputs recomputed in float64 from the same float32 inputs.

tqref.tolerance derives a float output's tolerance from the reference's own error, measured
flash-attention style as |reference in float32 − the same computation in float64|. The
reference functions compute in float32 (they cast their inputs), so the float64 versions of
the formulas are written here once, for the tests that compare another implementation (a
backend, a chunked or device path, another formulation) with the reference:

* estimates and key scores: mse ‖x‖·⟨q_rot, ŷ⟩ (÷ float32(α) debiased), prod
  ‖x‖·(⟨q_rot, ŷ⟩ + κγ⟨S q_rot, z⟩) (tqref/reference/estimators.py, attention.py);
* the prod reconstruction ‖x‖·Πᵀ(ŷ + κγ Sᵀz) (tqref/reference/prod.py);
* attention over codes in the rotated domain and its log-sum-exp (attention.py), and softmax
  attention over dense (dequantized) K, V.

Inputs that are exact in the reference (the rotated queries, ŷ = float32 centroids, z, the
float32 norms, κ and γ) are taken as they are; only the sums, the softmax and the products of
the unordered stages are done in float64. ``within(got, ref32, ref64, what, scale, axis)``
then asserts the rule; the scale of an estimate is ‖q‖·‖x‖, of a reconstruction ‖x‖
(docs/compatibility.md "Policy").
"""

from __future__ import annotations

import numpy as np

from tqref import tolerance
from tqref.reference import attention, mse, qjl, rotation

_F32 = np.float32


def _f64(x):
    return np.asarray(x, np.float64)


def mse_estimates(q_rot, packed, norms, plan, *, unbiased: bool = False) -> np.ndarray:
    """float64 (m, n) of estimators.mse_inner_product for rotated queries q_rot (m, d)."""
    est = key_scores(q_rot[None, None], packed[None, None], norms[None, None], plan, group_size=1)[0, 0]
    return est / float(_F32(plan.alpha)) if unbiased else est


def prod_estimates(q_rot, packed, norms, signs, gammas, plan) -> np.ndarray:
    """float64 (m, n) of estimators.prod_inner_product for rotated queries q_rot (m, d)."""
    return key_scores(q_rot[None, None], packed[None, None], norms[None, None], plan, group_size=1,
                      key_signs=signs[None, None], key_gammas=gammas[None, None])[0, 0]


def prod_dequantize(packed, norms, signs, gammas, plan) -> np.ndarray:
    """float64 (n, d) of prod.dequantize: norm · Πᵀ(ŷ + κγ Sᵀz)."""
    z = _f64(qjl.signs_of(signs, plan.dim))
    y = _f64(mse.centroids_of(packed, plan)) + (z @ _f64(plan.projection)) * (
        float(_F32(plan.qjl_scale)) * _f64(gammas))[:, None]
    return _inverse_rotation(y, plan) * _f64(norms)[:, None]


def assert_dequantized(got, quantizer, codes, what: str) -> None:
    """``got`` against ``quantizer.dequantize(codes)`` (reference backend): mse bit for bit (a
    written order); prod by the rule, each vector at its scale ‖x‖ (Sᵀz is a matmul)."""
    want = quantizer.dequantize(codes)
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, got.dtype)
    if not hasattr(codes, "signs"):
        assert got.tobytes() == want.tobytes(), f"{what}: mse dequantization differs in bits"
        return
    d = quantizer.dim
    flat = (codes.mse.indices.reshape(-1, codes.mse.indices.shape[-1]), codes.mse.norms.reshape(-1),
            codes.signs.reshape(-1, codes.signs.shape[-1]), codes.residual_norms.reshape(-1))
    want64 = prod_dequantize(*flat, quantizer.plan).reshape(want.shape)
    norms = _f64(codes.mse.norms)[..., None]
    within(got.reshape(-1, d), want.reshape(-1, d), want64.reshape(-1, d), what, scale=norms.reshape(-1, 1), axis=-1)


def cache_prod_keys(cache, layer) -> np.ndarray:
    """float64 (B, H, T, d): Algorithm 2's DeQuant of a prod-mode cache's stored keys."""
    a = cache.stored(layer)

    def rows(name):
        x = a[name]
        return x.reshape((-1,) + x.shape[3:])

    keys = prod_dequantize(rows("key_indices"), rows("key_norms"), rows("key_signs"), rows("key_gammas"),
                           cache.key_plan)
    return keys.reshape(a["key_norms"].shape + (cache.head_dim,))


def _inverse_rotation(y, plan) -> np.ndarray:
    """Πᵀ y for rows y (n, d) in float64: y·Π for a Haar matrix; else the Hadamard steps undone in
    reverse order (each block's Sylvester-order transform times float32 1/sqrt(m), then the signs)."""
    if plan.matrix is not None:
        return y @ _f64(plan.matrix)
    x = np.array(y, np.float64)
    steps = rotation.hadamard_steps(y.shape[-1])
    for s in reversed(range(len(steps))):
        lo, hi = steps[s]
        x[:, lo:hi] = (x[:, lo:hi] @ _sylvester(hi - lo)) * float(rotation.inverse_sqrt(hi - lo))
        x *= _f64(plan.signs[s])
    return x


def _sylvester(m: int) -> np.ndarray:
    """The m × m Hadamard matrix in Sylvester order (m a power of two), float64."""
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return h


def key_scores(q_rot, key_indices, key_norms, key_plan, *, group_size, key_signs=None, key_gammas=None):
    """float64 (B, A, Lq, T) of attention.key_scores: ‖k_t‖ ⟨q_rot, ŷ_t⟩ (+ κγ_t ⟨S q_rot, z_t⟩ in
    prod mode); query head a reads kv head a // group_size."""
    kv = np.arange(q_rot.shape[1]) // group_size
    q = _f64(q_rot)
    scores = np.einsum("bald,batd->balt", q, _f64(mse.centroids_of(key_indices, key_plan))[:, kv])
    if key_signs is not None:
        z = _f64(qjl.signs_of(key_signs, key_plan.dim))[:, kv]
        kg = float(_F32(key_plan.qjl_scale)) * _f64(key_gammas)[:, kv]  # (B, A, T)
        scores = scores + np.einsum("bald,batd->balt", q @ _f64(key_plan.projection).T, z) * kg[:, :, None, :]
    return scores * _f64(key_norms)[:, kv][:, :, None, :]


def accumulate_values(weights, value_indices, value_norms, value_plan, *, group_size):
    """float64 (B, A, Lq, d) of attention.accumulate_values: Σ_t w_t ‖v_t‖ ŷ_{v,t} (weights as given)."""
    kv = np.arange(weights.shape[1]) // group_size
    v_hat = _f64(mse.centroids_of(value_indices, value_plan))[:, kv] * _f64(value_norms)[:, kv][..., None]
    return np.einsum("balt,batd->bald", _f64(weights), v_hat)


def attend(q_rot, key_indices, key_norms, value_indices, value_norms, key_plan, value_plan, *,
           key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size, causal, start=0, lag=0):
    """float64 (out (B, A, Lq, d), lse (B, A, Lq)) of attention.attend; a query with no visible
    key gets out 0 and lse −inf."""
    scores = key_scores(q_rot, key_indices, key_norms, key_plan, group_size=group_size, key_signs=key_signs,
                        key_gammas=key_gammas)
    mask = attention.visible_mask(q_rot.shape[2], key_indices.shape[2], causal=causal, start=start, lag=lag)
    w, lse = _softmax(scores * float(_F32(scale)), mask)
    out = accumulate_values(w, value_indices, value_norms, value_plan, group_size=group_size)
    return out * float(_F32(value_scale)), lse


def dense_attention(q, k, v, *, scale, visible, bias=None):
    """float64 (out, lse) of softmax attention over dense float32 K, V: q (B, A, Lq, d), k, v
    (B, H, T, d); head a reads kv head a // (A / H); query i sees the keys where ``visible``
    (Lq, T) (attention.visible_mask); ``bias`` (B, A, Lq, T) is added to q·k before the scale."""
    kv = np.arange(q.shape[1]) // (q.shape[1] // k.shape[1])
    scores = np.einsum("bald,batd->balt", _f64(q), _f64(k)[:, kv])
    if bias is not None:
        scores = scores + _f64(bias)
    w, lse = _softmax(scores * float(scale), visible)
    return np.einsum("balt,batd->bald", w, _f64(v)[:, kv]), lse


def _softmax(logits, mask):
    """(weights, log-sum-exp) of softmax over the keys where mask (Lq, T); a query with no
    visible key gets weights 0 and −inf."""
    logits = np.where(mask, logits, -np.inf)
    peak = np.max(logits, axis=-1, keepdims=True, initial=-np.inf)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(logits - peak)
    total = e.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(total > 0, e / total, 0.0)
        lse = np.where(total > 0, peak + np.log(total), -np.inf)[..., 0]
    return w, lse


def cache_attention(cache, layer, q, *, causal=True):
    """float64 (out, lse) of ``cache.attend(layer, q, causal=causal)`` (default scale) from the
    cache's own dequantized K, V and, in prod mode, its logit bias — as the conformance
    generator measures the kv attention's error (tqref/conformance/families.py)."""
    k, v = cache.dequantize(layer)
    visible = attention.visible_mask(q.shape[2], k.shape[2], causal=causal)
    return dense_attention(q, k, v, scale=1.0 / np.sqrt(cache.head_dim), visible=visible,
                           bias=cache.logit_bias(layer, q))


def within(got, ref32, ref64, what: str, scale=None, axis=None) -> None:
    """Assert the rule: ``got`` within tqref.tolerance.measured(ref32, ref64, scale, axis) of ``ref32``."""
    tolerance.assert_within(got, ref32, tolerance.measured(ref32, ref64, scale, axis), what)
