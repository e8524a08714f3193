#!/usr/bin/env bash
# One prepared GPU check for the "cuda" backend (issue 7): the GPU test suite, then the
# benchmark. Needs an NVIDIA GPU; finishes in well under 5 minutes on an H200.
#
#   benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR defaults to $OUT, else ./gpu_results
#
# Writes OUTDIR/gpu_check.json (summary), gpu_bench.json (numbers), gpu_tests.txt and
# gpu_tests.xml (pytest), ptx_report.txt, nvidia-smi.txt, gpu_check.log.
# Installs numba-cuda[cu13] / cupy-cuda13x with pip only when missing; offline machines
# can bring wheels in ./.whl (installed with --no-index). Each step degrades on failure.
set -u
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-$PWD/gpu_results}}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
PY="${PYTHON:-python3}"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
START=$(date +%s)

nvidia-smi >"$OUTDIR/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (no GPU visible?)"

if [ -n "${TQREF_GPU_CHECK_NO_INSTALL:-}" ]; then
  log "TQREF_GPU_CHECK_NO_INSTALL set: no pip installs"
  PIPOK=0
else
  PIPOK=1
fi
if [ "$PIPOK" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  log "installing carried wheels from .whl"
  $PY -m pip install -q --no-index --no-deps --target /tmp/tqref_site .whl/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH="/tmp/tqref_site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$PIPOK" = 1 ] && ! $PY -c "import numba.cuda" >/dev/null 2>&1; then
  log "numba-cuda missing: pip install numba-cuda[cu13]"
  timeout 120 $PY -m pip install -q "numba-cuda[cu13]" >>"$LOG" 2>&1 || log "could not install numba-cuda"
fi
if [ "$PIPOK" = 1 ] && ! $PY -c "import cupy" >/dev/null 2>&1; then
  log "cupy missing: pip install cupy-cuda13x (optional)"
  timeout 120 $PY -m pip install -q cupy-cuda13x >>"$LOG" 2>&1 || log "could not install cupy (results stay Numba arrays)"
fi
for pkg in pytest hypothesis; do
  [ "$PIPOK" = 1 ] || continue
  $PY -c "import $pkg" >/dev/null 2>&1 || timeout 60 $PY -m pip install -q $pkg >>"$LOG" 2>&1 || log "could not install $pkg"
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM

log "GPU test suite"
timeout 170 $PY -m pytest -q -p no:cacheprovider tests/backends/test_cuda_mse.py tests/backends/test_cuda_prod.py \
  tests/backends/test_cuda_estimators.py tests/backends/test_cuda_attention.py tests/backends/test_cuda_ptx.py \
  --junitxml="$OUTDIR/gpu_tests.xml" >"$OUTDIR/gpu_tests.txt" 2>&1
TESTS_RC=$?
log "tests rc=$TESTS_RC: $(tail -n 1 "$OUTDIR/gpu_tests.txt")"

timeout 40 $PY -m tqref.backends.cuda.ptx >"$OUTDIR/ptx_report.txt" 2>&1 || log "ptx report failed"

log "benchmark"
timeout 200 $PY benchmarks/bench_cuda.py --out "$OUTDIR/gpu_bench.json" >>"$LOG" 2>&1
BENCH_RC=$?
log "bench rc=$BENCH_RC"

END=$(date +%s)
$PY - "$OUTDIR" "$TESTS_RC" "$BENCH_RC" "$((END - START))" <<'PYEOF'
import json, sys, os
out, trc, brc, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = {"tests_rc": trc, "bench_rc": brc, "seconds": secs}
try:
    summary["tests_last_line"] = open(os.path.join(out, "gpu_tests.txt")).read().strip().splitlines()[-1]
except Exception as exc:
    summary["tests_last_line"] = f"unreadable: {exc}"
try:
    b = json.load(open(os.path.join(out, "gpu_bench.json")))
    summary["device"] = b.get("device")
    summary["copy_GBps"] = b.get("copy", {}).get("GBps")
    for k in ("mse_d128_b3", "mse_d128_b4"):
        s = b.get(k, {})
        summary[k] = {op: {f: s.get(op, {}).get(f) for f in ("median_ms", "GBps", "fraction_of_copy")}
                      for op in ("quantize", "dequantize")}
        summary[k]["exact"] = all(s.get(f) for f in ("codes_equal_reference", "norms_bitwise_equal_reference",
                                                      "dequantized_bitwise_equal_reference"))
    a = b.get("attention", {})
    summary["attention"] = {f: a.get(f) for f in ("compressed_ms", "compressed_best_chunk", "fp16_sdpa_ms",
                                                  "fp16_matmul_softmax_ms", "speedup_vs_fp16", "torch", "error")}
except Exception as exc:
    summary["bench"] = f"unreadable: {exc}"
json.dump(summary, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PYEOF
exit $TESTS_RC
