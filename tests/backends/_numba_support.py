"""Shared strategies and helpers for the Numba backend's property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tqref.reference.plan import Config, make_plan

EPS32 = float(np.finfo(np.float32).eps)

#: small dims (tile edges, one block), non-powers of two (two overlapping Hadamard blocks),
#: powers of 4 (exact normalisation: sparse integer inputs rotate to exact zeros, which sit
#: on the middle codebook boundary)
DIMS = st.one_of(
    st.integers(2, 33),
    st.sampled_from([4, 16, 64, 80, 96, 128, 160, 256]),
)
SEEDS = st.integers(0, 2**64 - 1)
ROTATIONS = st.sampled_from(["hadamard", "haar"])
LAWS = st.sampled_from(["beta", "gaussian"])
PROJECTIONS = st.sampled_from(["gaussian", "orthogonal", "rademacher"])
ROWS = st.integers(1, 40)  # 1..2.5 tiles of 16: partial tiles on both sides
KINDS = st.sampled_from(["normal", "zeros", "subnormal", "huge", "overflow", "mixed", "integers", "onehot"])


def make_input(kind: str, rows: int, dim: int, seed: int) -> np.ndarray:
    """float32 (rows, dim) of the named adversarial family (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    if kind == "zeros":
        x[::2] = 0.0
        x[1::3] = -0.0
    elif kind == "subnormal":  # every value subnormal or tiny: exact rescaling matters
        x = (x * np.float32(1e-41)).astype(np.float32)
        x[0, 0] = np.float32(1e-45)  # the smallest subnormal
    elif kind == "huge":
        x = (x * np.float32(1e30)).astype(np.float32)
    elif kind == "overflow":  # the norm itself overflows float32: norm = inf in both
        x = (x * np.float32(3e37)).astype(np.float32)
        x[0, :] = np.float32(3.4e38)
    elif kind == "mixed":  # scales 1e-40 .. 1e30 within a row: scaled values underflow
        expo = rng.uniform(-44, 30, size=(rows, dim))
        x = (x * (10.0**expo)).astype(np.float32)
    elif kind == "integers":  # small integers: rotated coordinates hit 0 (a boundary) exactly
        x = rng.integers(-2, 3, size=(rows, dim)).astype(np.float32)
    elif kind == "onehot":
        x = np.zeros((rows, dim), np.float32)
        x[np.arange(rows), rng.integers(0, dim, rows)] = rng.choice([-1.0, 1.0, 2.0**-140, 2.0**100], rows)
    return np.ascontiguousarray(x, dtype=np.float32)


def mse_plan(dim, bits, seed, rotation="hadamard", law="beta"):
    return make_plan(Config("mse", dim, bits, seed % 2**64, rotation, law))


def prod_plan(dim, bits, seed, rotation="hadamard", law="beta", projection="gaussian"):
    return make_plan(Config("prod", dim, bits, seed % 2**64, rotation, law, projection))


def assert_same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    if not np.array_equal(a, b, equal_nan=True):
        bad = np.argwhere(a != b)
        raise AssertionError(f"{what}: {len(bad)} differing entries, first at {tuple(bad[0])}: "
                             f"{a[tuple(bad[0])]!r} vs {b[tuple(bad[0])]!r}")
