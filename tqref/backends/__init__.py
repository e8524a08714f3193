"""Backend registry: each operation has a "reference", "numba" and "cuda" implementation.

A backend implements the typed Protocols of :mod:`tqref.backends.protocol`: ``Backend``
(mse_quantize, mse_dequantize, prod_quantize, prod_dequantize, mse_inner_product,
prod_inner_product, attend — the KV cache's attention over packed codes) and, where it has
them, the step operations (``RotationSteps``, ``CodeSteps``) and device operations
(``DeviceOps``), each taking validated arrays and a :class:`tqref.reference.plan.Plan`. Backends load lazily; asking for one that cannot load is
an error naming the reason — never a silent fallback. ``"auto"`` is the explicit request
"the fastest available": cuda (never the CUDA simulator), then numba, then reference.
"""

from __future__ import annotations

import importlib
import sys
import types

#: name -> "module:attribute" of a zero-argument factory returning the backend object.
_REGISTRY = {
    "reference": "tqref.backends.reference:ReferenceBackend",
    "numba": "tqref.backends.numba_cpu:NumbaBackend",
    "cuda": "tqref.backends.cuda:CudaBackend",
}
AUTO_ORDER = ("cuda", "numba", "reference")
_LOADED: dict = {}
_FAILED: dict = {}


def register(name: str, target: str) -> None:
    """Register a backend factory given as "module:attribute"."""
    _REGISTRY[name] = target
    _LOADED.pop(name, None)
    _FAILED.pop(name, None)


def _load(name: str):
    if name in _LOADED:
        return _LOADED[name]
    if name in _FAILED:
        raise _FAILED[name]
    module_name, attr = _REGISTRY[name].split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        backend = factory()
    except Exception as exc:  # import errors, missing drivers, no GPU
        err = RuntimeError(f"backend {name!r} is not available: {type(exc).__name__}: {exc}")
        _FAILED[name] = err
        raise err from exc
    _LOADED[name] = backend
    return backend


def get(name: str = "reference"):
    """The backend object for ``name`` ("reference", "numba", "cuda" or "auto")."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                backend = _load(candidate)
            except RuntimeError:
                continue
            if not getattr(backend, "simulated", False):
                return backend
    if name not in _REGISTRY:
        raise ValueError(f"backend: expected one of {tuple(_REGISTRY) + ('auto',)}, got {name!r}")
    return _load(name)


def available() -> list:
    """Names of the backends that load on this machine."""
    names = []
    for name in _REGISTRY:
        try:
            _load(name)
        except RuntimeError:
            continue
        names.append(name)
    return names


class _CallableModule(types.ModuleType):
    """Lets ``tqref.backends()`` list the available backends while ``tqref.backends`` stays
    this package (``tqref.backends.get``, ``tqref.backends.numba_cpu``, ...)."""

    def __call__(self) -> list:
        return available()


sys.modules[__name__].__class__ = _CallableModule
