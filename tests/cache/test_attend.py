"""attend over the compressed cache: equals softmax attention over the cache's own dequantized
K and V (within the float tolerance of cache_helpers.tolerance), GQA and causal masking against
a plain loop implementation, the lookup-table form, and the backend contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tqref.backends import get as get_backend
from tqref.reference import attention, estimators, rotation
from tqref.cache import KVCache

import reference64
from cache_helpers import data, plain_attention, tolerance

VARIANTS = [
    dict(mode="mse", key_bits=3, value_bits=2),
    dict(mode="mse", key_bits=2, value_bits=3, debiased=True),
    dict(mode="mse", key_bits=4, value_bits=2, debiased_values=True),
    dict(mode="prod", key_bits=3, value_bits=3, projection="gaussian"),
    dict(mode="prod", key_bits=4, value_bits=2, projection="orthogonal", norm_dtype="float16"),
    dict(mode="prod", key_bits=2, value_bits=1, projection="rademacher", rotation="haar"),
]
IDS = ["mse", "mse-debiased", "mse-debiased-values", "prod-gauss", "prod-orth-f16", "prod-rad-haar"]


@pytest.mark.parametrize("cfg", VARIANTS, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 64), (2, 2, 3, 5, 48), (1, 3, 2, 16, 128)],
                         ids=["decode", "gqa3-causal", "gqa2-prefill"])
def test_attend_equals_softmax_over_own_dequantized_cache(cfg, shape, rng):
    batch, h, group, lq, d = shape
    t = 150
    cache = KVCache(1, h, d, **cfg)
    k, v = data(rng, batch, h, t, d, 2.0), data(rng, batch, h, t, d, 3.0)
    q = data(rng, batch, h * group, lq, d, 2.0)
    res = cache.prefill(0, k, v, q)
    scale = 1.0 / math.sqrt(d)
    out = cache.attend(0, q)
    assert out.shape == q.shape and out.dtype == np.float32
    want = plain_attention(q, res.k, res.v, scale=scale, causal=True, bias=res.logit_bias)
    tol = tolerance(cache, q, res.k, res.v, scale)
    assert np.abs(out - want).max() <= tol


def test_gqa_and_causal_against_plain_loops(rng):
    """Head a reads kv head a // G; query i sees keys 0..T−Lq+i; checked per element."""
    batch, h, group, lq, t, d = 2, 2, 4, 7, 40, 32
    cache = KVCache(1, h, d, key_bits=3, value_bits=3)
    cache.append(0, data(rng, batch, h, t, d), data(rng, batch, h, t, d))
    keys, values = cache.dequantize(0)
    q = data(rng, batch, h * group, lq, d)
    out = cache.attend(0, q, scale=0.3)
    want = plain_attention(q, keys, values, scale=0.3, causal=True)
    assert np.abs(out - want).max() <= tolerance(cache, q, keys, values, 0.3)
    # the mask matters: without it the last-but-one query would differ
    unmasked = plain_attention(q, keys, values, scale=0.3, causal=False)
    assert np.abs(unmasked[:, :, :-1] - want[:, :, :-1]).max() > 1e-3
    np.testing.assert_allclose(unmasked[:, :, -1], want[:, :, -1], atol=1e-12)
    # heads of one group see one kv head: same query into two heads of a group gives the same output
    q2 = q.copy()
    q2[:, 1] = q2[:, 0]
    out2 = cache.attend(0, q2, scale=0.3)
    want64 = reference64.cache_attention(cache, 0, q2)[0]  # BLAS row order may differ between the heads
    reference64.within(out2[:, 1], out2[:, 0], want64[:, 0], "two heads of a group, one query")
    q2[:, group] = q2[:, 0]  # the first head of the next group reads another kv head
    assert np.abs(cache.attend(0, q2, scale=0.3)[:, group] - out2[:, 0]).max() > 1e-3


def test_causal_false_and_single_query(rng):
    h, d, t = 1, 16, 12
    cache = KVCache(1, h, d, key_bits=2, value_bits=2, mode="prod")
    k, v = data(rng, 1, h, t, d), data(rng, 1, h, t, d)
    q = data(rng, 1, 2, 5, d)
    res = cache.prefill(0, k, v, q)
    scale = 1 / 4
    out = cache.attend(0, q, causal=False)
    want = plain_attention(q, res.k, res.v, scale=scale, causal=False, bias=res.logit_bias)
    assert np.abs(out - want).max() <= tolerance(cache, q, res.k, res.v, scale)
    one = q[:, :, :1]
    np.testing.assert_array_equal(cache.attend(0, one, causal=True), cache.attend(0, one, causal=False))
    # a causal query block as long as the cache: the first query sees only key 0
    full = data(rng, 1, 2, t, d)
    out = cache.attend(0, full)
    np.testing.assert_allclose(out[:, :, 0], np.repeat(res.v[:, :, 0], 2, axis=0).reshape(1, 2, d), atol=1e-5)


def test_default_scale_is_inverse_sqrt_head_dim(rng):
    cache = KVCache(1, 1, 64, key_bits=3, value_bits=3)
    cache.append(0, data(rng, 1, 1, 20, 64), data(rng, 1, 1, 20, 64))
    q = data(rng, 1, 1, 2, 64)
    np.testing.assert_array_equal(cache.attend(0, q), cache.attend(0, q, scale=1 / 8))
    assert np.abs(cache.attend(0, q, scale=0.5) - cache.attend(0, q)).max() > 1e-4


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lookup_table_form_equals_scores(bits, rng):
    d, t = 24, 50
    cache = KVCache(1, 1, d, key_bits=bits, value_bits=2)
    cache.append(0, data(rng, 1, 1, t, d, 2.0), data(rng, 1, 1, t, d))
    s = cache.stored(0)
    q = data(rng, 1, 3, 4, d)
    q_rot = estimators.rotate_queries(q.reshape(-1, d), cache.key_plan).reshape(q.shape)
    lut = attention.lut_scores(q_rot[0], s["key_indices"][0, 0], s["key_norms"][0, 0], cache.key_plan)
    fast = attention.key_scores(q_rot, s["key_indices"], s["key_norms"], cache.key_plan, group_size=3, chunk=7)
    # both equal the public mse estimator within the rule, at the scale ‖q‖·‖k‖
    est = estimators.mse_inner_product(q[0].reshape(-1, d), s["key_indices"][0, 0], s["key_norms"][0, 0],
                                       cache.key_plan)
    est64 = reference64.mse_estimates(q_rot[0].reshape(-1, d), s["key_indices"][0, 0], s["key_norms"][0, 0],
                                      cache.key_plan)
    scale = np.outer(np.linalg.norm(q[0].reshape(-1, d).astype(np.float64), axis=1), s["key_norms"][0, 0])
    reference64.within(lut.reshape(-1, t), est, est64, "lut_scores", scale=scale)
    reference64.within(fast[0].reshape(-1, t), est, est64, "key_scores", scale=scale)


def test_chunking_does_not_change_scores_or_output(rng):
    d, t = 16, 37
    cache = KVCache(1, 2, d, key_bits=3, value_bits=2, mode="prod", projection="orthogonal")
    cache.append(0, data(rng, 1, 2, t, d), data(rng, 1, 2, t, d))
    s = cache.stored(0)
    q_rot = data(rng, 1, 4, 3, d)
    kw = dict(group_size=2, key_signs=s["key_signs"], key_gammas=s["key_gammas"])
    a = attention.key_scores(q_rot, s["key_indices"], s["key_norms"], cache.key_plan, chunk=5, **kw)
    b = attention.key_scores(q_rot, s["key_indices"], s["key_norms"], cache.key_plan, chunk=1000, **kw)
    reference64.within(a, b, reference64.key_scores(q_rot, s["key_indices"], s["key_norms"], cache.key_plan, **kw),
                       "key_scores in chunks of 5")
    w = attention.softmax_weights(a, 0.25, causal=True)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-6)
    assert np.all(w[..., 0, t - 2 :] == 0)  # query 0 of 3 sees keys 0..t−3
    x = attention.accumulate_values(w, s["value_indices"], s["value_norms"], cache.value_plan, group_size=2, chunk=4)
    y = attention.accumulate_values(w, s["value_indices"], s["value_norms"], cache.value_plan, group_size=2)
    y64 = reference64.accumulate_values(w, s["value_indices"], s["value_norms"], cache.value_plan, group_size=2)
    reference64.within(x, y, y64, "accumulate_values in chunks of 4")


def test_backend_attend_contract(rng):
    """Call ReferenceBackend.attend with array views as KVCache does: rotated-domain output,
    inputs untouched, non-contiguous views accepted."""
    h, group, d, t, lq = 2, 2, 32, 25, 3
    cache = KVCache(1, h, d, key_bits=3, value_bits=2, mode="prod", projection="orthogonal")
    cache.append(0, data(rng, 1, h, t, d), data(rng, 1, h, t, d))
    s = {n: a.astype(np.float32) if a.dtype == np.float16 else a for n, a in cache.stored(0).items()}
    assert not s["key_indices"].flags.c_contiguous  # a view of the used part of the storage
    copies = {n: a.copy() for n, a in s.items()}
    q = data(rng, 1, h * group, lq, d)
    q_rot = estimators.rotate_queries(q.reshape(-1, d), cache.key_plan).reshape(q.shape)
    q_rot_copy = q_rot.copy()
    out_rot = get_backend("reference").attend(
        q_rot, s["key_indices"], s["key_norms"], s["value_indices"], s["value_norms"], cache.key_plan,
        cache.value_plan, key_signs=s["key_signs"], key_gammas=s["key_gammas"], scale=0.2, value_scale=1.0,
        group_size=group, causal=True)
    assert out_rot.shape == q.shape and out_rot.dtype == np.float32
    for n, a in s.items():
        np.testing.assert_array_equal(a, copies[n])
    np.testing.assert_array_equal(q_rot, q_rot_copy)
    back = rotation.rotate_inverse(out_rot.reshape(-1, d), cache.value_plan.rotation, cache.value_plan.seed)
    np.testing.assert_array_equal(back.reshape(q.shape), cache.attend(0, q, scale=0.2))
    doubled = get_backend("reference").attend(
        q_rot, s["key_indices"], s["key_norms"], s["value_indices"], s["value_norms"], cache.key_plan,
        cache.value_plan, key_signs=s["key_signs"], key_gammas=s["key_gammas"], scale=0.2, value_scale=2.0,
        group_size=group, causal=True)
    np.testing.assert_array_equal(doubled, 2 * out_rot)  # a power of two: exact


def test_debiased_values_scale_the_output(rng):
    d = 32
    k, v, q = data(rng, 1, 1, 30, d), data(rng, 1, 1, 30, d), data(rng, 1, 1, 2, d)
    plain = KVCache(1, 1, d, key_bits=3, value_bits=2)
    deb = KVCache(1, 1, d, key_bits=3, value_bits=2, debiased_values=True)
    plain.append(0, k, v)
    deb.append(0, k, v)
    np.testing.assert_allclose(deb.attend(0, q), plain.attend(0, q) / deb.value_alpha, rtol=1e-5, atol=1e-6)


def test_output_approximates_exact_attention(rng):
    """Sanity: with 8-bit keys and values the compressed output is close to exact attention."""
    d, t = 64, 200
    k, v, q = data(rng, 1, 2, t, d), data(rng, 1, 2, t, d), data(rng, 1, 4, 4, d)
    cache = KVCache(1, 2, d, key_bits=8, value_bits=8)
    cache.append(0, k, v)
    exact = plain_attention(q, k, v, scale=1 / 8, causal=True)
    rel = np.linalg.norm(cache.attend(0, q) - exact, axis=-1) / np.linalg.norm(exact, axis=-1)
    assert rel.max() < 0.02
