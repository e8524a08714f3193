"""Every normative CUDA kernel is free of FMA contraction, checked in its PTX for sm_90.

Needs numba-cuda with its NVVM (``numba.cuda.compile_ptx``), not a GPU. The CUDA simulator
has no compiler, so when this run uses the simulator (tests/conftest.py turns it on where
there is no GPU) the checks run in a child process without it. Also checks that the
detector itself sees the FMA in a plain ``a * b + c`` kernel (Numba contracts it even
without fastmath).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

cuda_mod = pytest.importorskip("tqref.backends.cuda", reason="numba-cuda missing")

SIMULATOR = cuda_mod.SIMULATOR


@pytest.mark.skipif(not SIMULATOR, reason="checked in-process below when the simulator is off")
def test_normative_kernels_have_no_fma_in_a_child_process_without_the_simulator():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("from tqref.backends.cuda import ptx; from numba import types as nt\n"
            "def plain(a, b, c, out):\n    out[0] = a[0] * b[0] + c[0]\n"
            "import json; print(json.dumps({'control': ptx.fma_lines(ptx.compile_ptx(plain, (nt.float32[:],) * 4)),"
            " 'kernels': ptx.report()}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and ("NVVM" in done.stderr or "libdevice" in done.stderr or "nvvm" in done.stderr):
        pytest.skip(f"compile_ptx unavailable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["control"], "expected numba to contract a*b+c into fma.rn.f32"
    assert len(result["kernels"]) >= 10
    for row in result["kernels"]:
        assert not row["fma"], f"{row['name']}: fused multiply-add in PTX: {row['fma'][:3]}"
        assert not row["contractible"], f"{row['name']}: contractible float ops: {row['contractible'][:3]}"
    for row in result["kernels"][:2]:
        assert row["local_bytes"] == 0, row["name"]


from tqref.backends.cuda import ptx  # noqa: E402

in_process = pytest.mark.skipif(SIMULATOR, reason="the simulator has no compiler; see the child-process test")


def _compile(fn, sig):
    try:
        return ptx.compile_ptx(fn, sig)
    except Exception as exc:  # NVVM / libdevice not installed
        if "NVVM" in str(exc) or "libdevice" in str(exc) or "nvvm" in str(exc):
            pytest.skip(f"compile_ptx unavailable: {exc}")
        raise


@in_process
def test_detector_sees_contracted_fma():
    from numba import types as nt

    def plain(a, b, c, out):
        i = 0
        out[i] = a[i] * b[i] + c[i]

    text = _compile(plain, (nt.float32[:],) * 4)
    assert ptx.fma_lines(text), "expected numba to contract a*b+c into fma.rn.f32"


@in_process
@pytest.mark.parametrize("name,fn,sig", [] if SIMULATOR else ptx.normative_signatures(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_normative_kernel_has_no_fma(name, fn, sig):
    text = _compile(fn, sig)
    assert not ptx.fma_lines(text), f"{name}: fused multiply-add in PTX: {ptx.fma_lines(text)[:3]}"
    assert not ptx.contractible_lines(text), (
        f"{name}: float add/sub/mul without a rounding modifier (ptxas may fuse it): "
        f"{ptx.contractible_lines(text)[:3]}"
    )


@in_process
def test_lane_layout_keeps_vectors_in_registers():
    """The fast path's register arrays are not demoted to local memory (a speed property,
    reported here because it is checkable without a GPU)."""
    for name, fn, sig in ptx.normative_signatures()[:2]:
        assert ptx.local_bytes(_compile(fn, sig)) == 0, name
