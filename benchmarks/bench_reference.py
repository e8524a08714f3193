"""Throughput of the NumPy reference (issue 2's bar: ≥ 200k vectors/s for 3-bit d = 128 quantize).

    python benchmarks/bench_reference.py [--vectors 200000] [--repeat 3]

Prints vectors/s (best of --repeat runs) for mse quantize/dequantize at 2/3/4 bits and prod
quantize at 3/4 bits, at d = 128 and d = 1536, plus a plain-NumPy baseline (a dense
matmul rotation + searchsorted, the "about 300k/s" comparison point) in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tqref


def best_rate(fn, n, repeat):
    fn()  # warm caches (plans, codebooks)
    best = min(_timed(fn) for _ in range(repeat))
    return n / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_numpy_quantize(x, rot, boundaries):
    norms = np.linalg.norm(x, axis=1)
    y = (x / norms[:, None]) @ rot.T
    return np.searchsorted(boundaries, y), norms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rows = []
    for d in (128, 1536):
        n = args.vectors if d == 128 else max(args.vectors // 100, 1000)  # prod is O(d²) per vector
        x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        for kind, bits in (("mse", 2), ("mse", 3), ("mse", 4), ("prod", 3), ("prod", 4)):
            q = tqref.TurboQuantMSE(d, bits) if kind == "mse" else tqref.TurboQuantProd(d, bits)
            codes = q.quantize(x)
            rows.append((d, f"{kind} {bits}-bit", "quantize", best_rate(lambda: q.quantize(x), n, args.repeat)))
            rows.append((d, f"{kind} {bits}-bit", "dequantize", best_rate(lambda: q.dequantize(codes), n, args.repeat)))
        q = tqref.TurboQuantMSE(d, 3)
        rot = np.linalg.qr(np.random.default_rng(1).standard_normal((d, d)))[0].astype(np.float32)
        b = q.plan.codebook.boundaries.astype(np.float32)
        rows.append((d, "plain NumPy 3-bit", "quantize", best_rate(lambda: plain_numpy_quantize(x, rot, b), n, args.repeat)))
    print(f"{'d':>5}  {'quantizer':<18} {'operation':<11} {'vectors/s':>12}")
    for d, name, op, rate in rows:
        print(f"{d:>5}  {name:<18} {op:<11} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
