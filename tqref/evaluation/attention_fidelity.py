"""Fidelity of attention over a compressed KV cache vs exact attention (``tqref evaluate-attention``).

For each cache variant (mode, key bits, value bits) and context length, the same synthetic
keys, values and queries go through :class:`tqref.KVCache` and through exact attention
(float64 arithmetic on the float32 inputs). Metrics, per (attention head, query position),
then averaged:

* ``rel_err``   ‖o_hat − o‖ / ‖o‖, o_hat = ``KVCache.attend`` (the whole compressed path);
* ``kl``        KL(w ‖ ŵ) in nats between exact and compressed attention weights;
* ``top1``      fraction of rows whose highest-weight key is the same;
* ``top8``      |top-8(w) ∩ top-8(ŵ)| / 8;
* ``logit_std`` the w-weighted standard deviation of the logit error ε = scale·(ŝ − s)
  (softmax ignores a uniform shift); for small errors kl ≈ ½ Var_w(ε) = ½ logit_std²;
* ``key_err``   ‖ŵ V − o‖ / ‖o‖ (exact values: the keys' share of rel_err);
* ``val_err``   ‖w V̂ − o‖ / ‖o‖ (exact weights: the values' share), and ``val_pred``, what
  the value codebook's distortion D and shrinkage α predict for it:
  E‖w V̂ − o‖² = (1−α_v)²‖o‖² + (D − (1−α_v)²) Σ_t w_t² ‖v_t‖²  (independent errors across
  tokens; the first term is the coherent shrinkage, which averaging does not remove).

Synthetic data (:func:`make_scenario`), shaped like LLM attention (docs/kv-cache.md):

* keys: per-channel scales (log-normal), ``outliers`` channels with a large per-head mean and
  scale (KIVI-style outlier channels), then rotary position embedding (NeoX half split, base
  10000) at each key's position;
* values: Student-t (3 degrees of freedom, heavy tails) per entry, per-channel scales and a
  per-head mean;
* queries: RoPE'd Gaussian content with the same outlier channels, plus a retrieval part
  pointing at 4 random earlier keys with strength β ∈ (0, 0.25, 0.5, 1) by head within a group,
  so diffuse and peaked heads are both present; the last ``num_queries`` positions are
  evaluated with a causal mask (decode-like).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..reference import attention, estimators
from ..cache import KVCache

#: (label, KVCache keyword arguments)
VARIANTS = {
    "mse": {"mode": "mse"},
    "mse-debiased": {"mode": "mse", "debiased": True},
    "prod-gaussian": {"mode": "prod", "projection": "gaussian"},
    "prod-orthogonal": {"mode": "prod", "projection": "orthogonal"},
}
METRICS = ("rel_err", "kl", "top1", "top8", "logit_std", "key_err", "val_err", "val_pred")
RETRIEVAL_STRENGTHS = (0.0, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to evaluate. ``value_bits=None`` means values use the key bits."""

    contexts: tuple = (2048, 8192, 32768)
    bits: tuple = (2, 3, 4)
    variants: tuple = tuple(VARIANTS)
    value_bits: int | None = None
    debiased_values: bool = False
    head_dim: int = 128
    num_kv_heads: int = 2
    group_size: int = 4
    num_queries: int = 64
    outliers: int = 4
    seed: int = 0
    rotation: str = "hadamard"
    backend: str = "reference"


def check_settings(s: Settings) -> None:
    """ValueError naming the first setting out of range (before any work is done)."""
    for name, value, low in (("contexts", min(s.contexts, default=0), 1), ("head_dim", s.head_dim, 2),
                             ("num_kv_heads", s.num_kv_heads, 1), ("group_size", s.group_size, 1),
                             ("num_queries", s.num_queries, 1), ("outliers", s.outliers, 0)):
        if value < low:
            raise ValueError(f"{name}: expected values >= {low}, got {value}")
    if s.outliers > s.head_dim:
        raise ValueError(f"outliers: expected at most head_dim={s.head_dim}, got {s.outliers}")
    if not s.bits or min(s.bits) < 2 or max(s.bits) > 8:
        raise ValueError(f"bits: expected key bits in 2..8, got {s.bits}")
    if s.value_bits is not None and not 1 <= s.value_bits <= 8:
        raise ValueError(f"value_bits: expected 1..8, got {s.value_bits}")
    unknown = [v for v in s.variants if v not in VARIANTS]
    if unknown or not s.variants:
        raise ValueError(f"variants: expected names from {tuple(VARIANTS)}, got {s.variants}")


@dataclasses.dataclass
class Scenario:
    """Synthetic attention inputs: k, v float32 (1, H, T, d); q float32 (1, A, Lq, d)."""

    k: np.ndarray
    v: np.ndarray
    q: np.ndarray


def rope(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Rotary embedding, NeoX half split: pairs (j, j + d/2) rotated by pos · base^(−2j/d)."""
    d = x.shape[-1]
    half = d // 2
    freqs = base ** (-np.arange(half) * 2.0 / d)
    angles = positions[:, None] * freqs[None, :]  # (T, half)
    cos, sin = np.cos(angles), np.sin(angles)
    a, b = x[..., :half], x[..., half : 2 * half]
    out = x.copy()
    out[..., :half] = a * cos - b * sin
    out[..., half : 2 * half] = a * sin + b * cos
    return out


def make_scenario(context: int, s: Settings, seed: int | None = None) -> Scenario:
    """Keys, values and the last ``num_queries`` queries of a context of ``context`` tokens."""
    rng = np.random.default_rng(s.seed if seed is None else seed)
    h, g, d, lq = s.num_kv_heads, s.group_size, s.head_dim, min(s.num_queries, context)
    positions = np.arange(context, dtype=np.float64)
    # keys: channel scales, a few outlier channels with a large mean, RoPE
    k_scale = np.exp(0.3 * rng.standard_normal((h, 1, d)))
    k_mean = np.zeros((h, 1, d))
    out_ch = rng.choice(d, size=min(s.outliers, d), replace=False)
    k_scale[..., out_ch] *= 3.0
    k_mean[..., out_ch] = rng.choice([-1.0, 1.0], size=(h, 1, len(out_ch))) * 8.0
    k_pre = k_mean + k_scale * rng.standard_normal((h, context, d))
    k = rope(k_pre, positions)
    # values: heavy tails (Student-t, 3 dof, unit variance), channel scales, a mean per head
    v_scale = np.exp(0.3 * rng.standard_normal((h, 1, d)))
    v_mean = 0.5 * rng.standard_normal((h, 1, d))
    v = v_mean + v_scale * rng.standard_t(3, size=(h, context, d)) / math.sqrt(3.0)
    # queries: content with the same outlier channels, RoPE at their positions, plus retrieval
    q_pos = positions[context - lq :]
    q_mean = np.zeros((h, 1, 1, d))
    q_mean[..., out_ch] = rng.choice([-1.0, 1.0], size=(h, 1, 1, len(out_ch))) * 2.0
    q_pre = q_mean + rng.standard_normal((h, g, lq, d))
    q = rope(q_pre, q_pos)
    for head in range(h):
        for member in range(g):
            beta = RETRIEVAL_STRENGTHS[member % len(RETRIEVAL_STRENGTHS)]
            if beta == 0.0:
                continue
            for i in range(lq):
                visible = context - lq + i + 1
                targets = rng.choice(visible, size=min(4, visible), replace=False)
                q[head, member, i] += beta * (k[head, targets] - k_mean[head, 0]).sum(axis=0)
    return Scenario(k=k[None].astype(np.float32), v=v[None].astype(np.float32),
                    q=q.reshape(1, h * g, lq, d).astype(np.float32))


_MASKED = -1e30  # finite stand-in for −inf: exp() gives exactly 0 and differences stay finite


@dataclasses.dataclass
class Exact:
    """Exact attention of a scenario (float64) and what the metrics reuse.

    logits, log_w, w: (1, A, Lq, T) (masked logits are ``_MASKED``, masked weights 0);
    o: (1, A, Lq, d); v_sq: (1, H, T) squared value norms; top1 (1, A, Lq); top8 sets.
    """

    logits: np.ndarray
    log_w: np.ndarray
    w: np.ndarray
    o: np.ndarray
    v_sq: np.ndarray
    top1: np.ndarray
    top8: np.ndarray


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _topk_sets(w: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argpartition(-w, k - 1, axis=-1)[..., :k], axis=-1)


def _grouped(x: np.ndarray, h: int) -> np.ndarray:
    """(1, A, Lq, n) -> (1, H, G·Lq, n)."""
    b, a, lq, n = x.shape
    return x.reshape(b, h, (a // h) * lq, n)


def _matmul_grouped(x: np.ndarray, kv: np.ndarray) -> np.ndarray:
    """x (1, A, Lq, T) @ kv (1, H, T, d) per group -> (1, A, Lq, d)."""
    h = kv.shape[1]
    return (_grouped(x, h) @ kv).reshape(x.shape[:-1] + kv.shape[-1:])


def exact_attention(sc: Scenario, scale: float) -> Exact:
    """Exact causal attention in float64 over the float32 inputs."""
    h = sc.k.shape[1]
    k64, v64 = sc.k.astype(np.float64), sc.v.astype(np.float64)
    logits = scale * (_grouped(sc.q.astype(np.float64), h) @ np.swapaxes(k64, -1, -2))
    logits = logits.reshape(sc.q.shape[:-1] + (sc.k.shape[2],))
    lq, t = logits.shape[-2:]
    logits[..., ~attention.causal_mask(lq, t)] = _MASKED
    log_w = _log_softmax(logits)
    w = np.exp(log_w)
    kk = min(8, t)
    return Exact(logits, log_w, w, _matmul_grouped(w, v64), np.sum(v64 * v64, axis=-1),
                 np.argmax(w, axis=-1), _topk_sets(w, kk))


def evaluate_cache(cache: KVCache, sc: Scenario, ex: Exact, scale: float) -> dict:
    """Metrics of one filled cache (layer 0) against the exact attention ``ex``."""
    h = sc.k.shape[1]
    o_hat = cache.attend(0, sc.q, scale=scale).astype(np.float64)
    # the cache's own logits (the ones attend softmaxes), recomputed from the codes
    arrays = {n: (a.astype(np.float32) if a.dtype == np.float16 else a) for n, a in cache.stored(0).items()}
    q_rot = estimators.rotate_queries(sc.q.reshape(-1, sc.q.shape[-1]), cache.key_plan).reshape(sc.q.shape)
    scores = attention.key_scores(q_rot, arrays["key_indices"], arrays["key_norms"], cache.key_plan,
                                  group_size=sc.q.shape[1] // h, key_signs=arrays.get("key_signs"),
                                  key_gammas=arrays.get("key_gammas"))
    eff = scale / cache.key_alpha if cache.debiased else scale
    masked = ex.logits == _MASKED
    logits_hat = scores.astype(np.float64)
    logits_hat *= eff
    logits_hat[masked] = _MASKED
    log_w_hat = _log_softmax(logits_hat)
    w_hat = np.exp(log_w_hat)
    w = ex.w
    kl = np.sum(w * (ex.log_w - log_w_hat), axis=-1)
    # logit error ε and its w-weighted spread (softmax ignores a uniform shift); masked ε = 0
    eps = logits_hat
    eps -= ex.logits
    mean_w = np.sum(w * eps, axis=-1, keepdims=True)
    eps -= mean_w
    logit_std = np.sqrt(np.sum(w * eps * eps, axis=-1))
    top1 = np.argmax(w_hat, axis=-1) == ex.top1
    kk = ex.top8.shape[-1]
    b_set = _topk_sets(w_hat, kk)
    top8 = (ex.top8[..., :, None] == b_set[..., None, :]).any(axis=-1).sum(axis=-1) / kk
    o = ex.o
    norm_o = np.linalg.norm(o, axis=-1)
    _, v_hat = cache.dequantize(0)
    key_err = np.linalg.norm(_matmul_grouped(w_hat, sc.v.astype(np.float64)) - o, axis=-1) / norm_o
    val_err = np.linalg.norm(_matmul_grouped(w, v_hat.astype(np.float64)) - o, axis=-1) / norm_o
    dist, alpha = cache.value_plan.codebook.distortion, cache.value_alpha
    spread = _matmul_grouped(w * w, ex.v_sq[..., None])[..., 0] / norm_o**2  # Σ w² ‖v‖² / ‖o‖²
    if cache.debiased_values:  # unbiased values: per-vector error (D − (1−α)²)/α², no coherent part
        pred2 = (dist - (1 - alpha) ** 2) / alpha**2 * spread
    else:
        pred2 = (1 - alpha) ** 2 + (dist - (1 - alpha) ** 2) * spread
    rel_err = np.linalg.norm(o_hat - o, axis=-1) / norm_o
    per_row = {"rel_err": rel_err, "kl": kl, "top1": top1.astype(np.float64), "top8": top8,
               "logit_std": logit_std, "key_err": key_err, "val_err": val_err, "val_pred": np.sqrt(pred2)}
    return {name: arr.reshape(-1) for name, arr in per_row.items()}


def bits_per_coordinate(cache: KVCache) -> tuple:
    """(key, value) stored bits per coordinate, norms included, from the storage layout."""
    d = cache.head_dim
    key = sum(dt.itemsize * math.prod(row) for n, dt, row in cache.layout() if n.startswith("key"))
    val = sum(dt.itemsize * math.prod(row) for n, dt, row in cache.layout() if n.startswith("value"))
    return 8.0 * key / d, 8.0 * val / d


def jobs(s: Settings):
    """The (context, variant, key_bits) triples of a run, in order."""
    return [(t, name, b) for t in s.contexts for b in s.bits for name in s.variants]


def regimes(s: Settings) -> np.ndarray:
    """Retrieval strength β of every evaluated row (attention head, query), in row order."""
    beta = [RETRIEVAL_STRENGTHS[a % s.group_size % len(RETRIEVAL_STRENGTHS)]
            for a in range(s.num_kv_heads * s.group_size)]
    return np.repeat(np.array(beta), s.num_queries)


def run(s: Settings, progress=None) -> list:
    """Evaluate every job. Returns one dict per job: context, variant, key_bits, value_bits,
    key_bpc/value_bpc (stored bits per coordinate), eff_tokens and max_weight of the exact
    attention, the mean of every metric, and ``_rows`` (per-row metric arrays, not for JSON)."""
    check_settings(s)
    todo = jobs(s)
    iterator = progress(todo) if progress else todo
    scale = 1.0 / math.sqrt(s.head_dim)
    rows, current = [], None
    for context, name, bits in iterator:
        if current is None or current[0] != context:
            sc = make_scenario(context, s)
            exact = exact_attention(sc, scale)
            eff_tokens = float(np.mean(1.0 / np.sum(exact.w**2, axis=-1)))
            max_w = float(np.mean(exact.w.max(axis=-1)))
            current = (context, sc, exact)
        value_bits = s.value_bits if s.value_bits is not None else min(bits, 8)
        cache = KVCache(1, s.num_kv_heads, s.head_dim, key_bits=bits, value_bits=value_bits, seed=s.seed,
                        rotation=s.rotation, debiased_values=s.debiased_values, backend=s.backend,
                        **VARIANTS[name])
        cache.append(0, sc.k, sc.v)
        per_row = evaluate_cache(cache, sc, exact, scale)
        kb, vb = bits_per_coordinate(cache)
        row = {"context": context, "variant": name, "key_bits": bits, "value_bits": value_bits,
               "key_bpc": kb, "value_bpc": vb, "eff_tokens": eff_tokens, "max_weight": max_w}
        row.update({m: float(per_row[m].mean()) for m in METRICS})
        row["_rows"] = per_row
        rows.append(row)
    return rows


def public(rows: list) -> list:
    """Rows without the per-row arrays (JSON-ready)."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def format_table(rows: list) -> str:
    """The fidelity table (Markdown)."""
    head = ("| context | variant | K/V bits | K/V bits/coord | rel_err | KL | top-1 | top-8 | logit std "
            "| key_err | val_err | val_pred |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['context']} | {r['variant']} | {r['key_bits']}/{r['value_bits']} | "
            f"{r['key_bpc']:.2f}/{r['value_bpc']:.2f} | {r['rel_err']:.4f} | {r['kl']:.3f} | {r['top1']:.3f} | "
            f"{r['top8']:.3f} | {r['logit_std']:.3f} | {r['key_err']:.4f} | {r['val_err']:.4f} | "
            f"{r['val_pred']:.4f} |"
        )
    contexts = sorted({(r["context"], round(r["eff_tokens"], 1), round(r["max_weight"], 3)) for r in rows})
    notes = "; ".join(f"T={c}: mean 1/Σw² = {e}, mean max weight = {m}" for c, e, m in contexts)
    n = len(rows[0]["_rows"]["kl"]) if rows and "_rows" in rows[0] else 0
    return "\n".join(lines) + f"\n\nExact attention ({n} rows per context): {notes}"


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def format_paired(rows: list, baseline: str = "mse") -> str:
    """Each variant minus ``baseline`` on the same rows: Δtop-1 and ΔKL with paired standard errors."""
    base = {(r["context"], r["key_bits"]): r for r in rows if r["variant"] == baseline}
    lines = [f"| context | bits | variant | Δtop-1 vs {baseline} | ΔKL vs {baseline} | KL ratio |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get((r["context"], r["key_bits"]))
        if b is None or r["variant"] == baseline:
            continue
        d1 = r["_rows"]["top1"] - b["_rows"]["top1"]
        dk = r["_rows"]["kl"] - b["_rows"]["kl"]
        lines.append(f"| {r['context']} | {r['key_bits']} | {r['variant']} | {d1.mean():+.3f} ± {_se(d1):.3f} | "
                     f"{dk.mean():+.3f} ± {_se(dk):.3f} | {r['kl'] / b['kl']:.2f} |")
    return "\n".join(lines)


def format_regimes(rows: list, s: Settings) -> str:
    """KL and top-1 by retrieval strength β (diffuse heads β = 0 ... peaked heads β = 1)."""
    beta = regimes(s)
    levels = sorted(set(beta.tolist()))
    head = "| context | bits | variant | " + " | ".join(f"KL β={b:g}" for b in levels) + " | " + \
        " | ".join(f"top-1 β={b:g}" for b in levels) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        kl = [r["_rows"]["kl"][beta == b].mean() for b in levels]
        t1 = [r["_rows"]["top1"][beta == b].mean() for b in levels]
        lines.append(f"| {r['context']} | {r['key_bits']} | {r['variant']} | " + " | ".join(f"{x:.3f}" for x in kl)
                     + " | " + " | ".join(f"{x:.3f}" for x in t1) + " |")
    return "\n".join(lines)


def alignment_study(bits=(2, 3, 4), dim: int = 128, vectors: int = 4000, seed: int = 0,
                    rotation: str = "hadamard") -> list:
    """Inner-product error of each key variant for random and for aligned queries.

    Unit keys x (Gaussian directions); a random unit query r, and the aligned query x itself.
    Returns rows {variant, bits, random_sd, aligned_sd, aligned_bias}: standard deviations of
    (estimate − truth) times √dim, and the mean aligned error (−(1 − α) for plain mse).
    This is what makes the ranking of mse and prod depend on how peaked attention is
    (docs/kv-cache.md).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((vectors, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    r = rng.standard_normal((vectors, dim))
    r = (r / np.linalg.norm(r, axis=1, keepdims=True)).astype(np.float32)
    truth_r = np.sum(x.astype(np.float64) * r, axis=1)
    out = []
    for b in bits:
        for name, kw in VARIANTS.items():
            cache = KVCache(1, 1, dim, key_bits=b, value_bits=1, seed=seed, rotation=rotation, **kw)
            cache.append(0, x[None, None], x[None, None])
            a = {n: np.asarray(v, np.float32) if v.dtype == np.float16 else v for n, v in cache.stored(0).items()}
            y_hat = cache.key_plan.codebook.centroids_f32[
                attention.packing.unpack_bits(a["key_indices"][0, 0], cache.key_plan.bits, dim)]
            norms = a["key_norms"][0, 0].astype(np.float64)

            def estimate(q):
                q_rot = estimators.rotate_queries(q, cache.key_plan).astype(np.float64)
                est = np.sum(q_rot * y_hat, axis=1)
                if "key_signs" in a:
                    z = attention.qjl.signs_of(a["key_signs"][0, 0], dim).astype(np.float64)
                    proj = q_rot @ cache.key_plan.projection.T.astype(np.float64)
                    est = est + cache.key_plan.qjl_scale * a["key_gammas"][0, 0] * np.sum(proj * z, axis=1)
                est = est * norms
                return est / cache.key_alpha if cache.debiased else est

            err_r = estimate(r) - truth_r
            err_a = estimate(x) - np.sum(x.astype(np.float64) ** 2, axis=1)
            out.append({"variant": name, "bits": b, "random_sd": float(err_r.std() * math.sqrt(dim)),
                        "aligned_sd": float(err_a.std() * math.sqrt(dim)), "aligned_bias": float(err_a.mean())})
    return out


def format_alignment(rows: list) -> str:
    lines = ["| bits | variant | random query: sd·√d | aligned query: sd·√d | aligned: mean error |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bits']} | {r['variant']} | {r['random_sd']:.3f} | {r['aligned_sd']:.3f} | "
                     f"{r['aligned_bias']:+.4f} |")
    return "\n".join(lines)


def plot(rows: list, path: str) -> None:
    """Metrics vs key bits, one line per variant, at the largest context. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'tqref[plot]' (or pip install matplotlib)") from exc
    context = max(r["context"] for r in rows)
    sel = [r for r in rows if r["context"] == context]
    styles = {"mse": ("o", "-"), "mse-debiased": ("x", "--"), "prod-gaussian": ("s", "-"),
              "prod-orthogonal": ("^", "-")}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, metric, title in zip(axes, ("rel_err", "kl", "top1", "top8"),
                                 ("output relative error", "KL(w ‖ ŵ) [nats]", "top-1 agreement", "top-8 overlap")):
        for name in dict.fromkeys(r["variant"] for r in sel):
            pts = sorted((r["key_bits"], r[metric]) for r in sel if r["variant"] == name)
            marker, line = styles.get(name, ("o", "-"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle=line, label=name)
        ax.set_xlabel("key bits per coordinate")
        ax.set_xticks(sorted({r["key_bits"] for r in sel}))
        ax.set_title(title)
        if metric in ("rel_err", "kl"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Attention over a compressed KV cache vs exact attention, context {context}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
