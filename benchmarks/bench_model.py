"""Real-model speed: one causal pass of SmolLM2-135M (30 layers) with a TurboQuant KV cache.

    python benchmarks/bench_model.py                          # mse-k4v4, 1,024 tokens, numba
    python benchmarks/bench_model.py --configs mse-k3v3,prod-k3v3 --tokens 512 --json bench_model.json

For each configuration: seconds of one prefill pass over the first --tokens tokens of the
shipped text (best of --repeat after a warm-up pass that compiles Numba's kernels), split
into the time inside the cache (append: quantize and store; attend: attention from the
codes) and the rest of the forward (projections, MLP, output head); the exact float32 cache
runs in the same process as the baseline, so the ratios are like for like. Not a timed test: the numbers depend on
the machine and on what else runs on it.

Targets (issue 11 / 13, 2 cores): one TurboQuant configuration over 30 layers and 1,024
tokens in ≤ 60 s with the numba backend; attention faster than the rest of the forward.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tqref.models import LlamaModel, Timings, parse_configs  # noqa: E402
from tqref.models import evaluate as ev  # noqa: E402


def one_pass(model, ids, config, backend):
    cache = model.new_cache(config, backend=backend)
    t = Timings()
    start = time.perf_counter()
    model.forward(ids, cache, timings=t)
    return time.perf_counter() - start, t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="mse-k4v4", help="TurboQuant (or other) configurations, comma-separated")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--backend", default="numba")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    model = LlamaModel.load()
    ids = model.encode(ev.default_text())[: args.tokens]
    configs = parse_configs("f32," + args.configs)
    rows = []
    print(f"{model.config.name}: {model.config.num_layers} layers, {ids.size} tokens, backend {args.backend}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'cache':24s} {'total s':>8s} {'append s':>9s} {'attend s':>9s} {'rest s':>8s} {'cache/rest':>10s} "
          f"{'vs f32':>7s}")
    base = None
    for config in configs:
        one_pass(model, ids[:16], config, args.backend)  # warm-up: Numba compiles (or loads its cache)
        best = min((one_pass(model, ids, config, args.backend) for _ in range(args.repeat)), key=lambda r: r[0])
        total, t = best
        base = total if base is None else base
        rows.append({"config": config.name, "seconds": total, "append_seconds": t.append,
                     "attend_seconds": t.attend, "rest_seconds": t.rest})
        print(f"{config.name:24s} {total:8.1f} {t.append:9.1f} {t.attend:9.1f} {t.rest:8.1f} "
              f"{t.attention / t.rest:10.2f} {total / base:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tokens": int(ids.size), "backend": args.backend, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
