"""Device arrays in and out: CuPy, ``__cuda_array_interface__``, DLPack, host NumPy.

Inputs already on the GPU are used in place (no host round trip): anything exposing
``__cuda_array_interface__`` (CuPy, Numba device arrays, PyTorch CUDA tensors) is viewed
with ``numba.cuda.as_cuda_array``; other DLPack producers are imported with
``cupy.from_dlpack`` when CuPy is installed. Host arrays are converted to the required dtype
and copied to the device once. Outputs are allocated on the device and returned as CuPy
arrays when CuPy is importable (zero-copy view of the same memory), else as Numba device
arrays. CuPy is imported lazily and only here.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._ops import SIMULATOR


@functools.lru_cache(maxsize=1)
def cupy_module():
    """The ``cupy`` module, or None when it is missing or unusable (never under the simulator)."""
    if SIMULATOR:
        return None
    try:
        import cupy  # noqa: PLC0415  (lazy on purpose)

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # ImportError, or no driver / device
        return None


def is_device_array(a) -> bool:
    return hasattr(a, "__cuda_array_interface__") or (
        not isinstance(a, np.ndarray) and hasattr(a, "__dlpack__") and hasattr(a, "__dlpack_device__")
        and _dlpack_on_gpu(a)
    )


def _dlpack_on_gpu(a) -> bool:
    try:
        kind, _ = a.__dlpack_device__()
    except Exception:
        return False
    return int(kind) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def to_device(a, dtype, name: str, ndim: int | None = None):
    """A Numba device view (or a one-time host→device copy) of ``a`` with ``dtype``.

    Device inputs must already have the dtype (converting would silently copy on the GPU);
    host inputs are converted with ``np.ascontiguousarray(a, dtype)``.
    """
    dtype = np.dtype(dtype)
    if SIMULATOR:
        if not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host"):
            dev = a  # a simulator device array
            if np.dtype(dev.dtype) != dtype:
                raise TypeError(f"{name}: expected a device array of dtype {dtype}, got {np.dtype(dev.dtype)}")
            _check_ndim(name, dev.shape, ndim)
            return dev
        host = np.ascontiguousarray(a, dtype=dtype)
        _check_ndim(name, host.shape, ndim)
        return cuda.to_device(host)
    if cuda.is_cuda_array(a):
        dev = cuda.as_cuda_array(a)
    elif is_device_array(a):
        cp = cupy_module()
        if cp is None:
            raise TypeError(f"{name}: a DLPack GPU array needs CuPy to import; install cupy-cuda13x")
        dev = cuda.as_cuda_array(cp.from_dlpack(a))
    else:
        host = np.ascontiguousarray(a, dtype=dtype)
        _check_ndim(name, host.shape, ndim)
        return cuda.to_device(host)
    if np.dtype(dev.dtype) != dtype:
        raise TypeError(f"{name}: expected a device array of dtype {dtype}, got {np.dtype(dev.dtype)}")
    _check_ndim(name, dev.shape, ndim)
    return dev


def _check_ndim(name, shape, ndim):
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(shape)}")


def empty(shape, dtype):
    """An uninitialised device array (CuPy's pool when available)."""
    cp = cupy_module()
    if cp is not None:
        return cuda.as_cuda_array(cp.empty(shape, dtype=dtype))
    return cuda.device_array(shape, dtype=dtype)


def unwrap(arr):
    """The Numba device view of a result of :func:`wrap` (identity for Numba/simulator arrays)."""
    if SIMULATOR or hasattr(arr, "copy_to_host"):
        return arr
    return cuda.as_cuda_array(arr)


def wrap(dev):
    """Return a device result as CuPy when available, else as the Numba device array."""
    cp = cupy_module()
    if cp is not None:
        return cp.asarray(dev)
    return dev


def to_host(dev) -> np.ndarray:
    """Copy a device array (CuPy, Numba, simulator) to host NumPy."""
    if isinstance(dev, np.ndarray):
        return dev
    if hasattr(dev, "copy_to_host"):
        return dev.copy_to_host()
    cp = cupy_module()
    if cp is not None and isinstance(dev, cp.ndarray):
        return cp.asnumpy(dev)
    return cuda.as_cuda_array(dev).copy_to_host()


def as_stream(stream):
    """A stream Numba kernels accept: 0/None (default stream), a Numba stream, or anything
    with a ``ptr`` attribute (a CuPy stream) wrapped by ``numba.cuda.external_stream``, so
    work queued by CuPy and by these kernels stays ordered on one stream."""
    if stream is None or (isinstance(stream, int) and stream == 0):
        return 0
    if hasattr(stream, "ptr") and not hasattr(stream, "handle"):  # CuPy, not a Numba stream
        return cuda.external_stream(int(stream.ptr))
    return stream


def with_stream(fn):
    """Decorator: normalise the ``stream=`` keyword of a device function with :func:`as_stream`."""

    @functools.wraps(fn)
    def wrapper(*args, stream=0, **kwargs):
        return fn(*args, stream=as_stream(stream), **kwargs)

    return wrapper
