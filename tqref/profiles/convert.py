"""Move quantized data between runtimes through float32.

A conversion decodes each stored vector with the source runtime's own dequantizer (to the
original, un-rotated domain) and encodes the float32 result with the destination runtime's
quantizer. Nothing else is shared between formats: rotations, codebooks, scales and layouts
all differ (docs/runtimes/), so every conversion adds the destination's quantization error
on top of the source's. Converting to the same format is not always byte-identical:
the decoded vector has norm ‖x̂‖ ≠ ‖x‖, so re-normalising can move a coordinate across a
threshold and the stored fp16 scale can change; tests/profiles/test_convert.py measures this.

Formats:

* :class:`TurboQuantRs` — one ``PackedBlock`` per vector (core crate, ``quantize_vec``);
* :class:`TurboQuantRsQjl` — one ``QjlBlock`` per vector; decoding returns the polar part
  x̂ (what ``weighted_values`` uses); the QJL bits cannot be carried to another format;
* :class:`LlamaCpp` — uint8 rows of turbo2/3/4 (v1, v3) or tq3_0 blocks. With ``head_dim``
  set, each head is zero-padded to the format's group size the way the KV path does it
  (64 -> 128 for turbo) and the padding is dropped on decode.

>>> import numpy as np
>>> x = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
>>> blocks = encode(x, TurboQuantRs(bits=3, dim=128))
>>> rows = convert(blocks, TurboQuantRs(3, 128), LlamaCpp("turbo3_0"))
>>> rows.shape
(4, 50)
"""

from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np

from . import llamacpp
from . import turboquant_rs as rs

__all__ = ["LlamaCpp", "TurboQuantRs", "TurboQuantRsQjl", "convert", "decode", "encode"]

_F32 = np.float32


@dataclasses.dataclass(frozen=True)
class _RsFormat:
    """What both turboquant-rs formats share: the core ``TurboQuantConfig`` and one vector a block."""

    bits: int
    dim: int
    rotation_seed: int = 0

    @property
    def config(self) -> rs.TurboQuantConfig:
        return rs.TurboQuantConfig(self.bits, self.dim, self.rotation_seed)

    @property
    def row_length(self) -> int:
        return self.dim


@dataclasses.dataclass(frozen=True)
class TurboQuantRs(_RsFormat):
    """turboquant-rs core blocks: ``TurboQuantConfig(bits, dim, rotation_seed)``."""


@dataclasses.dataclass(frozen=True)
class TurboQuantRsQjl(_RsFormat):
    """turboquant-rs TurboQuant_prod blocks (``quantize_with_qjl``); bits_total ∈ {3, 4}."""

    qjl_seed: int = rs.DEFAULT_QJL_SEED


@dataclasses.dataclass(frozen=True)
class LlamaCpp:
    """llama.cpp block rows: ``kind`` in turbo2_0/turbo3_0/turbo4_0/tq3_0, ``version`` v3 or v1."""

    kind: str
    version: str = "v3"
    head_dim: int | None = None

    def __post_init__(self):
        llamacpp.block_bytes(self.kind, self.version)  # validates kind and version
        if self.head_dim is not None and (isinstance(self.head_dim, bool) or int(self.head_dim) <= 0):
            raise ValueError(f"head_dim: expected a positive integer or None, got {self.head_dim!r}")

    @property
    def group(self) -> int:
        return llamacpp.TQ3_BLOCK_SIZE if self.kind == "tq3_0" else llamacpp.GROUP_SIZE

    def padded_head(self) -> int | None:
        if self.head_dim is None:
            return None
        return -(-self.head_dim // self.group) * self.group


Format = Union[TurboQuantRs, TurboQuantRsQjl, LlamaCpp]


def _check_format(fmt, argument: str) -> None:
    if not isinstance(fmt, (TurboQuantRs, TurboQuantRsQjl, LlamaCpp)):
        raise ValueError(
            f"{argument}: expected TurboQuantRs, TurboQuantRsQjl or LlamaCpp, got {type(fmt).__name__}"
        )


def decode(data, fmt: Format) -> np.ndarray:
    """Stored data -> float32 (n, row_length) in the original (un-rotated) domain."""
    _check_format(fmt, "fmt")
    if isinstance(fmt, TurboQuantRs):
        blocks = [data] if isinstance(data, rs.PackedBlock) else list(data)
        return rs.dequantize_batch(fmt.config, blocks)
    if isinstance(fmt, TurboQuantRsQjl):
        blocks = [data] if isinstance(data, rs.QjlBlock) else list(data)
        if not blocks:
            return np.zeros((0, fmt.dim), _F32)
        polar = rs.TurboQuantConfig(fmt.bits - 1, fmt.dim, fmt.rotation_seed)
        return rs.dequantize_batch(polar, [b.polar_block for b in blocks])
    rows = np.atleast_2d(np.asarray(data))
    y = llamacpp.dequantize_row(rows, fmt.kind, version=fmt.version)
    if fmt.kind != "tq3_0":
        y = llamacpp.rotate_inverse(y)
    padded = fmt.padded_head()
    if padded is not None and padded != fmt.head_dim:
        heads = y.shape[-1] // padded
        y = y.reshape(y.shape[:-1] + (heads, padded))[..., : fmt.head_dim]
        y = y.reshape(y.shape[:-2] + (heads * fmt.head_dim,))
    return y.astype(_F32)


def encode(x, fmt: Format):
    """float32 (n, row_length) -> stored data of ``fmt`` (list of blocks, or uint8 rows)."""
    _check_format(fmt, "fmt")
    arr = np.atleast_2d(np.asarray(x, dtype=_F32))
    if isinstance(fmt, TurboQuantRs):
        return rs.quantize_batch(fmt.config, arr)
    if isinstance(fmt, TurboQuantRsQjl):
        return rs.quantize_with_qjl_batch(fmt.config, arr, fmt.qjl_seed)
    padded = fmt.padded_head()
    if padded is not None and padded != fmt.head_dim:
        if arr.shape[-1] % fmt.head_dim:
            raise ValueError(
                f"x: expected a row length that is a multiple of head_dim {fmt.head_dim}, got {arr.shape[-1]}"
            )
        heads = arr.shape[-1] // fmt.head_dim
        pad = np.zeros(arr.shape[:-1] + (heads, padded - fmt.head_dim), _F32)
        arr = np.concatenate((arr.reshape(arr.shape[:-1] + (heads, fmt.head_dim)), pad), axis=-1)
        arr = arr.reshape(arr.shape[:-2] + (heads * padded,))
    return llamacpp.quantize_row(arr, fmt.kind, version=fmt.version)


def convert(data, src: Format, dst: Format):
    """Decode ``data`` with ``src`` and re-encode with ``dst`` (row lengths must agree)."""
    _check_format(src, "src")
    _check_format(dst, "dst")
    x = decode(data, src)
    want = getattr(dst, "row_length", None)
    if want is not None and x.shape[-1] != want:
        raise ValueError(f"dst: expected a format for rows of {x.shape[-1]} values, got one for {want}")
    return encode(x, dst)


def roundtrip(data, src: Format, via: Format) -> tuple[object, np.ndarray]:
    """``src -> via -> src``: returns (the re-encoded src data, its decoded float32)."""
    back = convert(convert(data, src, via), via, src)
    return back, decode(back, src)
