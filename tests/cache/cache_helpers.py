"""Helpers for the KV-cache tests: data, a plain NumPy attention, snapshots, the float tolerance."""

from __future__ import annotations

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def data(rng, batch, heads, seq, dim, spread=1.0, dtype=np.float32):
    return (rng.standard_normal((batch, heads, seq, dim)) * spread).astype(dtype)


def plain_attention(q, k, v, *, scale, causal, bias=None):
    """Softmax attention written with loops, float64: q (B, A, Lq, d), k/v (B, H, T, d).

    Attention head a reads kv head a // (A / H); query i is at absolute position T − Lq + i.
    ``bias`` (B, A, Lq, T) is added to q·k before scaling (the seed's logit-bias units).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b_, a_, lq, _ = q.shape
    h, t_len = k.shape[1], k.shape[2]
    group = a_ // h
    out = np.zeros(q.shape)
    for b in range(b_):
        for a in range(a_):
            kv = a // group
            for i in range(lq):
                visible = t_len - lq + i + 1 if (causal and lq > 1) else t_len
                logits = k[b, kv, :visible] @ q[b, a, i]
                if bias is not None:
                    logits = logits + np.asarray(bias, np.float64)[b, a, i, :visible]
                logits = logits * scale
                w = np.exp(logits - logits.max())
                w /= w.sum()
                out[b, a, i] = w @ v[b, kv, :visible]
    return out


def tolerance(cache, q, k, v, scale):
    """Allowed |attend − exact attention over the cache's own dequantized K, V| (max abs).

    Float error model: every logit carries a relative error of a few ulps of its largest
    possible magnitude L = scale·max‖q‖·max‖k‖ (÷α when debiased); a logit error δ moves the
    output by at most ~2δ·max‖v‖, and the value sums add ~ulp·max‖v‖. So the unit is
    eps32·(1 + L)·max‖v̂‖. Measured over 150 random configurations (mse/prod, bits 2–4,
    d 2–128, T ≤ 400, |x| up to 10): the error never exceeded 0.17 units; we allow 1 unit.
    """
    L = scale * np.linalg.norm(np.asarray(q, np.float64), axis=-1).max() * \
        np.linalg.norm(np.asarray(k, np.float64), axis=-1).max()
    if getattr(cache, "debiased", False):
        L /= cache.key_alpha
    return EPS32 * (1.0 + L) * np.linalg.norm(np.asarray(v, np.float64), axis=-1).max()


def snapshot(cache):
    """Everything observable about the cache's state, copied."""
    layers = []
    for layer in range(cache.num_layers):
        stored = {n: a.copy() for n, a in cache.stored(layer).items()}
        layers.append((cache.seq_len(layer), cache.capacity(layer), stored))
    return cache.batch_size, cache.memory_usage(), cache.capacity_bytes(), layers


def assert_same_state(a, b):
    assert a[:3] == b[:3]
    for (sa, ca, da), (sb, cb, db) in zip(a[3], b[3]):
        assert (sa, ca) == (sb, cb)
        assert da.keys() == db.keys()
        for name in da:
            assert da[name].dtype == db[name].dtype
            assert da[name].tobytes() == db[name].tobytes(), name


def default_scale(d):
    return 1.0 / math.sqrt(d)
