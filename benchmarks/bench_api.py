"""Speed where users feel it (issue 13): the public API against the kernels and numpy, one run.

    python benchmarks/bench_api.py                  # about 20 s on 2 cores (a first run compiles)
    python benchmarks/bench_api.py --quick          # smaller sizes, a few seconds
    python benchmarks/bench_api.py --json api.json

Every row is measured in this one run, so its ratio holds even when the machine is loaded
(the absolute rates swing with load, the ratios much less). Each rate is the best of
--repeat calls after a warm-up, per wall second and per CPU second (process time of all
threads: what the work costs when the machine is shared).

Rows (d = 128, 3 bits, backend "numba" unless named):

* public quantize / dequantize / inner_product against the backend kernel on the same
  float32 batch (bar: within 10 %), and quantize from float16 / float64 / strided input
  (every other row; a column slice of a wider array);
* KVCache.append of keys and values, in vectors per second (k and v counted separately;
  bar ≥ 3M/s), from C-contiguous arrays and from the transposed views transformers passes;
* decode attention, one query per head, 32 query heads over 8 kv heads, at several context
  lengths: KVCache.attend against numpy float32 attention over the same uncompressed K/V
  (bar ≥ 5× at 32k tokens; µs per 1k tokens shows the time is linear in T);
* causal prefill attention (Lq = T, several T) against numpy float32 with the causal mask
  (bar ≥ 1× at every T).

Not a timed test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tqref  # noqa: E402
from tqref.backends.numba_cpu import NumbaBackend  # noqa: E402

D = 128
BITS = 3
HEADS, KV_HEADS = 32, 8


def timed_together(fns, repeat: int) -> list:
    """[(best wall seconds, best CPU seconds)] of each of ``fns`` over ``repeat`` rounds, the
    fns called in turn in every round after one warm-up call each: a swing of the machine's
    load hits them alike, so their ratios hold better than those of separate runs."""
    for fn in fns:
        fn()
    best = [[math.inf, math.inf] for _ in fns]
    for _ in range(repeat):
        for fn, b in zip(fns, best):
            c, t = time.process_time(), time.perf_counter()
            fn()
            b[0] = min(b[0], time.perf_counter() - t)
            b[1] = min(b[1], time.process_time() - c)
    return [(wall, max(cpu, 1e-9)) for wall, cpu in best]


def timed(fn, repeat: int):
    """(best wall seconds, best CPU seconds) over ``repeat`` calls after one warm-up call."""
    return timed_together([fn], repeat)[0]


#: seconds to wait after a numpy baseline before timing the numba rows: numpy's BLAS worker
#: threads spin for a while after a matmul, and on 2 cores they would take the CPU the numba
#: threads need (measured: causal prefill T = 256 right after the numpy one 17 ms wall and
#: 33 ms CPU, after this pause 11 ms and 18 ms)
BLAS_PARK_S = 0.5


def timed_alone(fn, repeat: int):
    """:func:`timed` after BLAS_PARK_S of idle time."""
    time.sleep(BLAS_PARK_S)
    return timed(fn, repeat)


def against(kernel, rows, repeat: int) -> list:
    """Rows for the kernel call ``kernel = (name, count, unit, fn)`` and for ``rows`` (same
    tuples) measured with it (timed_together), each with its ratio to the kernel."""
    secs = timed_together([kernel[3]] + [r[3] for r in rows], repeat)
    base = row(*kernel[:3], secs[0])
    return [base] + [row(*r[:3], t, base) for r, t in zip(rows, secs[1:])]


def numpy_attention(q, k, v, scale, causal):
    """Float32 softmax attention over uncompressed K/V with numpy (matmul, mask, softmax,
    matmul), one kv head's group at a time: q (1, A, Lq, d), k/v (1, H, T, d)."""
    _, a, lq, d = q.shape
    h, t = k.shape[1], k.shape[2]
    g = a // h
    out = np.empty_like(q)
    mask = np.arange(t)[None, :] <= (t - lq + np.arange(lq))[:, None] if causal and lq > 1 else None
    for kv in range(h):
        s = (q[0, kv * g : (kv + 1) * g] @ k[0, kv].T) * np.float32(scale)  # (G, Lq, T)
        if mask is not None:
            s = np.where(mask, s, np.float32(-np.inf))
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        out[0, kv * g : (kv + 1) * g] = s @ v[0, kv]
    return out


def row(name, count, unit, secs, base=None):
    wall, cpu = secs
    r = {"name": name, "count": count, "unit": unit, "wall_s": wall, "cpu_s": cpu,
         "per_wall_s": count / wall, "per_cpu_s": count / cpu}
    if base is not None:
        r["vs"] = base["name"]
        r["ratio_wall"] = r["per_wall_s"] / base["per_wall_s"]  # rates: batches may differ in size
        r["ratio_cpu"] = r["per_cpu_s"] / base["per_cpu_s"]
    return r


def bench_public(rng, n, repeat):
    rows = []
    x = rng.standard_normal((n, D)).astype(np.float32)
    nb = NumbaBackend()
    mse = tqref.TurboQuantMSE(D, BITS, backend="numba")
    plan = mse.plan
    wide = np.zeros((n, D + 32), np.float32)
    wide[:, 16 : 16 + D] = x
    inputs = (("float32", x), ("float16", x.astype(np.float16)), ("float64", x.astype(np.float64)),
              ("float32 every other row", np.repeat(x[: n // 2], 2, axis=0)[::2]),
              ("float32 column slice", wide[:, 16 : 16 + D]))
    rows += against(("kernel mse_quantize (float32)", n, "vectors", lambda: nb.mse_quantize(x, plan)),
                    [(f"public TurboQuantMSE.quantize ({label})", xx.shape[0], "vectors",
                      lambda xx=xx: mse.quantize(xx)) for label, xx in inputs], repeat)
    ref = tqref.TurboQuantMSE(D, BITS, backend="reference")
    small = x[: max(1, n // 16)]
    rows.append(row("reference TurboQuantMSE.quantize (float32)", small.shape[0], "vectors",
                    timed(lambda: ref.quantize(small), 1)))
    rows[-1]["note"] = "public numba / reference per vector: {:.1f}x wall".format(
        rows[1]["per_wall_s"] / rows[-1]["per_wall_s"])
    codes = mse.quantize(x)
    rows += against(("kernel mse_dequantize", n, "vectors",
                     lambda: nb.mse_dequantize(codes.indices, codes.norms, plan)),
                    [("public TurboQuantMSE.dequantize", n, "vectors", lambda: mse.dequantize(codes))], repeat)
    qv = rng.standard_normal((1, D)).astype(np.float32)
    rows += against(("kernel mse_inner_product (1 query)", n, "keys",
                     lambda: nb.mse_inner_product(qv, codes.indices, codes.norms, plan)),
                    [("public TurboQuantMSE.inner_product (1 query)", n, "keys", lambda: mse.inner_product(qv, codes))],
                    repeat)
    prod = tqref.TurboQuantProd(D, BITS + 1, backend="numba", projection="orthogonal")
    rows += against(("kernel prod_quantize (float32)", n, "vectors", lambda: nb.prod_quantize(x, prod.plan)),
                    [("public TurboQuantProd.quantize (float32)", n, "vectors", lambda: prod.quantize(x))], repeat)
    return rows


def bench_append(rng, tokens, repeat):
    k = rng.standard_normal((1, KV_HEADS, tokens, D)).astype(np.float32)
    v = rng.standard_normal((1, KV_HEADS, tokens, D)).astype(np.float32)
    cache = tqref.KVCache(1, KV_HEADS, D, key_bits=BITS, value_bits=BITS, backend="numba")
    nb = NumbaBackend()
    flat_k, flat_v = k.reshape(-1, D), v.reshape(-1, D)

    def kernels():
        nb.mse_quantize(flat_k, cache.key_plan)
        nb.mse_quantize(flat_v, cache.value_plan)

    def append():
        cache.reset()
        cache.append(0, k, v)

    # transformers hands the cache (B, H, T, d) views of (B, T, H, d) buffers
    kt, vt = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for a in (k, v))

    def append_views():
        cache.reset()
        cache.append(0, kt, vt)

    count = 2 * KV_HEADS * tokens
    return against(("kernel mse_quantize of the same k and v", count, "vectors", kernels),
                   [("KVCache.append (k and v, mse 3 bits)", count, "vectors", append),
                    ("KVCache.append of (B, T, H, d) transposed views", count, "vectors", append_views)], repeat)


def bench_attention(rng, contexts, prefill, repeat):
    rows = []
    scale = 1.0 / math.sqrt(D)
    for t in contexts:
        k = rng.standard_normal((1, KV_HEADS, t, D)).astype(np.float32)
        v = rng.standard_normal((1, KV_HEADS, t, D)).astype(np.float32)
        q = rng.standard_normal((1, HEADS, 1, D)).astype(np.float32)
        base = row(f"numpy float32 decode attention T={t}", t, "tokens",
                   timed(lambda: numpy_attention(q, k, v, scale, False), repeat))
        rows.append(base)
        for mode, kb in (("mse", BITS), ("prod", BITS)):
            cache = tqref.KVCache(1, KV_HEADS, D, key_bits=kb, value_bits=BITS, mode=mode, backend="numba")
            cache.append(0, k, v)
            r = row(f"KVCache.attend decode {mode} K{kb}/V{BITS} T={t}", t, "tokens",
                    timed_alone(lambda: cache.attend(0, q), repeat), base)
            r["us_per_1k_tokens_cpu"] = r["cpu_s"] / t * 1e9
            rows.append(r)
    for t in prefill:
        k = rng.standard_normal((1, KV_HEADS, t, D)).astype(np.float32)
        v = rng.standard_normal((1, KV_HEADS, t, D)).astype(np.float32)
        q = rng.standard_normal((1, HEADS, t, D)).astype(np.float32)
        reps = repeat if t <= 1024 else 1
        base = row(f"numpy float32 causal prefill Lq=T={t}", t, "queries",
                   timed(lambda: numpy_attention(q, k, v, scale, True), reps))
        cache = tqref.KVCache(1, KV_HEADS, D, key_bits=BITS, value_bits=BITS, backend="numba")
        cache.append(0, k, v)
        rows += [base, row(f"KVCache.attend causal prefill mse K{BITS}/V{BITS} Lq=T={t}", t, "queries",
                           timed_alone(lambda: cache.attend(0, q), reps), base)]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    if args.quick:
        n, tokens, contexts, prefill = 16_384, 2_048, [2_048, 4_096], [128, 256]
    else:
        n, tokens, contexts, prefill = 262_144, 16_384, [8_192, 32_768], [256, 512, 1_024, 2_048]
    rows = bench_public(rng, n, args.repeat) + bench_append(rng, tokens, args.repeat) + \
        bench_attention(rng, contexts, prefill, args.repeat)
    import numba

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), numpy {np.__version__}; d={D}, {BITS} bits")
    print(f"{'row':58s} {'per wall s':>12s} {'per CPU s':>12s} {'vs':>14s}")
    for r in rows:
        vs = f"{r['ratio_wall']:5.2f}x/{r['ratio_cpu']:5.2f}x" if "vs" in r else ""
        print(f"{r['name']:58s} {r['per_wall_s']:12.4g} {r['per_cpu_s']:12.4g} {vs:>14s}"
              + (f"  {r['us_per_1k_tokens_cpu']:.0f} us CPU/1k tokens" if "us_per_1k_tokens_cpu" in r else "")
              + (f"  ({r['note']})" if "note" in r else ""))
    print("# vs: wall ratio / CPU ratio against the row named in the JSON ('vs'): the kernel for the public "
          "API rows, numpy float32 for attention (> 1: faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
