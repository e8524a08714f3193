"""GPU-resident arrays through the public quantizers (backend="cuda"): no host round trip,
codes stay on the device, and they equal the host path bit for bit."""

import numpy as np
import pytest

from _cuda_support import load_backend

import tqref

import reference64

cuda_backend = load_backend()


def device(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a.get())


@pytest.mark.parametrize("kind", ["mse", "prod"])
def test_device_arrays_stay_on_device_and_match_host(kind):
    x = np.random.default_rng(0).standard_normal((37, 96)).astype(np.float32)
    make = tqref.TurboQuantMSE if kind == "mse" else tqref.TurboQuantProd
    q = make(96, 3, seed=5, backend="cuda")
    codes = q.quantize(device(x))
    ref = make(96, 3, seed=5).quantize(x)
    if kind == "mse":
        assert tqref.quantizers.on_device(codes.indices)
        assert np.array_equal(host(codes.indices), ref.indices)
    else:
        assert tqref.quantizers.on_device(codes.signs)
        assert np.array_equal(host(codes.mse.indices), ref.mse.indices)
        assert np.array_equal(host(codes.signs), ref.signs)
    out = q.dequantize(codes)
    assert tqref.quantizers.on_device(out)
    reference64.assert_dequantized(host(out), make(96, 3, seed=5), ref, "cuda dequantize")


def test_device_array_needs_the_cuda_backend():
    q = tqref.TurboQuantMSE(32, 2)
    with pytest.raises(ValueError, match="backend='cuda'"):
        q.quantize(device(np.ones((2, 32), np.float32)))


def test_device_array_shape_and_dtype_are_checked():
    q = tqref.TurboQuantMSE(32, 2, backend="cuda")
    with pytest.raises(ValueError, match=r"shape \(n, 32\), got \(2, 16\)"):
        q.quantize(device(np.ones((2, 16), np.float32)))
    with pytest.raises(ValueError, match="float32 GPU array, got float64"):
        q.quantize(device(np.ones((2, 32), np.float64)))


def test_streams_are_normalised(monkeypatch):
    from tqref.backends.cuda import _arrays

    assert _arrays.as_stream(0) == 0 and _arrays.as_stream(None) == 0
    seen = []
    monkeypatch.setattr(_arrays.cuda, "external_stream", lambda ptr: seen.append(ptr) or ("ext", ptr))

    class CupyLikeStream:  # what CuPy's Stream exposes: a raw pointer
        ptr = 1234

    assert _arrays.as_stream(CupyLikeStream()) == ("ext", 1234) and seen == [1234]

    class NumbaLikeStream:
        handle = object()

    s = NumbaLikeStream()
    assert _arrays.as_stream(s) is s
