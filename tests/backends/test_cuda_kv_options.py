"""The tqref/kv options on the CUDA backend: byte-identical storage and attend within float
tolerance of the reference (the window/sink merge uses the kernel's return_lse)."""

from __future__ import annotations

import numpy as np
import pytest

from _cuda_support import load_backend

load_backend()

from tqref.kv import OutlierSpec  # noqa: E402
from tqref.cache import KVCache  # noqa: E402

OPTIONS = [dict(residual_length=3, sink_tokens=1, layer_bits={0: (4, 2), 1: "float16"}),
           dict(outliers=OutlierSpec(calibration_tokens=3))]


@pytest.mark.parametrize("options", OPTIONS)
def test_cuda_matches_reference(options):
    rng = np.random.default_rng(3)
    k = rng.standard_normal((1, 1, 10, 8)).astype(np.float32)
    v = rng.standard_normal((1, 1, 10, 8)).astype(np.float32)
    q = rng.standard_normal((1, 2, 10, 8)).astype(np.float32)
    caches = [KVCache(2, 1, 8, key_bits=3, value_bits=2, backend=b, **options) for b in ("reference", "cuda")]
    outs = []
    for c in caches:
        c.append(0, k[:, :, :6], v[:, :, :6])
        c.append(0, k[:, :, 6:], v[:, :, 6:])
        outs.append(c.attend(0, q[:, :, 6:]))
    a, b = caches[0].stored(0), caches[1].stored(0)
    assert a.keys() == b.keys() and all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert np.abs(outs[0] - outs[1]).max() < 1e-5
