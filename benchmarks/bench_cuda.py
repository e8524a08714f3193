"""GPU benchmark of the "cuda" backend (run by benchmarks/gpu_check.sh; needs a CUDA GPU).

Measures, with CUDA events (median of timed repetitions after a warm-up that compiles):

* device-to-device copy bandwidth (bytes read + written per second) — the ceiling;
* mse quantize and dequantize at N vectors (default 4,194,304), d = 128, 3 and 4 bits:
  time, GB/s (input + output bytes), fraction of the copy bandwidth; plus a bit-exactness
  check of a sample of rows against the NumPy reference;
* decode attention (q_len 1) over a 3-bit mse-compressed cache (default 32,768 tokens,
  32 heads, head_dim 128), fused from packed codes, against fp16 attention over the
  uncompressed cache with torch on the same GPU (skipped when torch is missing).

Writes one JSON file (``--out``). Every section records its own error instead of aborting.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback

import numpy as np
from numba import cuda


def _median_ms(fn, reps, sync):
    fn()  # warm-up (compiles)
    sync()
    times = []
    for _ in range(reps):
        try:
            start, stop = cuda.event(timing=True), cuda.event(timing=True)
        except TypeError:  # the CUDA simulator (smoke test of this script): wall clock
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop))
    return float(np.median(times)), [float(t) for t in times]


def _fill_kernel():
    from numba import float32, uint64

    @cuda.jit
    def fill(x, seed):
        i = cuda.grid(1)
        n, d = x.shape
        if i < n * d:
            z = uint64(i) * uint64(0x9E3779B97F4A7C15) + uint64(seed)
            z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
            z = z ^ (z >> uint64(31))
            u = float32(z >> uint64(40)) * float32(1.0 / 16777216.0)  # [0, 1)
            x[i // d, i % d] = float32(2.0) * u - float32(1.0)

    return fill


def copy_bandwidth(nbytes, reps):
    src = cuda.device_array(nbytes // 4, dtype=np.float32)
    dst = cuda.device_array(nbytes // 4, dtype=np.float32)
    ms, all_ms = _median_ms(lambda: dst.copy_to_device(src), reps, cuda.synchronize)
    return {"bytes_each_way": nbytes, "median_ms": ms, "GBps": 2 * nbytes / ms / 1e6, "times_ms": all_ms}


def quantize_section(n, d, bits, reps, copy_gbps):
    from tqref.backends import cuda as C
    from tqref.reference import mse
    from tqref.reference.plan import Config, make_plan

    plan = make_plan(Config("mse", d, bits, seed=1))
    x = cuda.device_array((n, d), dtype=np.float32)
    fill = _fill_kernel()
    fill[(n * d + 255) // 256, 256](x, 12345)
    cuda.synchronize()
    nbytes = (d * bits + 7) // 8
    res = {"n": n, "d": d, "bits": bits, "layout": "lane"}
    holder = {}

    def q():
        holder["codes"] = C.mse_quantize_device(x, plan)

    ms, all_ms = _median_ms(q, reps, cuda.synchronize)
    moved = n * d * 4 + n * (nbytes + 4)
    res["quantize"] = {"median_ms": ms, "bytes": moved, "GBps": moved / ms / 1e6,
                       "fraction_of_copy": moved / ms / 1e6 / copy_gbps if copy_gbps else None, "times_ms": all_ms}
    packed, norms = holder["codes"]

    def dq():
        holder["out"] = C.mse_dequantize_device(packed, norms, plan)

    ms, all_ms = _median_ms(dq, reps, cuda.synchronize)
    res["dequantize"] = {"median_ms": ms, "bytes": moved, "GBps": moved / ms / 1e6,
                         "fraction_of_copy": moved / ms / 1e6 / copy_gbps if copy_gbps else None,
                         "times_ms": all_ms}
    # exactness on a sample of rows (first, middle and last 2048)
    idx = np.unique(np.clip(np.concatenate([np.arange(2048), n // 2 + np.arange(2048), n - 2048 + np.arange(2048)]), 0, n - 1))
    xs = C._arrays.to_host(x)[idx]
    ps = C._arrays.to_host(packed)[idx]
    ns = C._arrays.to_host(norms)[idx]
    rp, rn = mse.quantize(xs, plan)
    out = C._arrays.to_host(holder["out"])[idx]
    res["exact_sample_rows"] = int(len(idx))
    res["codes_equal_reference"] = bool(np.array_equal(ps, rp))
    res["norms_bitwise_equal_reference"] = bool(np.array_equal(ns.view(np.uint32), rn.view(np.uint32)))
    ref_out = mse.dequantize(rp, rn, plan)
    res["dequantized_bitwise_equal_reference"] = bool(np.array_equal(out.view(np.uint32), ref_out.view(np.uint32)))
    del x, packed, norms, holder
    return res


def attention_section(tokens, heads, d, reps):
    from tqref.backends import cuda as C
    from tqref.reference.plan import Config, make_plan

    plan = make_plan(Config("mse", d, 3, seed=2))
    n = heads * tokens
    fill = _fill_kernel()
    k = cuda.device_array((n, d), dtype=np.float32)
    v = cuda.device_array((n, d), dtype=np.float32)
    fill[(n * d + 255) // 256, 256](k, 1)
    fill[(n * d + 255) // 256, 256](v, 2)
    kp, kn = C.mse_quantize_device(k, plan)
    vp, vn = C.mse_quantize_device(v, plan)
    nb = (d * 3 + 7) // 8
    kp = C._arrays.unwrap(kp).reshape(1, heads, tokens, nb)
    vp = C._arrays.unwrap(vp).reshape(1, heads, tokens, nb)
    kn = C._arrays.unwrap(kn).reshape(1, heads, tokens)
    vn = C._arrays.unwrap(vn).reshape(1, heads, tokens)
    q = cuda.to_device(np.random.default_rng(0).standard_normal((1, heads, 1, d)).astype(np.float32))
    scale = 1.0 / math.sqrt(d)
    res = {"tokens": tokens, "heads": heads, "head_dim": d, "bits": 3, "q_len": 1}
    best = None
    for chunk in (128, 256, 512):
        ms, all_ms = _median_ms(
            lambda: C.attend_device(q, kp, kn, vp, vn, plan, plan, scale=scale, group_size=1, causal=False,
                                    chunk=chunk),
            reps, cuda.synchronize)
        res[f"compressed_chunk{chunk}_ms"] = ms
        if best is None or ms < best[1]:
            best = (chunk, ms)
    res["compressed_ms"] = best[1]
    res["compressed_best_chunk"] = best[0]
    res["compressed_bytes"] = heads * tokens * 2 * (nb + 4)
    res["compressed_GBps"] = res["compressed_bytes"] / best[1] / 1e6
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    except Exception as exc:
        res["torch"] = f"skipped: {exc}"
        return res
    dev = torch.device("cuda")
    kt = torch.randn(1, heads, tokens, d, device=dev, dtype=torch.float16)
    vt = torch.randn(1, heads, tokens, d, device=dev, dtype=torch.float16)
    qt = torch.randn(1, heads, 1, d, device=dev, dtype=torch.float16)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def manual():
        w = torch.softmax((qt @ kt.transpose(-1, -2)) * scale, dim=-1)
        return w @ vt

    for name, fn in (("fp16_sdpa", lambda: sdpa(qt, kt, vt)), ("fp16_matmul_softmax", manual)):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        res[f"{name}_ms"] = float(np.median(times))
    res["fp16_bytes"] = heads * tokens * 2 * d * 2
    res["fp16_best_ms"] = min(res["fp16_sdpa_ms"], res["fp16_matmul_softmax_ms"])
    res["speedup_vs_fp16"] = res["fp16_best_ms"] / res["compressed_ms"]
    res["torch_version"] = torch.__version__
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--n", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--copy-bytes", type=int, default=2 * 1024**3)
    args = ap.parse_args(argv)
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.version, "platform": platform.platform()}
    try:
        import numba

        result["numba"] = numba.__version__
        name = getattr(cuda.get_current_device(), "name", "simulator")
        result["device"] = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:
        result["error"] = f"no CUDA device: {exc}"
        _write(args.out, result)
        return 1
    try:
        import cupy

        result["cupy"] = cupy.__version__
    except Exception as exc:
        result["cupy"] = f"missing: {exc}"
    sections = [("copy", lambda: copy_bandwidth(args.copy_bytes, args.reps))]
    for bits in (3, 4):
        sections.append((f"mse_d128_b{bits}",
                         lambda bits=bits: quantize_section(args.n, 128, bits, args.reps, result["copy"].get("GBps"))))
    sections.append(("attention", lambda: attention_section(args.tokens, args.heads, 128, args.reps)))
    for name, fn in sections:
        t0 = time.time()
        try:
            result[name] = fn()
        except Exception:
            result[name] = {"error": traceback.format_exc()}
        result.setdefault("section_seconds", {})[name] = round(time.time() - t0, 2)
        _write(args.out, result)
        print(f"[bench_cuda] {name}: {json.dumps(result[name])[:400]}", flush=True)
    return 0


def _write(path, result):
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
