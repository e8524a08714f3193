"""A compressed key/value cache with the semantics of turboquant-rs's ``TqCache`` (docs/kv-cache.md).

The product layer over tqref/reference: validation, storage growth and backend dispatch
(tqref/reference holds only the normative steps and imports nothing from here).

One :class:`KVCache` holds, for each layer, the TurboQuant codes of every cached key and value
vector, and answers the two questions an inference loop asks:

* ``prefill`` / ``decode`` — append new K/V and return the whole cache dequantized (plus, in
  prod mode, the QJL logit bias), exactly the contract of the seed's ``CompressedKVCache``
  trait, so the cache can stand in for it;
* ``attend`` — softmax attention computed from the codes themselves (reference/attention.py):
  rotate the queries once, score against packed codes, softmax, accumulate values in the
  rotated domain, rotate the output back once. Dequantized keys never exist.

Modes (keys; values are always TurboQuant_mse with ``value_bits``):

* ``"mse"`` — all ``key_bits`` go to the mse stage (Algorithm 1). The plain estimator is
  shrunk by α = 1 − D (a softmax temperature); ``debiased=True`` divides scores by α.
* ``"prod"`` — the paper's Algorithm 2: ``key_bits − 1`` mse bits plus a 1-bit QJL sketch of
  the residual; the QJL term is the *logit bias*.

Seeds. One ``seed`` defines one rotation Π (shared by keys and values, every layer and every
head) and, in prod mode, one projection S. Every vector is quantized independently, so
per-head seeds would not change any vector's error distribution; one Π lets a query be
rotated once for all heads and lets the output come back with one Πᵀ, and a kernel keeps a
single S. This is what turboquant-rs does (one sign pattern, QJL seed 12345); unlike it, the
seed here really changes the rotation (bug B1 does not apply: prng.py).

Storage (per layer, allocated on the first append, B = batch, H = num_kv_heads, C = capacity):

    key_indices    uint8      (B, H, C, ceil(d·mse_bits/8))   mse-stage codes (packing.py)
    key_norms      norm_dtype (B, H, C)                        ‖k‖
    key_signs      uint8      (B, H, C, ceil(d/8))             prod only: QJL sign bits
    key_gammas     norm_dtype (B, H, C)                        prod only: γ = ‖residual‖ (unit scale)
    value_indices  uint8      (B, H, C, ceil(d·value_bits/8))
    value_norms    norm_dtype (B, H, C)

Positions 0 .. seq_len − 1 of axis 2 are in use. Growth (amortised): when an append needs
n > C slots, every array of the layer is reallocated with capacity n + max(n // 4, 128) and
the used part copied; capacity grows by at least 25 % each time, so a sequence of appends
costs O(total) copies. ``memory_usage()`` counts the used part only (exactly the bytes of
the arrays :meth:`KVCache.stored` returns); ``capacity_bytes()`` counts what is allocated.

Validation happens before anything is written: a rejected call leaves the cache unchanged.
Not thread-safe.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _rows
from . import _validate as v
from . import backends
from .reference import attention, codebook as cb, estimators, packing, qjl
from .reference import rotation as rot
from .reference.plan import BITS, MSE_BITS, NORM_DTYPES, Config, make_plan, norm_rule, unstorable_norms

MODES = ("mse", "prod")
#: growth rule: new capacity = needed + max(needed // GROWTH_DIVISOR, GROWTH_MIN)
GROWTH_MIN = 128
GROWTH_DIVISOR = 4
_F32 = np.float32


class DequantResult(NamedTuple):
    """What ``prefill`` and ``decode`` return (the seed's ``DequantResult``).

    k: (B, H, T, d) in the dtype of the appended ``k`` — the dequantized keys of the whole
       layer (mse stage; divided by α when ``debiased``).
    v: (B, H, T, d) in the dtype of the appended ``v`` — the dequantized values.
    logit_bias: prod mode: (B, A, Lq, T) in q's dtype, the QJL correction in raw dot-product
       units (not multiplied by the softmax scale), so that ``scale · (q @ kᵀ + logit_bias)``
       are the cache's logits; None in mse mode. Not causally masked.
    """

    k: np.ndarray
    v: np.ndarray
    logit_bias: np.ndarray | None


def grown_capacity(needed: int, capacity: int) -> int:
    """Capacity after making room for ``needed`` positions (unchanged if it fits)."""
    if needed <= capacity:
        return capacity
    return needed + max(needed // GROWTH_DIVISOR, GROWTH_MIN)


class _Layer:
    __slots__ = ("arrays", "seq", "capacity")

    def __init__(self):
        self.arrays: dict = {}
        self.seq = 0
        self.capacity = 0


class KVCache:
    """Compressed per-layer KV cache (TqCache semantics) with attention over the codes.

    Args:
        num_layers, num_kv_heads: ≥ 1. head_dim: ≥ 2 (any value; non powers of two use the
            overlapping-block Hadamard rotation).
        key_bits: total bits per key coordinate — 1..8 in mse mode, 2..9 in prod mode
            (key_bits − 1 mse bits + 1 QJL bit).
        value_bits: 1..8 (values are always TurboQuant_mse).
        mode: "mse" or "prod".
        seed: one rotation (and projection) for the whole cache; see the module docstring.
        debiased: mse mode only — divide key scores by α_k (unbiased inner products).
        debiased_values: divide the value reconstruction by α_v (unbiased values; see
            docs/kv-cache.md for when this lowers the output error).
        projection: prod mode only — "gaussian" (paper, the default), "orthogonal" or
            "rademacher" (qjl.py).
        rotation: "hadamard" (default) or "haar". codebook: "beta" or "gaussian".
        norm_dtype: "float32" (default) or "float16" for the stored norms and γ.
        backend: backend name for quantization and attention ("reference", "numba", ...).
        residual_length, sink_tokens, outliers, layer_bits: the float16 residual window and
            sink tokens, the paper's outlier-channel split and per-layer bit widths
            (tqref/kv, docs/kv-cache.md §7). With any of them, ``append``/``attend``/
            ``stored``/``memory_usage`` go through :class:`tqref.kv.tiered.Tiered`, and the
            dequantizing calls (prefill, decode, dequantize, logit_bias) are not available.
    """

    def __init__(self, num_layers, num_kv_heads, head_dim, *, key_bits, value_bits, mode="mse", seed=0,
                 debiased=False, debiased_values=False, projection=None, rotation="hadamard",
                 codebook="beta", norm_dtype="float32", backend="reference", residual_length=0, sink_tokens=0,
                 outliers=None, layer_bits=None):
        self.num_layers = v.check_int("num_layers", num_layers, 1)
        self.num_kv_heads = v.check_int("num_kv_heads", num_kv_heads, 1)
        self.head_dim = v.check_int("head_dim", head_dim, 2)
        self.mode = v.check_choice("mode", mode, MODES)
        key_bits = v.check_int("key_bits", key_bits, *BITS[mode])
        value_bits = v.check_int("value_bits", value_bits, *MSE_BITS)
        seed = v.check_int("seed", seed, 0, 2**64 - 1)
        v.check_choice("rotation", rotation, rot.ROTATIONS)
        v.check_choice("codebook", codebook, cb.LAWS)
        v.check_choice("norm_dtype", norm_dtype, NORM_DTYPES)
        debiased = v.check_flag("debiased", debiased)
        debiased_values = v.check_flag("debiased_values", debiased_values)
        if mode == "prod":
            if debiased:
                raise ValueError("debiased: expected False in mode='prod' (the prod estimator is already "
                                 "unbiased), got True")
            projection = "gaussian" if projection is None else projection
            v.check_choice("projection", projection, qjl.PROJECTIONS)
        elif projection is not None:
            raise ValueError(f"projection: expected None in mode='mse' (no QJL stage), got {projection!r}")
        self.debiased = bool(debiased)
        self.debiased_values = bool(debiased_values)
        self.key_config = Config(mode, self.head_dim, key_bits, seed, rotation, codebook, projection, norm_dtype)
        self.value_config = Config("mse", self.head_dim, value_bits, seed, rotation, codebook, None, norm_dtype)
        self.key_plan = make_plan(self.key_config)
        self.value_plan = make_plan(self.value_config)
        self.norm_dtype = np.dtype(norm_dtype)
        self.backend = backends.get(backend)
        #: α = E[estimate]/truth of the plain mse stage (codebook.shrinkage); debiasing divides by it
        self.key_alpha = self.key_plan.alpha
        self.value_alpha = self.value_plan.alpha
        self._layers = [_Layer() for _ in range(self.num_layers)]
        self.batch_size = None  # fixed by the first append, cleared by reset()
        self._tiers = None  # tqref.kv.tiered.Tiered when any option of tqref/kv is used
        if residual_length != 0 or sink_tokens != 0 or outliers is not None or layer_bits is not None:
            from .kv.tiered import Tiered
            self._tiers = Tiered(self, residual_length=residual_length, sink_tokens=sink_tokens,
                                 outliers=outliers, layer_bits=layer_bits)

    # ------------------------------------------------------------------ description
    key_bits = property(lambda self: self.key_config.bits)
    value_bits = property(lambda self: self.value_config.bits)

    def __repr__(self) -> str:
        c = self.key_config
        extra = f", projection={c.projection!r}" if self.mode == "prod" else f", debiased={self.debiased}"
        return (f"KVCache(num_layers={self.num_layers}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, key_bits={c.bits}, value_bits={self.value_bits}, "
                f"mode={self.mode!r}{extra}, seed={c.seed}, rotation={c.rotation!r}, "
                f"codebook={c.codebook!r}, norm_dtype={c.norm_dtype!r}, backend={self.backend.name!r}"
                + (f", {self._tiers.describe()})" if self._tiers is not None else ")"))

    def _no_tiers(self, what: str) -> None:
        if self._tiers is not None:
            raise ValueError(f"{what}: not available with residual_length, sink_tokens, outliers or layer_bits "
                             f"(tokens of one layer have different representations); use append and attend, "
                             f"dequantize, stored and memory_usage")

    def layout(self) -> list:
        """(name, dtype, row shape) of every stored array per layer, in storage order (module docstring)."""
        self._no_tiers("layout")
        d = self.head_dim
        fields = [("key_indices", np.dtype(np.uint8), (packing.packed_size(d, self.key_plan.bits),)),
                  ("key_norms", self.norm_dtype, ())]
        if self.mode == "prod":
            fields += [("key_signs", np.dtype(np.uint8), (packing.packed_size(d, 1),)),
                       ("key_gammas", self.norm_dtype, ())]
        fields += [("value_indices", np.dtype(np.uint8), (packing.packed_size(d, self.value_plan.bits),)),
                   ("value_norms", self.norm_dtype, ())]
        return fields

    def bytes_per_token(self) -> int:
        """Stored bytes per (batch element, kv head, position) for keys and values together."""
        return sum(dt.itemsize * math.prod(row) for _, dt, row in self.layout())

    # ------------------------------------------------------------------ validation
    def _check_layer(self, layer) -> int:
        return v.check_int("layer", layer, 0, self.num_layers - 1)

    def _check_tensor(self, name: str, x, heads_name: str):
        """Metadata of a float array (B, heads, S, head_dim): dtype and shape (heads checked by
        the caller). Returns (x as an ndarray, not copied, its dtype); the values are checked
        by :meth:`_quantize` through the norms (no separate pass over them)."""
        x = np.asarray(x)
        if x.dtype.type not in v.FLOAT_DTYPES:
            raise ValueError(f"{name}: expected dtype float16, float32 or float64, got {x.dtype}")
        if x.ndim != 4:
            raise ValueError(f"{name}: expected 4 dimensions (batch, {heads_name}, seq, head_dim), "
                             f"got shape {x.shape}")
        if x.shape[3] != self.head_dim:
            raise ValueError(f"{name}: expected head_dim={self.head_dim} on the last axis, got {x.shape[3]} "
                             f"(shape {x.shape})")
        if x.shape[0] < 1 or x.shape[2] < 1:
            raise ValueError(f"{name}: expected batch >= 1 and seq >= 1, got shape {x.shape}")
        if self.batch_size is not None and x.shape[0] != self.batch_size:
            raise ValueError(f"{name}: expected batch={self.batch_size} (the cache's batch size), got "
                             f"{x.shape[0]} (shape {x.shape})")
        return x, x.dtype

    def _check_kv(self, k, v_):
        k, k_dtype = self._check_tensor("k", k, "num_kv_heads")
        if k.shape[1] != self.num_kv_heads:
            raise ValueError(f"k: expected num_kv_heads={self.num_kv_heads} on axis 1, got {k.shape[1]} "
                             f"(shape {k.shape})")
        vals, v_dtype = self._check_tensor("v", v_, "num_kv_heads")
        if vals.shape != k.shape:
            raise ValueError(f"v: expected the shape of k {k.shape}, got {vals.shape}")
        return k, vals, k_dtype, v_dtype

    def _check_q(self, q, batch: int):
        q, q_dtype = self._check_tensor("q", q, "num_attention_heads")
        q32 = v.as_float32_rows("q", q, self.head_dim)
        if q32.shape[0] != batch:
            raise ValueError(f"q: expected batch={batch} (the batch of k and v), got {q32.shape[0]}")
        heads = q32.shape[1]
        if heads % self.num_kv_heads:
            raise ValueError(f"q: expected a number of attention heads that is a multiple of "
                             f"num_kv_heads={self.num_kv_heads}, got {heads} (shape {q32.shape})")
        return q32, q_dtype, heads // self.num_kv_heads

    # ------------------------------------------------------------------ quantization
    def _store_norms(self, name: str, what: str, norms: np.ndarray) -> np.ndarray:
        """float32 (B, H, S) -> stored dtype, rejecting values the dtype cannot hold."""
        bad = unstorable_norms(norms, self.norm_dtype.name)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: expected vectors whose {what} is {norm_rule(self.norm_dtype.name)}, got "
                             f"{float(norms[pos]):.6g} at (batch, head, position) {pos}")
        return norms.astype(self.norm_dtype)

    def _quantize(self, k: np.ndarray, v_: np.ndarray) -> dict:
        """Codes of new positions, name -> (B, H, S, ...) arrays, without touching the cache.

        k, v_: float16/32/64 (B, H, S, d), values not yet checked. Validation is fused into
        the quantization: a NaN or ±inf coordinate (or a float64 value beyond float32) makes
        the vector's norm non-finite, and only then are the inputs scanned again, for the
        precise error (the order and messages of ``_validate.as_float32_rows``). The backend
        takes any float dtype and converts block by block (one pass over the input).
        """
        quantize_keys = self.backend.prod_quantize if self.mode == "prod" else self.backend.mse_quantize
        # no copy of k or v (_rows); NaN, inf or a float64 overflow raise from the norms
        keys = _rows.quantize("k", lambda rows: quantize_keys(rows, self.key_plan), k, self.head_dim)
        values = _rows.quantize("v", lambda rows: self.backend.mse_quantize(rows, self.value_plan), v_, self.head_dim)
        raw = dict(zip(("key_indices", "key_norms", "key_signs", "key_gammas"), keys))
        raw["value_indices"], raw["value_norms"] = values
        out = {name: arr for name, arr in raw.items() if arr.ndim == 4}
        if self.mode == "prod":
            out["key_gammas"] = self._store_norms("k", "residual norm", np.asarray(raw["key_gammas"], _F32))
        out["key_norms"] = self._store_norms("k", "norm", np.asarray(raw["key_norms"], _F32))
        out["value_norms"] = self._store_norms("v", "norm", np.asarray(raw["value_norms"], _F32))
        return out

    def _commit(self, layer: int, new: dict, batch: int) -> None:
        """Write validated codes at the end of ``layer`` (grows storage when needed)."""
        lay = self._layers[layer]
        count = new["key_norms"].shape[2]
        needed = lay.seq + count
        capacity = grown_capacity(needed, lay.capacity)
        if capacity != lay.capacity:
            for name, dtype, row in self.layout():
                grown = np.zeros((batch, self.num_kv_heads, capacity) + row, dtype=dtype)
                if lay.seq:
                    grown[:, :, : lay.seq] = lay.arrays[name][:, :, : lay.seq]
                lay.arrays[name] = grown
            lay.capacity = capacity
        for name, _, _ in self.layout():
            lay.arrays[name][:, :, lay.seq : needed] = new[name]
        lay.seq = needed
        self.batch_size = batch

    # ------------------------------------------------------------------ public API
    def append(self, layer, k, v) -> None:
        """Quantize and append k, v: float16/32/64 (batch, num_kv_heads, seq, head_dim), finite.

        k and v have the same shape; batch is fixed by the first append after construction or
        :meth:`reset`. Nothing is stored unless every check passes.
        """
        if self._tiers is not None:
            return self._tiers.append(layer, k, v)
        layer = self._check_layer(layer)
        k, v, _, _ = self._check_kv(k, v)
        self._commit(layer, self._quantize(k, v), k.shape[0])

    def prefill(self, layer, k, v, q) -> DequantResult:
        """Append k, v, then return the whole layer dequantized (and the logit bias for q).

        q: float (batch, num_attention_heads, q_len, head_dim), attention heads a multiple of
        num_kv_heads. Unlike turboquant-rs (bug B7), the first prefill also returns the
        *dequantized* K/V, never the raw input, so ``q @ Kᵀ + logit_bias`` is the cache's
        estimate on every call. See :class:`DequantResult` for shapes and dtypes.
        """
        self._no_tiers("prefill")
        layer = self._check_layer(layer)
        k, v, k_dtype, v_dtype = self._check_kv(k, v)
        new = self._quantize(k, v)  # k, v values are checked here, before q (the order of the errors)
        q32, q_dtype, group = self._check_q(q, k.shape[0])
        self._commit(layer, new, k.shape[0])
        keys, values = self._dequantize(layer)
        with np.errstate(over="ignore"):
            keys, values = keys.astype(k_dtype, copy=False), values.astype(v_dtype, copy=False)
            bias = None
            if self.mode == "prod":
                bias = self._bias(layer, q32, group).astype(q_dtype, copy=False)
        return DequantResult(keys, values, bias)

    def decode(self, layer, k, v, q) -> DequantResult:
        """Same as :meth:`prefill` (the seed's ``decode`` returns ``Dequantized`` for TqCache).

        For the attention output without dequantizing, use :meth:`attend` after :meth:`append`.
        """
        return self.prefill(layer, k, v, q)

    def seq_len(self, layer) -> int:
        """Number of cached positions of ``layer`` (out-of-range layers are an error)."""
        if self._tiers is not None:
            return self._tiers.seq_len(layer)
        return self._layers[self._check_layer(layer)].seq

    def capacity(self, layer) -> int:
        """Allocated positions of ``layer`` (≥ seq_len)."""
        self._no_tiers("capacity")
        return self._layers[self._check_layer(layer)].capacity

    def reset(self) -> None:
        """Drop every layer's storage (capacity back to 0) and forget the batch size."""
        self._layers = [_Layer() for _ in range(self.num_layers)]
        self.batch_size = None
        if self._tiers is not None:
            self._tiers.reset()

    def stored(self, layer) -> dict:
        """The used part of ``layer``'s storage: name -> read-only view (B, H, seq_len, ...).

        Empty dict for a layer that holds nothing. Names and dtypes: module docstring (with the
        tqref/kv options: :meth:`tqref.kv.tiered.Tiered.stored`).
        """
        if self._tiers is not None:
            return self._tiers.stored(layer)
        lay = self._layers[self._check_layer(layer)]
        views = {}
        for name, _, _ in self.layout():
            if name in lay.arrays:
                view = lay.arrays[name][:, :, : lay.seq]
                view.flags.writeable = False
                views[name] = view
        return views

    def memory_usage(self) -> int:
        """Bytes of codes actually stored: Σ over layers of the ``stored(layer)`` arrays' nbytes.

        Equals batch · num_kv_heads · Σ_layers seq_len · :meth:`bytes_per_token` (without the
        tqref/kv options, which store float16 rows and channel choices too).
        """
        return sum(view.nbytes for layer in range(self.num_layers) for view in self.stored(layer).values())

    def bits_per_coordinate(self) -> float:
        """8 · memory_usage / (batch · num_kv_heads · Σ_layers seq_len · 2 · head_dim): stored bits
        per key or value coordinate, norms, float16 rows and channel choices included."""
        coords = 2 * self.head_dim * self.num_kv_heads * (self.batch_size or 0) * \
            sum(self.seq_len(layer) for layer in range(self.num_layers))
        if not coords:
            raise ValueError("bits_per_coordinate: expected a cache holding positions, got an empty cache")
        return 8 * self.memory_usage() / coords

    def capacity_bytes(self) -> int:
        """Bytes allocated (used + spare capacity) over every layer's arrays."""
        if self._tiers is not None:
            return self._tiers.capacity_bytes()
        return sum(arr.nbytes for lay in self._layers for arr in lay.arrays.values())

    # ------------------------------------------------------------------ reading back
    def _require(self, layer: int) -> _Layer:
        lay = self._layers[layer]
        if lay.seq == 0:
            raise ValueError(f"layer: expected a layer holding cached positions, got layer {layer} with "
                             f"seq_len 0")
        return lay

    def _f32(self, layer: int) -> dict:
        """Used views, norms and γ as float32 (float16 -> float32 is exact)."""
        views = self.stored(layer)
        for name in ("key_norms", "key_gammas", "value_norms"):
            if name in views:
                views[name] = views[name].astype(_F32, copy=False)
        return views

    def _dequantize(self, layer: int):
        a = self._f32(layer)
        lead = a["key_norms"].shape
        d = self.head_dim
        kb, vb = a["key_indices"].shape[-1], a["value_indices"].shape[-1]
        keys = self.backend.mse_dequantize(np.ascontiguousarray(a["key_indices"]).reshape(-1, kb),
                                           a["key_norms"].reshape(-1), self.key_plan).reshape(lead + (d,))
        values = self.backend.mse_dequantize(np.ascontiguousarray(a["value_indices"]).reshape(-1, vb),
                                             a["value_norms"].reshape(-1), self.value_plan).reshape(lead + (d,))
        if self.debiased:
            keys = keys * _F32(1.0 / self.key_alpha)
        if self.debiased_values:
            values = values * _F32(1.0 / self.value_alpha)
        return keys.astype(_F32, copy=False), values.astype(_F32, copy=False)

    def dequantize(self, layer):
        """(K, V) float32 (B, H, seq_len, head_dim) of ``layer``.

        K is the mse-stage reconstruction (divided by α_k when ``debiased``); in prod mode the
        QJL part is not in K but in :meth:`logit_bias`. V is divided by α_v when
        ``debiased_values``. With the tqref/kv options: the layer as it is held now, float16
        sinks and window included (:meth:`tqref.kv.tiered.Tiered.dequantize`).
        """
        if self._tiers is not None:
            return self._tiers.dequantize(layer)
        layer = self._check_layer(layer)
        self._require(layer)
        return self._dequantize(layer)

    def _bias(self, layer: int, q32: np.ndarray, group: int) -> np.ndarray:
        a = self._f32(layer)
        q_rot = estimators.rotate_queries(q32.reshape(-1, self.head_dim), self.key_plan).reshape(q32.shape)
        return attention.qjl_bias(q_rot, a["key_signs"], a["key_gammas"], a["key_norms"], self.key_plan,
                                  group_size=group)

    def logit_bias(self, layer, q):
        """prod mode: the QJL logit bias float32 (B, A, Lq, seq_len) for q; mse mode: None."""
        self._no_tiers("logit_bias")
        layer = self._check_layer(layer)
        self._require(layer)
        q32, _, group = self._check_q(q, self.batch_size)
        return self._bias(layer, q32, group) if self.mode == "prod" else None

    def attend(self, layer, q, *, scale=None, causal=True, start=0, lag=0, return_lse=False):
        """Attention output over the compressed ``layer``, float32 (B, A, Lq, head_dim).

        q: float (B, A, Lq, head_dim), A a multiple of num_kv_heads (head a reads kv head
        a // (A / num_kv_heads)). scale: softmax scale, default 1/sqrt(head_dim). causal: the
        queries are the last Lq positions of the layer and query i sees keys
        ``start .. seq_len − Lq + i − lag``; without it every query sees ``start .. seq_len − 1``.
        start (0 ≤ start ≤ seq_len): keys before it are not attended (a caller holding them
        elsewhere, e.g. float16 sink tokens). lag (≥ 0, causal only): the ``lag`` newest keys
        each query would see are excluded (a caller holding them elsewhere, e.g. a float16
        window). return_lse: also return the log-sum-exp (natural log) of the scaled scores
        over each query's visible keys, float32 (B, A, Lq), so partial attentions merge
        exactly (:func:`tqref.reference.attention.merge_partials`); a query that sees no key
        then gets output 0 and lse −inf. Without return_lse every query must see at least one
        key. Computed by the backend's ``attend`` (reference/attention.py) from the codes;
        keys are never dequantized. With the tqref/kv options, each query sees every earlier
        position in the representation it had when that query was decoded (tqref/kv/window.py);
        start and lag must then be 0.
        """
        if self._tiers is not None:
            if start != 0 or lag != 0:
                raise ValueError(f"start, lag: expected 0 with residual_length, sink_tokens, outliers or "
                                 f"layer_bits (the cache places its tiers itself), got start={start!r}, lag={lag!r}")
            return self._tiers.attend(layer, q, scale=scale, causal=causal, return_lse=return_lse)
        layer = self._check_layer(layer)
        lay = self._require(layer)
        q32, _, group = self._check_q(q, self.batch_size)
        scale = v.softmax_scale(scale, self.head_dim)
        causal, return_lse = v.check_flag("causal", causal), v.check_flag("return_lse", return_lse)
        start = v.check_int("start", start, 0, lay.seq)
        lag = v.check_int("lag", lag, 0)
        if lag and not causal:
            raise ValueError(f"lag: expected 0 with causal=False (lag excludes the newest keys of the causal "
                             f"range), got {lag}")
        lq = q32.shape[2]
        first_last = lay.seq - lq - lag if causal else lay.seq - 1  # last key the first query sees
        if not return_lse and first_last < start:
            if causal and start == 0 and lag == 0:
                raise ValueError(f"q: expected at most seq_len={lay.seq} query positions with causal=True "
                                 f"(queries are the last positions of the layer), got {lq}")
            raise ValueError(f"q: expected every query to see a key (start={start}, lag={lag}, causal={causal}, "
                             f"seq_len={lay.seq}, {lq} queries) or return_lse=True, got a query with none")
        fn = getattr(self.backend, "attend", None)
        if fn is None:
            raise ValueError(f"backend: {self.backend.name!r} has no attend(); use backend='reference'")
        a = self._f32(layer)
        rows = q32.reshape(-1, self.head_dim)
        # the rotations are exact: a backend's own (numba: bit-identical kernels) or the reference's
        fwd, inv = getattr(self.backend, "rotate", None), getattr(self.backend, "rotate_inverse", None)
        q_rot = (fwd(rows, self.key_plan) if fwd else estimators.rotate_queries(rows, self.key_plan)).reshape(q32.shape)
        eff_scale = float(scale) / self.key_alpha if self.debiased else float(scale)
        value_scale = 1.0 / self.value_alpha if self.debiased_values else 1.0
        res = fn(q_rot, a["key_indices"], a["key_norms"], a["value_indices"], a["value_norms"],
                 self.key_plan, self.value_plan, key_signs=a.get("key_signs"),
                 key_gammas=a.get("key_gammas"), scale=eff_scale, value_scale=value_scale,
                 group_size=group, causal=bool(causal), start=start, lag=lag, return_lse=bool(return_lse))
        out_rot, lse = res if return_lse else (res, None)
        out_rows = np.asarray(out_rot, _F32).reshape(-1, self.head_dim)
        out = (inv(out_rows, self.value_plan) if inv else
               self.value_plan.rotate_inverse(out_rows))
        out = out.reshape(q32.shape).astype(_F32, copy=False)
        return (out, np.asarray(lse, _F32)) if return_lse else out
