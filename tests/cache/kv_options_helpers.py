"""Independent models of the tqref/kv options for the tests: which representation each query
sees, the brute-force attention over it, and the byte count memory_usage must report."""

from __future__ import annotations

import numpy as np

from tqref.kv import outliers as om
from tqref.cache import KVCache

from cache_helpers import EPS32, plain_attention


def ends(p, *, sinks, window, ready_from):
    """e(p) written out (docs/kv-cache.md §7.1): first float16 non-sink position at time p."""
    if ready_from is None or p < ready_from:
        return sinks
    return max(sinks, p - window + 1)


def plain_kwargs(cache) -> dict:
    c = cache.key_config
    return dict(mode=cache.mode, seed=c.seed, projection=c.projection, rotation=c.rotation, codebook=c.codebook,
                norm_dtype=c.norm_dtype, debiased=cache.debiased, debiased_values=cache.debiased_values)


def reconstruction(cache, layer, k16, v16, bits, spec, sinks):
    """What the compressed tier reconstructs for every position ≥ sinks, rebuilt from plain
    KVCaches (the codes of a float16-rounded token do not depend on the tier around it)."""
    h, d = cache.num_kv_heads, cache.head_dim
    kw = plain_kwargs(cache)
    k32, v32 = k16[:, :, sinks:].astype(np.float32), v16[:, :, sinks:].astype(np.float32)
    if spec is None:
        plain = KVCache(1, h, d, key_bits=bits[0], value_bits=bits[1], **kw)
        plain.append(0, k32, v32)
        keys, values = plain.dequantize(0)
        return keys, values, (plain if cache.mode == "prod" else None)  # prod: QJL part as logit bias
    count = spec.count
    if spec.selection == "static":
        n = spec.calibration_tokens
        k_order = om.static_order(k32[:, :, :n], count)[None, :, None, :]
        v_order = om.static_order(v32[:, :, :n], count)[None, :, None, :]
    else:
        k_order, v_order = om.order_of(om.per_token_mask(k32, count)), om.order_of(om.per_token_mask(v32, count))
    (ko, kr), (vo, vr) = om.split(k32, k_order, count), om.split(v32, v_order, count)
    out = KVCache(1, h, count, key_bits=bits[0] + spec.extra_bits, value_bits=bits[1] + spec.extra_bits, **kw)
    rest = KVCache(1, h, d - count, key_bits=bits[0], value_bits=bits[1], **kw)
    out.append(0, ko, vo)
    rest.append(0, kr, vr)
    (ko_h, vo_h), (kr_h, vr_h) = out.dequantize(0), rest.dequantize(0)
    return om.merge(ko_h, kr_h, k_order), om.merge(vo_h, vr_h, v_order), None


def representation(cache, layer, k16, v16, bits, spec, sinks, window):
    """(ready_from, recon) of a layer holding k16, v16 (appended whole): the first position
    whose codes exist (None for a float16 layer) and ``reconstruction`` (None when no position
    is compressed yet), the arguments ``brute_force`` takes."""
    if bits == "float16":
        return None, None
    n = spec.calibration_tokens if spec is not None and spec.selection == "static" else 0
    ready_from = sinks + n - 1 if n else 0
    compressed = ends(k16.shape[2] - 1, sinks=sinks, window=window, ready_from=ready_from) - sinks
    return ready_from, (reconstruction(cache, layer, k16, v16, bits, spec, sinks) if compressed > 0 else None)


def options_attention64(cache, layer, q, k, v):
    """float64 attention of ``cache.attend(layer, q)`` (default scale) for a cache with the
    tqref/kv options that holds k, v: brute force over the representation each query sees."""
    tiers = cache._tiers
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    bits, sinks, window = tiers.layer_plan[layer], tiers.sinks, tiers.window
    ready_from, recon = representation(cache, layer, k16, v16, bits, tiers.spec, sinks, window)
    return brute_force(q, k16, v16, recon, sinks=sinks, window=window, ready_from=ready_from,
                       scale=1.0 / np.sqrt(cache.head_dim))


def brute_force(q, k16, v16, recon, *, sinks, window, ready_from, scale):
    """Per query p (the last Lq positions), exact float64 attention over keys 0..p, each float16
    if t < S or t ≥ e(p), else its reconstruction (``recon`` = (K̂, V̂, plain prod cache or None)
    for positions ≥ S)."""
    b, a, lq, d = q.shape
    t_len = k16.shape[2]
    out = np.zeros(q.shape)
    for i in range(lq):
        p = t_len - lq + i
        e = ends(p, sinks=sinks, window=window, ready_from=ready_from)
        keys = k16[:, :, : p + 1].astype(np.float64)
        values = v16[:, :, : p + 1].astype(np.float64)
        bias = np.zeros((b, a, 1, p + 1))
        if recon is not None and e > sinks:
            keys[:, :, sinks:e] = recon[0][:, :, : e - sinks]
            values[:, :, sinks:e] = recon[1][:, :, : e - sinks]
            if recon[2] is not None:
                full = recon[2].logit_bias(0, q[:, :, i : i + 1])  # (B, A, 1, T − S)
                bias[..., sinks:e] = full[..., : e - sinks]
        out[:, :, i : i + 1] = plain_attention(q[:, :, i : i + 1], keys, values, scale=scale, causal=False,
                                               bias=bias)
    return out


def tolerance(q, k, v, scale):
    """The float unit of cache_helpers.tolerance over raw inputs (the float16 and reconstructed
    norms are within a few percent of them), times 4 for the extra merge."""
    L = scale * np.linalg.norm(q.astype(np.float64), axis=-1).max() * \
        np.linalg.norm(k.astype(np.float64), axis=-1).max()
    return 4 * EPS32 * (1.0 + 1.5 * L) * 1.5 * np.linalg.norm(v.astype(np.float64), axis=-1).max()


def expected_bytes(*, batch, heads, dim, t_len, bits, spec, sinks, window, norm_bytes, mode):
    """memory_usage of one layer written out from the layout (docs/kv-cache.md §7.4)."""
    fp16_row = 2 * dim * 2  # key + value, float16
    sink_rows = min(sinks, t_len)
    if bits == "float16":
        return batch * heads * t_len * fp16_row
    n = spec.calibration_tokens if spec is not None and spec.selection == "static" else 0
    ready = n == 0 or t_len - 1 >= sinks + n - 1
    compressed = max(0, t_len - window - sinks) if ready else 0
    window_rows = t_len - sink_rows - compressed

    def packed(count, b):
        return (count * b + 7) // 8

    kb, vb = bits
    if spec is None:
        per = packed(dim, kb - (mode == "prod")) + packed(dim, vb) + 2 * norm_bytes
        if mode == "prod":
            per += packed(dim, 1) + norm_bytes
    else:
        o, e = spec.count, spec.extra_bits
        per = packed(o, kb + e) + packed(dim - o, kb) + packed(o, vb + e) + packed(dim - o, vb) + 4 * norm_bytes
        if spec.selection == "per-token":
            per += 2 * packed(dim, 1)
    total = batch * heads * ((sink_rows + window_rows) * fp16_row + compressed * per)
    if spec is not None and spec.selection == "static" and compressed:
        total += 2 * heads * o  # key and value channel sets, uint8
    return total
