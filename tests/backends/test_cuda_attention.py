"""Fused attention over packed KV codes against reference/attention.py (float outputs:
tqref.tolerance's rule, the reference's error measured against tests/reference64.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reference64
from _cuda_support import host, load_backend

C = load_backend()

from tqref.reference import attention, mse, prod  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402


def _cache(rng, B, H, T, d, key_kind, kbits, vbits):
    kplan = make_plan(Config(key_kind, d, kbits, seed=5, projection="gaussian" if key_kind == "prod" else None))
    vplan = make_plan(Config("mse", d, vbits, seed=5))
    keys = rng.standard_normal((B * H * T, d)).astype(np.float32)
    vals = rng.standard_normal((B * H * T, d)).astype(np.float32)
    signs = gammas = None
    if key_kind == "prod":
        kidx, knorm, signs, gammas = prod.quantize(keys, kplan)
        signs = signs.reshape(B, H, T, -1)
        gammas = gammas.reshape(B, H, T)
    else:
        kidx, knorm = mse.quantize(keys, kplan)
    vidx, vnorm = mse.quantize(vals, vplan)
    return (kplan, vplan, kidx.reshape(B, H, T, -1), knorm.reshape(B, H, T), vidx.reshape(B, H, T, -1),
            vnorm.reshape(B, H, T), signs, gammas)


@pytest.mark.parametrize(
    "key_kind,G,lq,causal,T,chunk",
    [
        ("mse", 1, 1, False, 75, 32),  # decode, 3 splits with a partial last one
        ("mse", 2, 3, True, 40, 16),  # GQA, several queries, causal mask
        ("prod", 2, 1, False, 33, 32),  # QJL logit correction
    ],
)
def test_attend_matches_reference(key_kind, G, lq, causal, T, chunk):
    B, H, d = 1, 2, 32
    rng = np.random.default_rng(T)
    kplan, vplan, kidx, knorm, vidx, vnorm, signs, gammas = _cache(rng, B, H, T, d, key_kind, 3, 3)
    q = rng.standard_normal((B, H * G, lq, d)).astype(np.float32)
    kw = dict(key_signs=signs, key_gammas=gammas, scale=1.0 / np.sqrt(d), value_scale=1.25,
              group_size=G, causal=causal)
    got = host(C.attend_device(q, kidx, knorm, vidx, vnorm, kplan, vplan, chunk=chunk, threads=64, **kw))
    want = attention.attend(q, kidx, knorm, vidx, vnorm, kplan, vplan, **kw)
    assert got.shape == want.shape
    want64, _ = reference64.attend(q, kidx, knorm, vidx, vnorm, kplan, vplan, **kw)
    reference64.within(got, want, want64, "cuda attention")


@pytest.mark.parametrize("start,lag,causal", [(5, 0, False), (3, 4, True), (0, 38, True)])
def test_attend_partial_range_and_lse(start, lag, causal):
    """start/lag/return_lse as the reference: splits begin at start, empty queries get 0 and −inf."""
    B, H, d, T, G, lq = 1, 2, 32, 40, 2, 3
    rng = np.random.default_rng(start + lag)
    kplan, vplan, kidx, knorm, vidx, vnorm, _, _ = _cache(rng, B, H, T, d, "mse", 3, 2)
    q = rng.standard_normal((B, H * G, lq, d)).astype(np.float32)
    kw = dict(scale=0.25, group_size=G, causal=causal, start=start, lag=lag, return_lse=True)
    got, got_lse = C.attend_device(q, kidx, knorm, vidx, vnorm, kplan, vplan, chunk=16, threads=64, **kw)
    got, got_lse = host(got), host(got_lse)
    want, want_lse = attention.attend(q, kidx, knorm, vidx, vnorm, kplan, vplan, **kw)
    kw.pop("return_lse")
    want64, lse64 = reference64.attend(q, kidx, knorm, vidx, vnorm, kplan, vplan, **kw)
    reference64.within(got_lse, want_lse, lse64, "cuda lse")  # −inf (an empty range) only matches −inf
    reference64.within(got, want, want64, "cuda attention")
