"""Portable randomness: a counter-based SplitMix64 stream over (seed, stream, index).

Every random quantity in tqref (rotation signs, Haar and Gaussian matrices, Rademacher
projections) is derived from this one integer generator, so a port in any language can
reproduce it from the description below. All arithmetic is on unsigned 64-bit integers
modulo 2**64.

Definition (docs/compatibility.md "PRNG"; docs/algorithm.md §1)::

    GOLDEN = 0x9E3779B97F4A7C15
    mix64(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
               z = (z ^ (z >> 27)) * 0x94D049BB133111EB
               return z ^ (z >> 31)
    key(seed, stream) = mix64(seed + GOLDEN * (stream + 1))
    raw(seed, stream, i) = mix64(key(seed, stream) + GOLDEN * (i + 1))

``raw`` is exactly the i-th output (0-based) of a SplitMix64 generator whose state starts at
``key(seed, stream)``; being counter-based, a GPU thread regenerates element ``i`` alone.

Derived values (the bit manipulation is normative):

* Rademacher sign: ``+1`` if bit 63 of ``raw`` is 0, else ``-1`` (the top bit, not the
  weak low bit that made turboquant-rs's signs depend only on the seed's parity).
* Uniform float64 in [0, 1): ``(raw >> 11) * 2**-53``.
* Uniform float64 in (0, 1]: ``((raw >> 11) + 1) * 2**-53``.
* Standard Gaussian (statistical tier, uses libm log/cos/sqrt): Box–Muller on the pair
  ``u1 = uniform_open0(2i)``, ``u2 = uniform(2i+1)``: ``sqrt(-2 ln u1) * cos(2 pi u2)``.

Example::

    >>> [hex(int(v)) for v in raw_stream(seed=0, stream=0, count=2)]
    ['0xa706dd2f4d197e6f', '0xb382a305f4414f5e']
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

#: Stream identifiers: one per use, so two uses of one seed are independent.
STREAM_ROTATION_SIGNS = 1
STREAM_HAAR = 2
STREAM_QJL_GAUSSIAN = 3
STREAM_QJL_ORTHOGONAL = 4
STREAM_QJL_RADEMACHER = 5
STREAM_TEST_DATA = 100


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 output function on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _u64(value: int) -> np.uint64:
    return np.uint64(int(value) & _MASK64)


def stream_key(seed: int, stream: int) -> np.uint64:
    """``key(seed, stream) = mix64(seed + GOLDEN * (stream + 1))`` as a numpy uint64."""
    with np.errstate(over="ignore"):
        z = np.array([_u64(seed)], dtype=np.uint64) + GOLDEN * _u64(stream + 1)
        return _mix64(z)[0]


def raw_stream(seed: int, stream: int, count: int, start: int = 0) -> np.ndarray:
    """Raw 64-bit outputs ``raw(seed, stream, i)`` for ``i in [start, start + count)``.

    Indices are taken modulo 2**64, like every other quantity of the definition: ``start``
    may be any integer ≥ 0 (index 2**64 + k is index k), and a range that crosses 2**64
    wraps to 0. Returns uint64 array of shape (count,).
    """
    if start < 0 or count < 0:
        raise ValueError(f"start, count: expected integers >= 0, got start={start}, count={count}")
    key = stream_key(seed, stream)
    first = np.uint64(start % 2**64)
    with np.errstate(over="ignore"):
        idx = first + np.arange(count, dtype=np.uint64)  # wraps modulo 2**64
        return _mix64(key + GOLDEN * (idx + np.uint64(1)))


def rademacher(seed: int, stream: int, count: int, start: int = 0) -> np.ndarray:
    """Signs ±1 (float32, shape (count,)): +1 where bit 63 of the raw value is 0."""
    top = (raw_stream(seed, stream, count, start) >> np.uint64(63)).astype(np.float32)
    return np.float32(1.0) - np.float32(2.0) * top


def uniform(seed: int, stream: int, count: int, start: int = 0) -> np.ndarray:
    """Uniform float64 on [0, 1): ``(raw >> 11) * 2**-53``; shape (count,)."""
    return (raw_stream(seed, stream, count, start) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def gaussian(seed: int, stream: int, count: int) -> np.ndarray:
    """Standard normal float64 samples by Box–Muller (statistical tier; shape (count,)).

    Sample i uses raw values 2i (radius, mapped to (0, 1] so log never sees 0) and 2i+1
    (angle). libm's log/cos are not bit-portable, so ports compare these within a tolerance
    or load the generated matrices from the conformance data.
    """
    raw = raw_stream(seed, stream, 2 * count)
    u1 = ((raw[0::2] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    u2 = (raw[1::2] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
