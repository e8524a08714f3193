"""CPU throughput: reference vs numba backend, ratios measured in one run.

    python benchmarks/bench_cpu.py                   # d = 128 and 1536, table on stdout
    python benchmarks/bench_cpu.py --dims 128 --json bench_cpu.json

Rows: mse quantize / dequantize at 2, 3, 4 bits; prod quantize / dequantize at 3, 4 bits
(vectors/s); the inner-product scan of one query against many packed keys (keys/s; mse 3
bits and prod 4 bits). Each rate is the best of --repeat timed calls of the backend
method on the same batch, after a warm-up call (Numba compiles on first use; the cache
makes later runs start fast). The reference runs on smaller batches (it is 10–100× slower);
its rate is per vector, so the ratio is still like for like. Not a timed test: numbers
depend on the machine and on what else runs on it.

Dequantize rows allocate their output like the reference (on Linux, faulting in fresh
zeroed pages costs about as much as the kernel itself at d = 128); the "into out=" row
reuses one buffer (NumbaBackend's ``out=`` argument), as a streaming caller would.

Targets (issue 6, 2-core machine, d = 128, 3 bits): mse quantize ≥ 4M vectors/s and ≥ 15×
the reference, dequantize ≥ 8M vectors/s, one query against 1M keys ≥ 10M keys/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tqref.backends.numba_cpu import NumbaBackend  # noqa: E402
from tqref.backends.reference import ReferenceBackend  # noqa: E402
from tqref.reference.plan import Config, make_plan  # noqa: E402

# (numba batch, reference batch) in vectors / keys, per dimension
SIZES = {
    128: {"mse": (1_000_000, 50_000), "prod": (200_000, 5_000), "scan": (1_000_000, 100_000)},
    1536: {"mse": (100_000, 4_000), "prod": (8_000, 256), "scan": (250_000, 10_000)},
}


def best_rate(fn, count: int, repeat: int):
    """(count / best wall seconds, count / best process CPU seconds over all threads)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return count / best, count / max(best_cpu, 1e-9)


def random_codes(rng, n, d, plan, prod_plan=None):
    """Packed keys straight from random bytes (scan speed does not depend on the values)."""
    from tqref.reference import packing

    packed = rng.integers(0, 256, size=(n, packing.packed_size(d, plan.bits)), dtype=np.uint8)
    norms = rng.uniform(0.5, 2.0, n).astype(np.float32)
    if prod_plan is None:
        return packed, norms
    signs = rng.integers(0, 256, size=(n, packing.packed_size(d, 1)), dtype=np.uint8)
    gammas = rng.uniform(0.0, 0.3, n).astype(np.float32)
    return packed, norms, signs, gammas


def run(dims, repeat, scale):
    ref, nb = ReferenceBackend(), NumbaBackend()
    rows = []
    rng = np.random.default_rng(0)
    for d in dims:
        sizes = {k: (max(1, int(a * scale)), max(1, int(b * scale))) for k, (a, b) in SIZES[d].items()}
        n_nb = max(sizes["mse"][0], sizes["prod"][0])
        x_all = rng.standard_normal((n_nb, d)).astype(np.float32)
        cases = [("mse", b) for b in (2, 3, 4)] + [("prod", b) for b in (3, 4)]
        for kind, bits in cases:
            plan = make_plan(Config(kind, d, bits, 1, projection="gaussian" if kind == "prod" else None))
            n_fast, n_ref = sizes[kind]
            x, x_ref = x_all[:n_fast], x_all[:n_ref]
            quant = nb.mse_quantize if kind == "mse" else nb.prod_quantize
            rquant = ref.mse_quantize if kind == "mse" else ref.prod_quantize
            dequant = nb.mse_dequantize if kind == "mse" else nb.prod_dequantize
            rdequant = ref.mse_dequantize if kind == "mse" else ref.prod_dequantize
            quant(x[:2048], plan)  # compile / load from cache
            codes = quant(x, plan)
            ref_codes = tuple(a[:n_ref] for a in codes)
            dequant(*(a[:2048] for a in codes), plan)
            r_q, _ = best_rate(lambda: rquant(x_ref, plan), n_ref, max(1, repeat - 1))
            n_q, c_q = best_rate(lambda: quant(x, plan), n_fast, repeat)
            r_d, _ = best_rate(lambda: rdequant(*ref_codes, plan), n_ref, max(1, repeat - 1))
            n_d, c_d = best_rate(lambda: dequant(*codes, plan), n_fast, repeat)
            rows.append(dict(op=f"{kind} quantize", d=d, bits=bits, unit="vectors/s", reference=r_q, numba=n_q,
                             numba_per_cpu_second=c_q))
            rows.append(dict(op=f"{kind} dequantize", d=d, bits=bits, unit="vectors/s", reference=r_d, numba=n_d,
                             numba_per_cpu_second=c_d))
            if kind == "mse" and bits == 3:  # the same into a reused buffer: no page faults
                buf = np.zeros((n_fast, d), np.float32)
                n_o, c_o = best_rate(lambda: dequant(*codes, plan, out=buf), n_fast, repeat)
                rows.append(dict(op="mse dequantize into out=", d=d, bits=bits, unit="vectors/s", reference=r_d,
                                 numba=n_o, numba_per_cpu_second=c_o))
                del buf
            print(f"  measured {kind} {bits} bits d={d}", file=sys.stderr)
        n_fast, n_ref = sizes["scan"]
        for kind, bits in (("mse", 3), ("prod", 4)):
            plan = make_plan(Config(kind, d, bits, 1, projection="gaussian" if kind == "prod" else None))
            codes = random_codes(rng, n_fast, d, plan, plan if kind == "prod" else None)
            q = rng.standard_normal((1, d)).astype(np.float32)
            fn = nb.mse_inner_product if kind == "mse" else nb.prod_inner_product
            rfn = ref.mse_inner_product if kind == "mse" else ref.prod_inner_product
            fn(q, *(a[:4096] for a in codes), plan)
            ref_codes = tuple(a[:n_ref] for a in codes)
            r, _ = best_rate(lambda: rfn(q, *ref_codes, plan), n_ref, max(1, repeat - 1))
            n, c = best_rate(lambda: fn(q, *codes, plan), n_fast, repeat)
            rows.append(dict(op=f"{kind} scan, 1 query × {n_fast:,} keys", d=d, bits=bits, unit="keys/s",
                             reference=r, numba=n, numba_per_cpu_second=c))
            print(f"  measured {kind} scan d={d}", file=sys.stderr)
    return rows


LOAD_BEFORE = None


def fmt(rate: float) -> str:
    return f"{rate / 1e6:8.3f}M" if rate >= 1e5 else f"{rate / 1e3:8.1f}k"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 1536], choices=sorted(SIZES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every batch size (e.g. 0.1 for a smoke run)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    import numba

    global LOAD_BEFORE
    LOAD_BEFORE = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = run(args.dims, args.repeat, args.scale)
    print(f"tqref CPU benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy {np.__version__}")
    print("rates per wall second; 'numba/cpu-s' is per CPU-second summed over threads (per-core")
    print("throughput: on an otherwise idle machine wall ≈ threads × cpu-s when the kernel scales)")
    print(f"{'operation':38s} {'d':>5s} {'bits':>4s} {'reference':>10s} {'numba':>10s} {'ratio':>7s} "
          f"{'numba/cpu-s':>11s}  unit")
    for r in rows:
        print(f"{r['op']:38s} {r['d']:5d} {r['bits']:4d} {fmt(r['reference']):>10s} {fmt(r['numba']):>10s} "
              f"{r['numba'] / r['reference']:6.1f}× {fmt(r['numba_per_cpu_second']):>11s}  {r['unit']}")
    try:
        print(f"load average before/after: {LOAD_BEFORE} / {os.getloadavg()}")
    except OSError:
        pass
    got = {(r["op"].split(",")[0], r["d"], r["bits"]): r for r in rows}
    if 128 in args.dims:
        q, dq, sc = got[("mse quantize", 128, 3)], got[("mse dequantize", 128, 3)], got[("mse scan", 128, 3)]
        checks = [("mse quantize ≥ 4M vectors/s", q["numba"] >= 4e6),
                  ("mse quantize ≥ 15× reference", q["numba"] >= 15 * q["reference"]),
                  ("mse dequantize ≥ 8M vectors/s", dq["numba"] >= 8e6),
                  ("scan ≥ 10M keys/s", sc["numba"] >= 10e6)]
        print("targets (d=128, 3 bits): " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "cpus": os.cpu_count(), "threads": numba.get_num_threads()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
