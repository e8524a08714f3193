"""The paper's outlier-channel split of keys and values (docs/kv-cache.md §7.2).

TurboQuant's KV experiments (paper §4.3, the 2.5- and 3.5-bit settings) split each head's
d channels into ``count`` outlier channels (d/4: 32 of 128) and the d − count others. The
outlier part gets ``extra_bits`` (1) more bits. Each part is rotated and quantized on its
own, with its own norm, by TurboQuant_mse at its own dimension:

    x  →  (x_O ∈ R^{d_o}, x_R ∈ R^{d − d_o})  →  codes(x_O, b + 1), codes(x_R, b)
    ⟨q, x̂⟩ = ⟨q_O, x̂_O⟩ + ⟨q_R, x̂_R⟩

**Bit accounting** per vector: d_o·(b + 1) + (d − d_o)·b index bits + 2 norms. With
d_o = d/4 that is b + 1/4 bits of indices per coordinate: the paper's "2.5 bits" is 2.25
bits of indices (32 × 3 + 96 × 2 = 288 bits at d = 128) plus two float16 norms (32 bits =
0.25 bit/coordinate); "3.5 bits" is 3.25 + 0.25. At d = 64 the two norms cost 0.5
bit/coordinate, so the same split is 2.75 and 3.75 bits.

**Selection rule** (``selection``):

* ``"static"`` — one set per (layer, head) for keys and one for values, calibrated from data:
  the ``count`` channels of largest RMS over the first ``calibration_tokens`` compressible
  tokens (after the sinks) of that layer, over the batch (ties: the lower channel). Until
  those tokens have arrived the layer keeps them in float16 (window.py: the compressed tier
  is not ready). The set costs ``count`` small integers per head and layer, nothing per token.
* ``"per-token"`` — each vector's own ``count`` channels of largest |x| (ties: the lower
  channel). The choice must be stored with the vector: a d-bit mask, 1 bit per coordinate
  (cheaper than count·⌈log2 d⌉ bits whenever count > d/⌈log2 d⌉; the information-theoretic
  floor log2 C(d, count) is 0.78 bit/coordinate at 32 of 128). The query must then be split
  per key, so attention over per-token splits reconstructs each key (there is no per-head
  query rotation to share).

Within a part the channels keep their original order (ascending channel index).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import _validate as v
from ..reference import attention, estimators, packing
from .rows import Rows

SELECTIONS = ("static", "per-token")
_F32 = np.float32


@dataclasses.dataclass(frozen=True)
class OutlierSpec:
    """How to split channels: ``count`` outlier channels per head (None: head_dim // 4) get
    ``extra_bits`` more bits; ``selection`` "static" (calibrated from the first
    ``calibration_tokens`` tokens of each layer) or "per-token" (module docstring)."""

    count: int | None = None
    extra_bits: int = 1
    selection: str = "static"
    calibration_tokens: int = 64

    def resolve(self, head_dim: int) -> "OutlierSpec":
        """Validated copy with ``count`` filled in for ``head_dim``."""
        count = head_dim // 4 if self.count is None else self.count
        if head_dim < 4:
            raise ValueError(f"outliers: expected head_dim >= 4 (both parts need >= 2 channels), got {head_dim}")
        count = v.check_int("outliers.count", count, 2, head_dim - 2)
        extra = v.check_int("outliers.extra_bits", self.extra_bits, 0, 7)
        v.check_choice("outliers.selection", self.selection, SELECTIONS)
        calib = v.check_int("outliers.calibration_tokens", self.calibration_tokens, 1)
        return OutlierSpec(count, extra, self.selection, calib)


#: the paper's two KV settings, as KVCache keyword arguments (d/4 outlier channels, +1 bit, float16 norms)
PRESETS = {
    "paper-2.5": dict(key_bits=2, value_bits=2, norm_dtype="float16", outliers="paper-2.5"),
    "paper-3.5": dict(key_bits=3, value_bits=3, norm_dtype="float16", outliers="paper-3.5"),
}


def resolve(outliers, head_dim: int, *, key_bits: int, value_bits: int, norm_dtype: str, mode: str):
    """``outliers`` argument of KVCache -> validated :class:`OutlierSpec` or None."""
    if outliers is None:
        return None
    if isinstance(outliers, str):
        v.check_choice("outliers", outliers, tuple(PRESETS))
        preset = PRESETS[outliers]
        actual = dict(key_bits=key_bits, value_bits=value_bits, norm_dtype=norm_dtype)
        wrong = {k: val for k, val in actual.items() if preset[k] != val}
        if wrong:
            want = ", ".join(f"{k}={preset[k]!r}" for k in actual)
            got = ", ".join(f"{k}={val!r}" for k, val in wrong.items())
            raise ValueError(f"outliers: the preset {outliers!r} means {want} (tqref.kv.PRESETS[{outliers!r}] "
                             f"holds all of them), got {got}")
        outliers = OutlierSpec()
    if not isinstance(outliers, OutlierSpec):
        raise ValueError(f"outliers: expected None, one of {tuple(PRESETS)} or an OutlierSpec, got {outliers!r}")
    if mode != "mse":
        raise ValueError(f"outliers: expected mode='mse' (the split quantizes each part with TurboQuant_mse), "
                         f"got mode={mode!r}")
    return outliers.resolve(head_dim)


def static_order(x32: np.ndarray, count: int) -> np.ndarray:
    """Calibrated channel order per head: int64 (H, d), the ``count`` channels of largest RMS
    over batch and tokens of x32 float32 (B, H, N, d) first, then the rest, each ascending."""
    energy = np.sum(np.square(x32.astype(np.float64)), axis=(0, 2))  # (H, d): same ranking as RMS
    top = np.argsort(-energy, axis=-1, kind="stable")[:, :count]
    mask = np.zeros(energy.shape, bool)
    np.put_along_axis(mask, top, True, axis=-1)
    return order_of(mask)


def per_token_mask(x32: np.ndarray, count: int) -> np.ndarray:
    """bool (..., d): each vector's ``count`` channels of largest |x| (ties: lower channel)."""
    top = np.argsort(-np.abs(x32), axis=-1, kind="stable")[..., :count]
    mask = np.zeros(x32.shape, bool)
    np.put_along_axis(mask, top, True, axis=-1)
    return mask


def order_of(mask: np.ndarray) -> np.ndarray:
    """int64 (..., d): the True channels ascending, then the False ones ascending."""
    return np.argsort(~mask, axis=-1, kind="stable")


def split(x: np.ndarray, order: np.ndarray, count: int):
    """(outlier part (..., count), rest (..., d − count)) of x along ``order`` (broadcast)."""
    order = np.broadcast_to(order, x.shape)
    parts = np.take_along_axis(x, order, axis=-1)
    return parts[..., :count], parts[..., count:]


def merge(outlier_part: np.ndarray, rest: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split`: channels back in place, same dtype."""
    parts = np.concatenate([outlier_part, rest], axis=-1)
    out = np.empty_like(parts)
    np.put_along_axis(out, np.broadcast_to(order, parts.shape), parts, axis=-1)
    return out


def _index_dtype(d: int):
    return np.dtype(np.uint8) if d <= 256 else np.dtype(np.uint16)


class SplitCodes:
    """The compressed tier of one layer under an outlier split: two one-layer KVCaches (the
    outlier part at bits + extra_bits, the rest at bits) plus the channel choice.

    make_cache(dim, key_bits, value_bits) builds a one-layer KVCache with the outer cache's
    options (seed, rotation, codebook, norm dtype, backend).
    """

    def __init__(self, spec: OutlierSpec, head_dim: int, key_bits: int, value_bits: int, make_cache):
        self.spec, self.head_dim, self.count = spec, head_dim, spec.count
        self.outlier = make_cache(spec.count, key_bits + spec.extra_bits, value_bits + spec.extra_bits)
        self.rest = make_cache(head_dim - spec.count, key_bits, value_bits)
        self.static = spec.selection == "static"
        self.calibration_tokens = spec.calibration_tokens if self.static else 0
        self.key_order = self.value_order = None  # static: int64 (H, d)
        mask_row = (packing.packed_size(head_dim, 1),)
        self.key_masks, self.value_masks = Rows(np.uint8, mask_row), Rows(np.uint8, mask_row)

    @property
    def seq(self) -> int:
        return self.rest._layers[0].seq

    def calibrate(self, k32, v32) -> tuple:
        """Static orders from the first ``calibration_tokens`` compressible tokens (B, H, N, d)."""
        return static_order(k32, self.count), static_order(v32, self.count)

    def quantize(self, k32, v32, calibration=None) -> dict:
        """Codes of new positions (nothing stored): per-part KVCache codes and the choice."""
        key_order, value_order = calibration or (self.key_order, self.value_order)
        new = {}
        if self.static:
            new["calibration"] = (key_order, value_order)
            key_order, value_order = key_order[None, :, None, :], value_order[None, :, None, :]
        else:
            k_mask, v_mask = per_token_mask(k32, self.count), per_token_mask(v32, self.count)
            new["key_masks"] = packing.pack_bits(k_mask.astype(np.uint8), 1)
            new["value_masks"] = packing.pack_bits(v_mask.astype(np.uint8), 1)
            key_order, value_order = order_of(k_mask), order_of(v_mask)
        k_o, k_r = split(k32, key_order, self.count)
        v_o, v_r = split(v32, value_order, self.count)
        new["outlier"] = self.outlier._quantize(np.ascontiguousarray(k_o), np.ascontiguousarray(v_o))
        new["rest"] = self.rest._quantize(np.ascontiguousarray(k_r), np.ascontiguousarray(v_r))
        return new

    def commit(self, new: dict, batch: int) -> None:
        if self.static:
            self.key_order, self.value_order = new["calibration"]
        else:
            self.key_masks.extend(new["key_masks"])
            self.value_masks.extend(new["value_masks"])
        self.outlier._commit(0, new["outlier"], batch)
        self.rest._commit(0, new["rest"], batch)

    def stored(self) -> dict:
        out = {f"outlier.{n}": a for n, a in self.outlier.stored(0).items()}
        out.update({f"rest.{n}": a for n, a in self.rest.stored(0).items()})
        if self.static:
            if self.key_order is not None:
                dt = _index_dtype(self.head_dim)
                out["key_channels"] = self.key_order[:, : self.count].astype(dt)
                out["value_channels"] = self.value_order[:, : self.count].astype(dt)
        elif self.key_masks.buf is not None:
            out["key_masks"], out["value_masks"] = self.key_masks.view(), self.value_masks.view()
        return out

    def memory_usage(self) -> int:
        return sum(a.nbytes for a in self.stored().values())

    def capacity_bytes(self) -> int:
        if self.static:
            extra = sum(a.nbytes for n, a in self.stored().items() if n.endswith("_channels"))
        else:
            extra = self.key_masks.capacity_bytes() + self.value_masks.capacity_bytes()
        return self.outlier.capacity_bytes() + self.rest.capacity_bytes() + extra

    def attend(self, q32, *, scale: float, causal: bool, group_size: int):
        """Partial attention over the compressed positions: (out, lse) float32, q (B, A, Lq, d).

        Query i of Lq sees compressed positions 0 .. seq − Lq + i (causal) or all of them.
        Static: scores and value sums from the codes, per part in its rotated domain
        (reference/attention.py); per-token: over the reconstructed keys and values.
        """
        lq, t_len = q32.shape[2], self.seq
        mask = attention.visible_mask(lq, t_len, causal=causal)
        if self.static:
            scores, parts = 0, []
            for cache, sl in ((self.outlier, slice(None, self.count)), (self.rest, slice(self.count, None))):
                a = cache._f32(0)
                order = np.repeat(self.key_order[:, sl], group_size, axis=0)  # (A, d_part)
                q_part = np.take_along_axis(q32, order[None, :, None, :], axis=-1)
                q_rot = estimators.rotate_queries(q_part.reshape(-1, cache.head_dim), cache.key_plan)
                scores = scores + attention.key_scores(q_rot.reshape(q_part.shape), a["key_indices"],
                                                       a["key_norms"], cache.key_plan, group_size=group_size)
                parts.append((cache, a))
            weights, lse = attention.masked_softmax(scores * _F32(scale), None if mask.all() else mask)
            outs = []
            for cache, a in parts:
                acc = attention.accumulate_values(weights, a["value_indices"], a["value_norms"], cache.value_plan,
                                                  group_size=group_size)
                back = cache.value_plan.rotate_inverse(acc.reshape(-1, cache.head_dim))
                outs.append(back.reshape(acc.shape))
            order = np.repeat(self.value_order, group_size, axis=0)[None, :, None, :]
            return merge(outs[0], outs[1], order).astype(_F32, copy=False), lse
        keys, values = self.reconstruct()
        b, a_, _, d = q32.shape
        h = keys.shape[1]
        q = q32.reshape(b, h, group_size * lq, d)
        logits = (q @ np.swapaxes(keys, -1, -2)).reshape(b, a_, lq, t_len) * _F32(scale)
        weights, lse = attention.masked_softmax(logits, None if mask.all() else mask)
        out = weights.reshape(b, h, group_size * lq, t_len) @ values
        return out.reshape(q32.shape).astype(_F32, copy=False), lse

    def reconstruct(self):
        """Dequantized K, V float32 (B, H, T, d) with the channels back in place."""
        k_o, v_o = self.outlier._dequantize(0)
        k_r, v_r = self.rest._dequantize(0)
        if self.static:
            k_order, v_order = self.key_order[None, :, None, :], self.value_order[None, :, None, :]
        else:
            d = self.head_dim
            k_order = order_of(packing.unpack_bits(self.key_masks.view(), 1, d).astype(bool))
            v_order = order_of(packing.unpack_bits(self.value_masks.view(), 1, d).astype(bool))
        return merge(k_o, k_r, k_order), merge(v_o, v_r, v_order)


def index_bits_per_coordinate(head_dim: int, count: int, bits: int, extra_bits: int) -> float:
    """Index bits per coordinate of one split vector: (count·(b + e) + (d − count)·b) / d."""
    return (count * (bits + extra_bits) + (head_dim - count) * bits) / head_dim


def per_token_floor_bits(head_dim: int, count: int) -> float:
    """log2 C(d, count) / d: the least any per-token choice can cost per coordinate."""
    return math.log2(math.comb(head_dim, count)) / head_dim
