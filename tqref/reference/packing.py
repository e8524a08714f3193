"""Bit packing of b-bit indices and of sign bits (docs/formats.md; docs/compatibility.md "Packing").

Layout: one LSB-first, little-endian bit stream. Index j occupies bits [b·j, b·j + b) of the
byte string read as one little-endian integer; bit k of the stream is bit (k mod 8) of byte
k // 8. A partial last byte is zero-filled. ``packed_size(n, b) = ceil(n·b / 8)`` bytes.

Worked example, b = 3, indices [5, 2, 7]: stream bits (LSB first) 101 010 111 ->
byte0 = 5 | 2 << 3 | (7 & 3) << 6 = 0xD5, byte1 = 7 >> 2 = 0x01.

Sign bits are the b = 1 case: bit j is 1 for a non-negative projection (sign(0) = +1).
"""

from __future__ import annotations

import numpy as np

MIN_BITS = 1
MAX_BITS = 8


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` indices of ``bits`` bits: ceil(count·bits / 8)."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits: expected an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def pack_bits(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack indices (..., n) of any integer dtype into uint8 (..., ceil(n·bits/8)).

    Only the low ``bits`` bits of each index are used.

    >>> pack_bits(np.array([5, 2, 7]), 3).tolist()
    [213, 1]
    """
    _check_bits(bits)
    indices = np.asarray(indices)
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices: expected an integer array, got dtype {indices.dtype}")
    n = indices.shape[-1]
    lead = indices.shape[:-1]
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((indices.astype(np.uint8)[..., None] >> shifts) & 1).astype(np.uint8)
    stream = stream.reshape(lead + (n * bits,))
    return np.packbits(stream, axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Unpack ``count`` indices of ``bits`` bits from uint8 (..., ceil(count·bits/8)).

    Returns uint8 (..., count). The buffer must have exactly ``packed_size(count, bits)``
    bytes on its last axis.

    >>> unpack_bits(np.array([213, 1], np.uint8), 3, 3).tolist()
    [5, 2, 7]
    """
    _check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed: expected dtype uint8, got {packed.dtype}")
    expected = packed_size(count, bits)
    if packed.shape[-1:] != (expected,):
        actual = packed.shape[-1] if packed.ndim else "a scalar"
        raise ValueError(
            f"packed: expected {expected} bytes on the last axis for {count} indices of "
            f"{bits} bits, got {actual}"
        )
    lead = packed.shape[:-1]
    stream = np.unpackbits(packed, axis=-1, count=count * bits, bitorder="little")
    stream = stream.reshape(lead + (count, bits))
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)
