"""Pluggable KV caches for the forward (llama.py): exact, llama.cpp block types, TurboQuant.

The protocol is :class:`tqref.KVCache`'s own, so a ``tqref.KVCache`` plugs in unchanged:

    append(layer, k, v)                      k, v float (B, H, T, d): new positions, in order
    attend(layer, q, *, scale=None, causal=True) -> float32 (B, A, Lq, d)
                                             A a multiple of H (head a reads kv head a // (A/H));
                                             with causal=True the Lq queries are the last Lq
                                             cached positions
    memory_usage() -> int                    bytes actually stored
    dequantize(layer) -> (K, V)              float32 (B, H, T, d): what attention reads
                                             (optional; used for the per-layer nMSE)

Implemented here:

* :class:`ExactCache` — K/V stored as float32 or float16 (llama.cpp's default ``f16`` cache);
  attention in float32 on the stored values.
* :class:`SeedPathCache` — a ``tqref.KVCache`` used through ``prefill``/``decode`` (dequantized
  K/V and the QJL logit bias: the seed's interface) instead of ``attend``.
* :class:`BlockCache` — llama.cpp's ``q8_0``, ``q5_0``, ``q4_0`` cache types: every cached
  head vector (one token, one kv head, d = head_dim values) is quantized in blocks of 32
  consecutive coordinates, exactly as llama.cpp stores a row of its K/V cache, with
  ``gguf.quants.quantize`` (llama.cpp's own Python port of the block quantizers). Attention
  dequantizes the stored blocks (``gguf.quants.dequantize``) and runs exact float32
  attention. (llama.cpp's CPU flash-attention also rounds the *query* to q8_0 when the keys
  are quantized; that step belongs to the kernel, not to the cache, and is not modelled.)

Exact attention (:func:`exact_attention`) is softmax(scale · q kᵀ) v in float32 with the
causal mask of tqref.reference.attention.visible_mask.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validate as v
from ..reference import attention as ref_attention
from .gguf_weights import require_gguf

_F32 = np.float32
#: coordinates per llama.cpp quantization block (QK8_0 = QK5_0 = QK4_0 = 32)
BLOCK = 32
#: llama.cpp cache type name -> gguf.GGMLQuantizationType member name
BLOCK_TYPES = {"q8_0": "Q8_0", "q5_0": "Q5_0", "q4_0": "Q4_0"}
EXACT_DTYPES = {"f32": np.float32, "f16": np.float16}


def exact_attention(q, k, v_, *, scale=None, causal=True, logit_bias=None) -> np.ndarray:
    """float32 (B, A, Lq, d) = softmax(scale · (q kᵀ + logit_bias), causal mask) v with GQA.

    q (B, A, Lq, d); k, v_ (B, H, T, d), A a multiple of H; queries are the last Lq positions
    (the visible range of tqref.reference.attention.visible_mask). The softmax is computed in
    place (max-subtracted, exp, divided by the sum; float32): the logits of a 1,024-token
    prefill are the largest temporaries of the forward. Every query sees at least one key.
    """
    q = np.asarray(q, _F32)
    b, a, lq, d = q.shape
    h, t = k.shape[1], k.shape[2]
    g = a // h
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    logits = (q.reshape(b, h, g * lq, d) @ np.swapaxes(np.asarray(k, _F32), -1, -2)).reshape(b, h, g, lq, t)
    if logit_bias is not None:  # (B, A, Lq, T) raw dot-product units (KVCache.prefill's QJL term)
        logits += np.asarray(logit_bias, _F32).reshape(b, h, g, lq, t)
    logits *= _F32(scale)
    if causal:
        logits += np.where(ref_attention.visible_mask(lq, t, causal=True), _F32(0), _F32(-np.inf))
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    out = logits.reshape(b, h, g * lq, t) @ np.asarray(v_, _F32)
    return out.reshape(b, a, lq, d)


class SeedPathCache:
    """A ``tqref.KVCache`` driven through the seed's two calls instead of ``attend``.

    The first attention of a layer calls ``cache.prefill(layer, k, v, q)``, later ones
    ``cache.decode(...)``; both append and return the whole layer dequantized plus, in prod
    mode, the QJL logit bias, and attention is :func:`exact_attention` on those. The result
    must match attention computed from the codes (``KVCache.attend``) up to float summation
    order: tests/models check the two paths against each other.
    """

    def __init__(self, cache):
        self.cache = cache
        self._pending = {}
        self._started = set()

    def append(self, layer, k, v_) -> None:
        self._pending[layer] = (k, v_)  # appended by prefill/decode together with the query

    def attend(self, layer, q, *, scale=None, causal=True) -> np.ndarray:
        if layer not in self._pending:
            raise ValueError(f"layer: expected append(layer, k, v) before attend for layer {layer}")
        k, v_ = self._pending.pop(layer)
        call = self.cache.decode if layer in self._started else self.cache.prefill
        self._started.add(layer)
        res = call(layer, k, v_, q)
        return exact_attention(q, res.k, res.v, scale=scale, causal=causal, logit_bias=res.logit_bias)

    def memory_usage(self) -> int:
        return self.cache.memory_usage()

    def dequantize(self, layer):
        return self.cache.dequantize(layer)


class _GrowingCache:
    """Per-layer storage that grows by concatenation; subclasses encode/decode rows."""

    def __init__(self, num_layers, num_kv_heads, head_dim):
        self.num_layers = v.check_int("num_layers", num_layers, 1)
        self.num_kv_heads = v.check_int("num_kv_heads", num_kv_heads, 1)
        self.head_dim = v.check_int("head_dim", head_dim, 1)
        self._k = [None] * self.num_layers
        self._v = [None] * self.num_layers

    def _check(self, layer, k, v_):
        layer = v.check_int("layer", layer, 0, self.num_layers - 1)
        for name, x in (("k", k), ("v", v_)):
            if np.ndim(x) != 4 or np.shape(x)[1] != self.num_kv_heads or np.shape(x)[3] != self.head_dim:
                raise ValueError(f"{name}: expected shape (batch, {self.num_kv_heads}, seq, {self.head_dim}), "
                                 f"got {np.shape(x)}")
        if np.shape(k) != np.shape(v_):
            raise ValueError(f"v: expected the shape of k {np.shape(k)}, got {np.shape(v_)}")
        return layer, v.as_float32_rows("k", k, self.head_dim), v.as_float32_rows("v", v_, self.head_dim)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, stored: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def append(self, layer, k, v_) -> None:
        layer, k32, v32 = self._check(layer, k, v_)
        for store, x in ((self._k, k32), (self._v, v32)):
            enc = self._encode(x)
            store[layer] = enc if store[layer] is None else np.concatenate([store[layer], enc], axis=2)

    def seq_len(self, layer) -> int:
        stored = self._k[v.check_int("layer", layer, 0, self.num_layers - 1)]
        return 0 if stored is None else stored.shape[2]

    def dequantize(self, layer):
        layer = v.check_int("layer", layer, 0, self.num_layers - 1)
        if self._k[layer] is None:
            raise ValueError(f"layer: expected a layer holding cached positions, got layer {layer} with seq_len 0")
        return self._decode(self._k[layer]), self._decode(self._v[layer])

    def attend(self, layer, q, *, scale=None, causal=True) -> np.ndarray:
        keys, values = self.dequantize(layer)
        return exact_attention(q, keys, values, scale=scale, causal=causal)

    def memory_usage(self) -> int:
        return sum(x.nbytes for store in (self._k, self._v) for x in store if x is not None)


class ExactCache(_GrowingCache):
    """K/V stored as float32 (``"f32"``) or float16 (``"f16"``, rounded to nearest)."""

    def __init__(self, num_layers, num_kv_heads, head_dim, *, dtype="f16"):
        super().__init__(num_layers, num_kv_heads, head_dim)
        self.kind = v.check_choice("dtype", dtype, tuple(EXACT_DTYPES))
        self.dtype = np.dtype(EXACT_DTYPES[dtype])

    def _encode(self, x):
        return x.astype(self.dtype)

    def _decode(self, stored):
        return stored.astype(_F32)

    def __repr__(self):
        return f"ExactCache(dtype={self.kind!r})"


class BlockCache(_GrowingCache):
    """llama.cpp's q8_0 / q5_0 / q4_0 cache: per (token, kv head) row, blocks of 32 along d.

    Stored: uint8 (B, H, T, bytes_per_row), the blocks of gguf's layout (q8_0: 34 bytes per
    block = float16 scale + 32 int8; q5_0: 22; q4_0: 18). head_dim must be a multiple of 32.
    """

    def __init__(self, num_layers, num_kv_heads, head_dim, *, qtype="q8_0"):
        super().__init__(num_layers, num_kv_heads, head_dim)
        self.kind = v.check_choice("qtype", qtype, tuple(BLOCK_TYPES))
        if self.head_dim % BLOCK:
            raise ValueError(f"head_dim: expected a multiple of {BLOCK} for cache type {qtype!r}, got {head_dim}")
        gguf = require_gguf()
        self._gguf = gguf
        self.qtype = getattr(gguf.GGMLQuantizationType, BLOCK_TYPES[qtype])

    def _encode(self, x):
        return self._gguf.quants.quantize(np.ascontiguousarray(x, _F32), self.qtype)

    def _decode(self, stored):
        return np.asarray(self._gguf.quants.dequantize(stored, self.qtype), _F32)

    def __repr__(self):
        return f"BlockCache(qtype={self.kind!r})"
