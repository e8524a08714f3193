"""The results hold on any CPU (docs/compatibility.md "What depends on the machine").

NumPy picks SIMD code for exp/log/sin/… at run time (AVX-512, AVX2, baseline) and Numba
compiles for the host CPU; both may change float bits. This module re-runs the
exactness-sensitive tests in a child process where NumPy's dispatched SIMD paths are switched
off (``NPY_DISABLE_CPU_FEATURES``) and Numba compiles for a generic x86-64/AArch64 target
(``NUMBA_CPU_NAME=generic``), and checks that kernels compiled for the generic target give
the host's codes, bit for bit. CI runs it as part of the README's test command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: tests whose assertions are bit-exact or depend on float bits: codebooks and their solver,
#: written-order math, rotations, packing, reductions, PRNG, regeneration of the vectors,
#: verification against them, and the numba kernels against the reference
EXACTNESS_TESTS = (
    "tests/reference/test_codebook.py",
    "tests/reference/test_portable_math.py",
    "tests/reference/test_rotation.py",
    "tests/reference/test_packing.py",
    "tests/reference/test_reduction.py",
    "tests/reference/test_prng.py",
    "tests/conformance/test_generate.py",
    "tests/conformance/test_verify.py",
    "tests/models/test_real_vectors.py",
    "tests/backends/test_numba_mse.py",
    "tests/backends/test_numba_prod.py",
)


def dispatched_features() -> list:
    """NumPy's run-time-dispatched CPU features that this machine has (disabling them all
    leaves the baseline paths)."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as umath
    return [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]


def variant_env() -> dict:
    env = dict(os.environ)
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(dispatched_features())
    env["NUMBA_CPU_NAME"] = "generic"
    env.pop("NUMBA_CPU_FEATURES", None)
    return env


# Codes of a fixed batch through every public quantizer configuration that has a numba
# kernel; printed as one sha256 so the parent and the child compare one line.
CODES_SCRIPT = """
import hashlib, sys
import numpy as np
import tqref

backend = sys.argv[1]
rng = np.random.default_rng(12345)
h = hashlib.sha256()
for dim in (64, 100, 128):
    x = rng.standard_normal((300, dim)).astype(np.float32)
    x[:5] *= np.float32(1e-30)  # tiny, scale-safe norms
    x[5:10] = np.round(x[5:10])  # many exact ties and zeros
    for bits in (1, 2, 3, 4, 8):
        q = tqref.TurboQuantMSE(dim=dim, bits=bits, seed=7, backend=backend)
        c = q.quantize(x)
        h.update(np.ascontiguousarray(c.indices).tobytes())
        h.update(np.ascontiguousarray(c.norms).tobytes())
        h.update(np.ascontiguousarray(q.dequantize(c)).tobytes())
    for bits in (2, 3, 4):
        p = tqref.TurboQuantProd(dim=dim, bits=bits, seed=9, projection="rademacher", backend=backend)
        pc = p.quantize(x)
        for a in (pc.mse.indices, pc.mse.norms, pc.signs, pc.residual_norms):
            h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


def codes_digest(backend: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", CODES_SCRIPT, backend], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_the_variant_really_changes_numpy_dispatch():
    """Guard against a silent no-op: on a machine with dispatched features, switching them
    off must change at least the bits of NumPy's own SIMD sin over a large input (which is
    exactly why tqref never lets those bits decide anything)."""
    features = dispatched_features()
    if not features:
        pytest.skip("this CPU has no NumPy-dispatched SIMD features: the variant equals the host")
    script = ("import hashlib, numpy as np; x = np.linspace(0.001, 1.5, 100001); "
              "print(hashlib.sha256(np.sin(x).tobytes() + np.exp(x).tobytes() + np.log(x).tobytes()).hexdigest())")
    host = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    variant = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             env=variant_env()).stdout
    if host == variant:
        pytest.skip(f"NumPy's SIMD math gives the same bits with {features} disabled on this CPU")
    assert host != variant


def test_numba_kernels_for_the_generic_target_give_the_host_codes():
    host = codes_digest("numba")
    assert codes_digest("reference") == host  # the kernels equal the reference on the host
    assert codes_digest("numba", variant_env()) == host
    assert codes_digest("reference", variant_env()) == host


def test_exactness_tests_pass_under_another_numpy_dispatch_and_generic_numba():
    env = variant_env()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *EXACTNESS_TESTS]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    tail = "\n".join(out.stdout.splitlines()[-30:])
    assert out.returncode == 0, (f"with NPY_DISABLE_CPU_FEATURES={env['NPY_DISABLE_CPU_FEATURES']!r} and "
                                 f"NUMBA_CPU_NAME=generic:\n{tail}\n{out.stderr[-2000:]}")
