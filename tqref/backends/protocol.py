"""The backend contract as typed Protocols (``typing.Protocol``), checked per backend.

A backend is an object registered in :mod:`tqref.backends`. Every backend implements
:class:`Backend` (the whole operations on host NumPy arrays: what the public quantizers and
:class:`tqref.KVCache` call). A backend may also offer step operations, host
(:class:`RotationSteps`, :class:`CodeSteps`) and device (:class:`DeviceOps`); the conformance
runner checks each step on every backend that has it (tqref/conformance/operations.py).

Shapes and dtypes (n rows, d = plan.dim, m queries, nb = ceil(d·plan.bits/8), ns = ceil(d/8)):
arguments are validated by the caller; a backend may assume them and must not write to any
input. Integer outputs (codes, indices, packed bytes) equal the reference bit for bit; float
outputs agree with it within a tolerance (docs/backends.md). ``plan`` is a
:class:`tqref.reference.plan.Plan` — the complete data contract; a backend reads every table from it
and caches derived tables per ``plan.config`` only for plans without given arrays
(``plan.given``): tqref/backends/_plan_cache.py.

:func:`missing` lists how an object falls short of a Protocol: absent methods, and methods
whose signature lacks a parameter of the Protocol (by name, kind and order) or adds one
without a default — ``isinstance`` on a Protocol checks names only.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import numpy as np

from ..reference.plan import Plan


@runtime_checkable
class Backend(Protocol):
    """Whole operations on host arrays (every backend)."""

    name: str

    def mse_quantize(self, x: np.ndarray, plan: Plan) -> tuple:
        """x float (n, d) -> (packed uint8 (n, nb), norms float32 (n,))."""

    def mse_dequantize(self, packed: np.ndarray, norms: np.ndarray, plan: Plan) -> np.ndarray:
        """-> float32 (n, d)."""

    def prod_quantize(self, x: np.ndarray, plan: Plan) -> tuple:
        """x float (n, d) -> (packed (n, nb), norms (n,), signs uint8 (n, ns), gammas float32 (n,))."""

    def prod_dequantize(self, packed: np.ndarray, norms: np.ndarray, signs: np.ndarray, gammas: np.ndarray,
                        plan: Plan) -> np.ndarray:
        """-> float32 (n, d)."""

    def mse_inner_product(self, queries: np.ndarray, packed: np.ndarray, norms: np.ndarray, plan: Plan,
                          unbiased: bool = False) -> np.ndarray:
        """queries float32 (m, d) -> estimates float32 (m, n) (divided by plan.alpha when unbiased)."""

    def prod_inner_product(self, queries: np.ndarray, packed: np.ndarray, norms: np.ndarray, signs: np.ndarray,
                           gammas: np.ndarray, plan: Plan) -> np.ndarray:
        """queries float32 (m, d) -> estimates float32 (m, n)."""

    def attend(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan: Plan,
               value_plan: Plan, *, key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size,
               causal, start=0, lag=0, return_lse=False):
        """Attention over packed codes in the rotated domain (the full contract:
        :meth:`tqref.backends.reference.ReferenceBackend.attend`)."""


@runtime_checkable
class RotationSteps(Protocol):
    """The rotation step on host arrays, bit-identical to the reference."""

    def rotate(self, x: np.ndarray, plan: Plan) -> np.ndarray:
        """Π x: float32 (n, d) -> float32 (n, d) (:meth:`Plan.rotate`)."""

    def rotate_inverse(self, y: np.ndarray, plan: Plan) -> np.ndarray:
        """Πᵀ y: float32 (n, d) -> float32 (n, d) (:meth:`Plan.rotate_inverse`)."""


@runtime_checkable
class CodeSteps(Protocol):
    """Nearest-centroid search and bit packing on host arrays, bit-identical to the reference."""

    def nearest_index(self, values: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
        """values float32 (..., d), boundaries float64 (K − 1,) -> uint8 (..., d) (codebook.nearest_index)."""

    def pack_bits(self, indices: np.ndarray, bits: int) -> np.ndarray:
        """uint8 (..., count) -> uint8 (..., ceil(count·bits/8)) (packing.pack_bits)."""

    def unpack_bits(self, packed: np.ndarray, bits: int, count: int) -> np.ndarray:
        """uint8 (..., ceil(count·bits/8)) -> uint8 (..., count) (packing.unpack_bits)."""


@runtime_checkable
class DeviceOps(Protocol):
    """Whole operations and the rotation step on device arrays (results stay on the device)."""

    def mse_quantize_device(self, x, plan: Plan):
        """-> (packed, norms) device arrays."""

    def mse_dequantize_device(self, packed, norms, plan: Plan):
        """-> float32 (n, d) device array."""

    def prod_quantize_device(self, x, plan: Plan):
        """-> (packed, norms, signs, gammas) device arrays."""

    def prod_dequantize_device(self, packed, norms, signs, gammas, plan: Plan):
        """-> float32 (n, d) device array."""

    def mse_inner_product_device(self, queries, packed, norms, plan: Plan, *, unbiased: bool = False):
        """-> float32 (m, n) device array."""

    def prod_inner_product_device(self, queries, packed, norms, signs, gammas, plan: Plan):
        """-> float32 (m, n) device array."""

    def attend_device(self, q_rot, key_indices, key_norms, value_indices, value_norms, key_plan: Plan,
                      value_plan: Plan, *, key_signs=None, key_gammas=None, scale, value_scale=1.0, group_size,
                      causal, start=0, lag=0, return_lse=False):
        """:meth:`Backend.attend` on device arrays."""

    def rotate_device(self, x, plan: Plan, *, inverse: bool = False):
        """Π x (Πᵀ x with inverse) for float32 rows (n, d), a device array."""


PROTOCOLS = (Backend, RotationSteps, CodeSteps, DeviceOps)


def _methods(protocol) -> list:
    return [name for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")]


def missing(obj, protocol) -> list:
    """How ``obj`` falls short of ``protocol``: [] when it implements it, else one line per problem."""
    problems = []
    for name in _methods(protocol):
        impl = getattr(obj, name, None)
        if not callable(impl):
            problems.append(f"{name}: missing")
            continue
        wanted = list(inspect.signature(getattr(protocol, name)).parameters.values())[1:]  # without self
        have = list(inspect.signature(impl).parameters.values())
        have_names = [p.name for p in have]
        for p in wanted:
            if p.name not in have_names:
                problems.append(f"{name}: no parameter {p.name!r}")
            elif have[have_names.index(p.name)].kind != p.kind:
                problems.append(f"{name}: parameter {p.name!r} is {have[have_names.index(p.name)].kind.name}, "
                                f"expected {p.kind.name}")
        order = [n for n in have_names if n in {p.name for p in wanted}]
        if order != [p.name for p in wanted if p.name in have_names]:
            problems.append(f"{name}: parameters in order {order}, expected {[p.name for p in wanted]}")
        extra = [p.name for p in have if p.name not in {w.name for w in wanted}
                 and p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if extra:
            problems.append(f"{name}: extra parameters without a default {extra}")
    return problems


def implements(obj, protocol) -> bool:
    """True when ``obj`` has every method of ``protocol`` with a compatible signature."""
    return not missing(obj, protocol)
