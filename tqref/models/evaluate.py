"""The engine of ``tqref evaluate-model``: one causal pass of a text per cache configuration.

For a token sequence x_0 .. x_{T−1} and each cache configuration c, the model runs one
prefill pass with every layer's attention through c's cache, giving logits ℓ_c (T, V).
Against the exact float32 cache (configs.REFERENCE_CONFIG, logits ℓ_ref):

    perplexity  = exp(−1/(T−1) Σ_{i<T−1} log softmax(ℓ_c[i])[x_{i+1}])
    KL          = 1/T Σ_i Σ_v p_ref[i, v] (log p_ref[i, v] − log p_c[i, v])     (nats)
    top-1       = 1/T Σ_i [argmax ℓ_c[i] = argmax ℓ_ref[i]]
    bits/coord  = 8 · memory_usage() / (2 · layers · kv heads · T · head_dim)   (K and V,
                  norms and scales included: what the cache really stores)
    nMSE_ℓ(K)   = Σ ‖k − k̂‖² / Σ ‖k‖² over layer ℓ's cached keys (same for V), k the real
                  keys of this pass and k̂ what the cache reconstructs (for prod mode the
                  full Algorithm 2 reconstruction: mse stage + QJL term)

log-softmax in float64. :func:`kv_structure` measures the real K/V of the exact pass:
per-layer norm ranges and outlier channels (a channel's RMS over the median channel RMS).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import time

import numpy as np

from ..reference import prod
from ..cache import KVCache
from . import configs as cfgs
from .llama import LlamaModel, Timings

_F32 = np.float32
DEFAULT_TEXT = "jargon-file-essays.txt"
DEFAULT_TOKENS = 1024
#: prefill chunk (positions per forward call): bounds the exact caches' attention logits
CHUNK = 1024


def default_text() -> str:
    """The shipped default text (tqref/data/texts/README.md says where it is from)."""
    return importlib.resources.files("tqref.data").joinpath("texts", DEFAULT_TEXT).read_text(encoding="utf-8")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log softmax over the last axis of float32 logits (T, V)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Capture:
    """capture(layer, q, k, v) callback keeping every layer's q, k, v (post-RoPE float32)."""

    def __init__(self, num_layers: int):
        self.q, self.k, self.v = ([None] * num_layers for _ in range(3))

    def __call__(self, layer, q, k, v):
        for store, x in ((self.q, q), (self.k, k), (self.v, v)):
            store[layer] = x if store[layer] is None else np.concatenate([store[layer], x], axis=1)

    def stacked(self, name: str) -> np.ndarray:
        """(layers, heads, T, d) float32."""
        return np.stack(getattr(self, name)).astype(_F32)


def reconstruct(cache, layer: int):
    """(K̂, V̂) float32 (B, H, T, d) that ``cache`` holds for ``layer``; None if it cannot say."""
    if isinstance(cache, KVCache) and cache.mode == "prod":
        s = cache.stored(layer)
        lead = s["key_norms"].shape
        rows = int(np.prod(lead))
        keys = prod.dequantize(np.ascontiguousarray(s["key_indices"]).reshape(rows, -1),
                               s["key_norms"].astype(_F32).reshape(-1),
                               np.ascontiguousarray(s["key_signs"]).reshape(rows, -1),
                               s["key_gammas"].astype(_F32).reshape(-1), cache.key_plan)
        _, values = cache.dequantize(layer)
        return keys.reshape(lead + (-1,)), values
    fn = getattr(cache, "dequantize", None)
    return None if fn is None else fn(layer)


def nmse(x: np.ndarray, x_hat: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.sum((x - np.asarray(x_hat, np.float64)) ** 2) / np.sum(x ** 2))


@dataclasses.dataclass
class Result:
    config: str
    bits_per_coordinate: float
    perplexity: float
    kl: float
    top1: float
    seconds: float
    attention_seconds: float  # append + attend
    append_seconds: float
    rest_seconds: float
    key_nmse: list
    value_nmse: list

    def public(self) -> dict:
        return dataclasses.asdict(self)


def run_config(model: LlamaModel, ids: np.ndarray, config: cfgs.CacheConfig, *, seed=0, backend="numba",
               capture: Capture | None = None, chunk: int = CHUNK):
    """Logits (T, V), Timings, bits/coord and per-layer (key nMSE, value nMSE) of one configuration.

    The pass is a prefill in chunks of ``chunk`` positions (each chunk's queries attend to
    everything before them): the same logits as one call, with bounded temporaries.
    """
    cf = model.config
    cache = model.new_cache(config, seed=seed, backend=backend)
    cap = Capture(cf.num_layers) if capture is None else capture
    timings = Timings()
    logits = np.concatenate([model.forward(ids[s:s + chunk], cache, start=s, timings=timings, capture=cap)
                             for s in range(0, ids.size, chunk)])
    knmse, vnmse = [], []
    for layer in range(cf.num_layers):
        rec = reconstruct(cache, layer)
        if rec is None:
            knmse.append(float("nan"))
            vnmse.append(float("nan"))
            continue
        knmse.append(nmse(cap.k[layer], rec[0][0]))
        vnmse.append(nmse(cap.v[layer], rec[1][0]))
    bits = 8.0 * cache.memory_usage() / (2 * cf.num_layers * cf.num_kv_heads * ids.size * cf.head_dim)
    return logits, timings, bits, knmse, vnmse


def compare_logits(ids: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray, rows: int = 256):
    """(perplexity, mean KL to the reference, top-1 agreement) from float32 logits (T, V).

    log-softmax in float64, ``rows`` positions at a time (module docstring formulas).
    """
    n = ids.size
    nll = kl = agree = 0.0
    for s in range(0, n, rows):
        e = min(s + rows, n)
        logp, ref = log_softmax(logits[s:e]), log_softmax(ref_logits[s:e])
        targets = np.arange(s, min(e, n - 1))
        nll -= float(np.sum(logp[targets - s, ids[targets + 1]]))
        kl += float(np.sum(np.exp(ref) * (ref - logp)))
        agree += float(np.sum(np.argmax(logits[s:e], -1) == np.argmax(ref_logits[s:e], -1)))
    return float(np.exp(nll / (n - 1))), kl / n, agree / n


def evaluate(model: LlamaModel, ids, configs, *, seed=0, backend="numba", progress=None, reference_capture=None):
    """[Result] for every configuration (parsed CacheConfigs), in order.

    The exact float32 pass runs first (it is the reference of KL and top-1; its logits are
    kept, float32 (T, V)); its captured q, k, v go into ``reference_capture`` (a Capture)
    when given. ``progress`` wraps the iteration over configurations (tqref._progress).
    """
    ids = np.asarray(ids, np.int64)
    ref_config = cfgs.parse(cfgs.REFERENCE_CONFIG)
    todo = [ref_config] + [c for c in configs if c.name != ref_config.name]
    wanted = {c.name for c in configs}
    results, ref_logits = {}, None
    for config in (progress(todo) if progress else todo):
        start = time.perf_counter()
        cap = reference_capture if (config is ref_config and reference_capture is not None) else None
        logits, timings, bits, knmse, vnmse = run_config(model, ids, config, seed=seed, backend=backend, capture=cap)
        seconds = time.perf_counter() - start
        ref_logits = logits if ref_logits is None else ref_logits
        ppl, kl, top1 = compare_logits(ids, logits, ref_logits)
        results[config.name] = Result(config.name, bits, ppl, kl, top1, seconds, timings.attention, timings.append,
                                      timings.rest, knmse, vnmse)
    return [results[c.name] for c in configs if c.name in wanted]


def kv_structure(capture: Capture, top: int = 3) -> list:
    """Per layer: key/value norm ranges and the strongest key outlier channels (module docstring)."""
    rows = []
    for layer, (k, v) in enumerate(zip(capture.k, capture.v)):
        kn = np.linalg.norm(k, axis=-1)
        vn = np.linalg.norm(v, axis=-1)
        ch = np.sqrt(np.mean(np.square(k.astype(np.float64)), axis=1))  # (H, d) RMS per channel
        ratio = ch / np.median(ch, axis=1, keepdims=True)
        flat = np.argsort(ratio, axis=None)[::-1][:top]
        rows.append({
            "layer": layer,
            "key_norm": [float(kn.min()), float(np.median(kn)), float(kn.max())],
            "value_norm": [float(vn.min()), float(np.median(vn)), float(vn.max())],
            "key_outlier_ratio": float(ratio.max()),
            "key_outlier_channels": [[int(h), int(c), float(ratio[h, c])]
                                     for h, c in zip(*np.unravel_index(flat, ratio.shape))],
        })
    return rows


def format_table(results, model_name: str, tokens: int) -> str:
    lines = [f"model: {model_name}; {tokens} tokens, one causal pass; KL and top-1 against the exact f32 cache",
             "",
             "| cache | bits/coord | perplexity | KL to exact | top-1 | K nMSE (mean / max layer) | "
             "V nMSE (mean / max) | time s (cache: append + attend / rest) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        k, v = np.asarray(r.key_nmse), np.asarray(r.value_nmse)
        kv = (f"{np.nanmean(k):.4f} / {np.nanmax(k):.4f} | {np.nanmean(v):.4f} / {np.nanmax(v):.4f}"
              if np.isfinite(k).any() else "- | -")
        lines.append(f"| {r.config} | {r.bits_per_coordinate:.3f} | {r.perplexity:.2f} | {r.kl:.4f} | "
                     f"{r.top1:.3f} | {kv} | {r.seconds:.1f} ({r.append_seconds:.1f} + "
                     f"{r.attention_seconds - r.append_seconds:.1f} / {r.rest_seconds:.1f}) |")
    return "\n".join(lines)


def format_structure(rows) -> str:
    lines = ["| layer | ‖k‖ min / median / max | ‖v‖ min / median / max | max key channel RMS / median | "
             "top channels (head:channel ×ratio) |", "|---|---|---|---|---|"]
    for r in rows:
        kn, vn = r["key_norm"], r["value_norm"]
        chans = ", ".join(f"{h}:{c} ×{x:.1f}" for h, c, x in r["key_outlier_channels"])
        lines.append(f"| {r['layer']} | {kn[0]:.1f} / {kn[1]:.1f} / {kn[2]:.1f} | {vn[0]:.2f} / {vn[1]:.2f} / "
                     f"{vn[2]:.2f} | {r['key_outlier_ratio']:.1f} | {chans} |")
    return "\n".join(lines)


def plot(results, path: str) -> None:
    """KL and perplexity against bits per coordinate, one point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "kl", "KL to exact (nats/token)"), (axes[1], "perplexity", "perplexity")):
        for i, r in enumerate(results):
            y = getattr(r, key)
            if key == "kl" and y <= 0:
                continue
            ax.scatter(r.bits_per_coordinate, y, color=f"C{i % 10}")  # one colour per configuration
            ax.annotate(r.config, (r.bits_per_coordinate, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bits per coordinate stored (K and V, norms included)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
