"""Per-layer orchestration of the float16 tier and the compressed tier (docs/kv-cache.md §7).

``KVCache`` hands every call here when any of ``residual_length``, ``sink_tokens``,
``outliers`` or ``layer_bits`` is used. Each layer is a :class:`~.window.Float16Tier` plus a
compressed tier holding positions S .. e(T − 1) − 1 (window.py):

* :class:`PlainCodes` — one one-layer ``KVCache`` with the layer's bit widths; attention by
  the backend's ``attend`` (reference, numba or CUDA) with ``return_lse``;
* :class:`~.outliers.SplitCodes` — the outlier split;
* None — a float16 layer (layers.py).

``attend`` computes the two partial attentions — float16 rows with the per-query visibility
of window.py, codes with the plain causal rule over the compressed positions — and merges
them exactly with :func:`tqref.reference.attention.merge_partials` (softmax over the union).

Appends validate and quantize everything before storing anything, so a rejected call leaves
the cache unchanged. Storage: :meth:`Tiered.stored` names every persistent array;
``memory_usage`` is the sum of their bytes (codes, norms, channel choice, float16 sinks and
window), ``capacity_bytes`` adds spare capacity and the float16 rows kept for the last
append's queries.
"""

from __future__ import annotations


import numpy as np

from .. import _validate as v
from ..reference import attention
from ..reference.plan import BITS
from . import layers as layers_mod
from . import outliers as outliers_mod
from . import window as win

_F32 = np.float32


class PlainCodes:
    """The compressed tier of one layer without a split: a one-layer KVCache."""

    calibration_tokens = 0

    def __init__(self, cache):
        self.cache = cache

    @property
    def seq(self) -> int:
        return self.cache._layers[0].seq

    def quantize(self, k32, v32, calibration=None) -> dict:
        return self.cache._quantize(k32, v32)

    def commit(self, new: dict, batch: int) -> None:
        self.cache._commit(0, new, batch)

    def stored(self) -> dict:
        return self.cache.stored(0)

    def reconstruct(self):
        return self.cache.dequantize(0)

    def memory_usage(self) -> int:
        return self.cache.memory_usage()

    def capacity_bytes(self) -> int:
        return self.cache.capacity_bytes()

    def attend(self, q32, *, scale: float, causal: bool, group_size: int):
        return self.cache.attend(0, q32, scale=scale, causal=causal, return_lse=True)


class _Layer:
    __slots__ = ("tier", "codes", "seq", "ready_from")

    def __init__(self, tier, codes, ready_from):
        self.tier, self.codes, self.seq, self.ready_from = tier, codes, 0, ready_from


class Tiered:
    """The options' state for one ``KVCache`` (``cache``: validation, batch size, options)."""

    def __init__(self, cache, *, residual_length, sink_tokens, outliers, layer_bits):
        self.cache = cache
        self.window = v.check_int("residual_length", residual_length, 0)
        self.sinks = v.check_int("sink_tokens", sink_tokens, 0)
        d = cache.head_dim
        kc = cache.key_config
        self.spec = outliers_mod.resolve(outliers, d, key_bits=kc.bits, value_bits=cache.value_bits,
                                         norm_dtype=kc.norm_dtype, mode=cache.mode)
        extra = 0
        if self.spec is not None:
            extra = self.spec.extra_bits
            for name in ("debiased", "debiased_values"):
                if getattr(cache, name):
                    raise ValueError(f"{name}: expected False with outliers (the two parts have different "
                                     f"shrinkage α), got True")
        key_range = BITS[cache.mode]
        self.layer_plan = layers_mod.resolve(layer_bits, cache.num_layers, kc.bits, cache.value_bits, key_range)
        for layer, bits in enumerate(self.layer_plan):
            if bits != layers_mod.FLOAT16 and max(bits) + extra > 8:
                raise ValueError(f"outliers: expected bit widths <= {8 - extra} so that outlier channels "
                                 f"(+{extra} bits) stay <= 8, got (key_bits, value_bits) = {bits} in layer {layer}")
        self._inner = dict(mode=cache.mode, seed=kc.seed, debiased=cache.debiased,
                           debiased_values=cache.debiased_values, projection=kc.projection,
                           rotation=kc.rotation, codebook=kc.codebook, norm_dtype=kc.norm_dtype,
                           backend=cache.backend.name)
        self.reset()

    def describe(self) -> str:
        parts = [f"residual_length={self.window}", f"sink_tokens={self.sinks}",
                 f"outliers={self.spec!r}"]
        plain = (self.cache.key_bits, self.cache.value_bits)
        special = {i: b for i, b in enumerate(self.layer_plan) if b != plain}
        return ", ".join(parts + [f"layer_bits={special!r}"])

    # ------------------------------------------------------------------ state
    def _make_cache(self, dim: int, key_bits: int, value_bits: int):
        from ..cache import KVCache  # the plain cache (no options): no recursion
        return KVCache(1, self.cache.num_kv_heads, dim, key_bits=key_bits, value_bits=value_bits, **self._inner)

    def _make_layer(self, bits) -> _Layer:
        d = self.cache.head_dim
        tier = win.Float16Tier(self.sinks, d)
        if bits == layers_mod.FLOAT16:
            return _Layer(tier, None, None)
        if self.spec is None:
            codes = PlainCodes(self._make_cache(d, *bits))
        else:
            codes = outliers_mod.SplitCodes(self.spec, d, bits[0], bits[1], self._make_cache)
        n = codes.calibration_tokens
        return _Layer(tier, codes, self.sinks + n - 1 if n else 0)

    def reset(self) -> None:
        self._layers = [self._make_layer(bits) for bits in self.layer_plan]

    def _ends(self, lay: _Layer, p):
        return win.compression_end(p, sinks=self.sinks, window=self.window, ready_from=lay.ready_from)

    def _compressed_end(self, lay: _Layer) -> int:
        return self.sinks + (lay.codes.seq if lay.codes is not None else 0)

    # ------------------------------------------------------------------ writing
    def append(self, layer, k, v_) -> None:
        layer = self.cache._check_layer(layer)
        k, v_, _, _ = self.cache._check_kv(k, v_)
        d = self.cache.head_dim
        k32, v32 = v.as_float32_rows("k", k, d), v.as_float32_rows("v", v_, d)
        win.check_float16("k", k32)
        win.check_float16("v", v32)
        k16, v16 = k32.astype(np.float16), v32.astype(np.float16)
        lay = self._layers[layer]
        t0, n = lay.seq, k16.shape[2]
        t1 = t0 + n
        e0 = self._compressed_end(lay)
        e1 = max(e0, min(int(self._ends(lay, t1 - 1)), t1))
        new = None
        if lay.codes is not None and e1 > e0:
            calibration = None
            if lay.codes.calibration_tokens and e0 == self.sinks:
                stop = self.sinks + lay.codes.calibration_tokens
                ck, cv = lay.tier.rows(self.sinks, stop, k16, v16, t0)
                calibration = lay.codes.calibrate(ck.astype(_F32), cv.astype(_F32))
            rk, rv = lay.tier.rows(e0, e1, k16, v16, t0)
            new = lay.codes.quantize(rk.astype(_F32), rv.astype(_F32), calibration)
        # everything validated and quantized: store
        batch = k16.shape[0]
        if new is not None:
            lay.codes.commit(new, batch)
        lay.tier.advance(k16, v16, t0, min(int(self._ends(lay, t0)), e1))
        lay.seq = t1
        self.cache.batch_size = batch

    # ------------------------------------------------------------------ reading
    def attend(self, layer, q, *, scale=None, causal=True, return_lse=False):
        layer = self.cache._check_layer(layer)
        lay = self._layers[layer]
        if lay.seq == 0:
            raise ValueError(f"layer: expected a layer holding cached positions, got layer {layer} with seq_len 0")
        q32, _, group = self.cache._check_q(q, self.cache.batch_size)
        scale = v.softmax_scale(scale, self.cache.head_dim)
        causal, return_lse = v.check_flag("causal", causal), v.check_flag("return_lse", return_lse)
        t_len, lq = lay.seq, q32.shape[2]
        if causal and lq > t_len:
            raise ValueError(f"q: expected at most seq_len={t_len} query positions with causal=True "
                             f"(queries are the last positions of the layer), got {lq}")
        e_now = self._compressed_end(lay)
        if causal:
            positions = t_len - lq + np.arange(lq)
            ends = self._ends(lay, positions)
            self._check_held(lay, positions, ends, lq)
        else:
            positions, ends = np.full(lq, t_len - 1), np.full(lq, e_now)
        rows, keys16, values16 = lay.tier.all_rows((q32.shape[0], self.cache.num_kv_heads, self.cache.head_dim))
        mask = win.visible_float16(positions, rows, sinks=self.sinks, ends=ends, causal=bool(causal))
        out, lse = win.attend_float16(q32, keys16, values16, mask, scale=float(scale), group_size=group)
        if lay.codes is not None and lay.codes.seq:
            first = int(np.count_nonzero(ends <= self.sinks)) if causal else 0
            if first < lq:
                part, part_lse = lay.codes.attend(q32[:, :, first:], scale=float(scale), causal=bool(causal),
                                                  group_size=group)
                merged, merged_lse = attention.merge_partials([out[:, :, first:], part],
                                                              [lse[:, :, first:], part_lse])
                out, lse = out.copy(), lse.copy()
                out[:, :, first:], lse[:, :, first:] = merged, merged_lse
        return (out, lse) if return_lse else out

    def _check_held(self, lay: _Layer, positions, ends, lq: int) -> None:
        """Every causal query's window rows must still be held (window.py, "One pass")."""
        start = lay.tier.held_start
        missing = (positions >= self.sinks) & (ends <= positions) & (ends < start)
        if missing.any():
            allowed = lq - 1 - int(np.flatnonzero(missing)[-1])
            raise ValueError(f"q: expected at most {allowed} causal query positions (the float16 rows query "
                             f"position {int(positions[missing][0])} needs, from {int(ends[missing][0])}, were "
                             f"released by the last append, which holds them from {start}), got {lq}")

    def dequantize(self, layer):
        """(K, V) float32 (B, H, seq_len, d) as ``layer`` holds them now — what a decode query
        sees: float16 sinks and window, reconstructed codes in between (mse stage in prod mode;
        the QJL part is a logit bias, as in KVCache.dequantize)."""
        layer = self.cache._check_layer(layer)
        lay = self._layers[layer]
        if lay.seq == 0:
            raise ValueError(f"layer: expected a layer holding cached positions, got layer {layer} with seq_len 0")
        d = self.cache.head_dim
        positions, keys16, values16 = lay.tier.all_rows((self.cache.batch_size, self.cache.num_kv_heads, d))
        shape = (self.cache.batch_size, self.cache.num_kv_heads, lay.seq, d)
        keys, values = np.zeros(shape, _F32), np.zeros(shape, _F32)
        e_now = self._compressed_end(lay)
        if e_now > self.sinks:
            keys[:, :, self.sinks : e_now], values[:, :, self.sinks : e_now] = lay.codes.reconstruct()
        keep = (positions < self.sinks) | (positions >= e_now)
        keys[:, :, positions[keep]] = keys16[:, :, keep]
        values[:, :, positions[keep]] = values16[:, :, keep]
        return keys, values

    def seq_len(self, layer) -> int:
        return self._layers[self.cache._check_layer(layer)].seq

    def stored(self, layer) -> dict:
        """Persistent arrays of ``layer``: float16 sinks and window, then the compressed tier's."""
        lay = self._layers[self.cache._check_layer(layer)]
        out = {}
        tier = lay.tier
        if tier.sink_k.length:
            out["sink_keys"], out["sink_values"] = tier.sink_k.view(), tier.sink_v.view()
        skip = max(0, self._compressed_end(lay) - tier.held_start)
        if tier.held_k.length > skip:
            out["window_keys"] = tier.held_k.view()[:, :, skip:]
            out["window_values"] = tier.held_v.view()[:, :, skip:]
        if lay.codes is not None:
            out.update(lay.codes.stored())
        return out

    def memory_usage(self) -> int:
        return sum(a.nbytes for layer in range(len(self._layers)) for a in self.stored(layer).values())

    def capacity_bytes(self) -> int:
        return sum(lay.tier.capacity_bytes() + (lay.codes.capacity_bytes() if lay.codes is not None else 0)
                   for lay in self._layers)
