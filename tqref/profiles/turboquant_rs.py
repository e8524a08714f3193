"""Bit-exact profile of turboquant-rs (crate ``turboquant-rs``, lib ``turboquant``), core CPU path.

Target: turboquant-rs 0.3.1 at commit 17da4dfe (the numerics are unchanged in 0.4.1), the
version that produced ``tests/data/external/turboquant-rs``. Byte layouts, constants and the
crate's known bugs are in docs/runtimes/turboquant-rs.md; the candle cache layer lives in
:mod:`tqref.profiles.turboquant_rs_cache`.

Function and type names mirror the crate's public API so that a Rust developer recognises
them. Each step is a composition of tqref reference parts plus the crate's own constants and
quirks:

* WHT: :func:`tqref.reference.rotation.fwht` (the crate's ``wht_inplace`` exactly);
* packing: :func:`tqref.reference.packing.pack_bits` / ``unpack_bits`` (3-bit partial groups
  padded to a full 3-byte group, as the crate does);
* nearest centroid: :func:`tqref.reference.codebook.nearest_index` (ties to the lower bin,
  NaN -> 0, float32 coordinate promoted exactly to float64);
* what is the crate's own: the golden-ratio sign hash (bug B1), the Beta-pdf Lloyd–Max
  generator (Lanczos lnΓ, 1024-panel Simpson, at most 200 iterations) and its static tables,
  the Rademacher hash for QJL, and every summation order: a sequential float32 left fold
  starting at −0.0 (``iter().sum::<f32>()``), computed here with ``np.add.accumulate``.

Errors: bad arguments raise :class:`TurboQuantError` (a ``ValueError``) whose text is
``"<argument>: <crate message>"``; ``.crate_message`` holds the crate's ``Display`` text
verbatim (spec §2), e.g. ``unsupported bit width 6, expected 2, 3, or 4``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

from tqref.reference.codebook import nearest_index
from tqref.reference.packing import pack_bits, unpack_bits
from tqref.reference.rotation import fwht, inverse_sqrt, is_power_of_two

__all__ = [
    "CRATE_VERSION",
    "DEFAULT_QJL_SEED",
    "GOLDEN_RATIO",
    "MIN_NORM",
    "SQRT_PI_OVER_2",
    "Codebook",
    "PackedBlock",
    "QjlBlock",
    "QjlTrace",
    "QuantizeTrace",
    "QuantizedKVCache",
    "TurboQuantConfig",
    "TurboQuantError",
    "beta_pdf",
    "compute_qjl_signs",
    "dequantize_batch",
    "dequantize_rotated",
    "dequantize_vec",
    "estimate_inner_product",
    "estimate_inner_product_with_projections",
    "generate_codebook",
    "generate_rademacher_row",
    "generate_sign_pattern",
    "get_codebook",
    "l2_norm",
    "ln_gamma",
    "nearest_centroid",
    "pack_indices",
    "packed_len",
    "precompute_query_projections",
    "qjl_scaling_constant",
    "quantize_batch",
    "quantize_with_qjl",
    "quantize_with_qjl_batch",
    "quantize_vec",
    "rademacher_signs",
    "rotate",
    "trace_quantize_vec",
    "trace_quantize_with_qjl",
    "unpack_indices",
    "wht",
]

CRATE_VERSION = "0.3.1"
#: The golden-ratio constant of the crate's sign hash and Rademacher hash.
GOLDEN_RATIO = 0x9E3779B97F4A7C15
_QJL_SEED_MUL = 0x517CC1B727220A95
_QJL_ROW_XOR = 0x6C62272E07BB0142
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

#: ``cache/config.rs``: the QJL seed the candle cache layer always uses.
DEFAULT_QJL_SEED = 12345
#: Norms strictly below this (float32) are treated as zero.
MIN_NORM = np.float32(1e-10)
#: float32(sqrt(pi/2)), bit pattern 0x3fa06c99, the QJL estimator constant.
SQRT_PI_OVER_2 = np.float32(math.sqrt(math.pi / 2.0))
SUPPORTED_BITS = (2, 3, 4)
QJL_BITS = (3, 4)
_STATIC_DIMS = (32, 64, 128, 256)
_F32 = np.float32
_F16 = np.float16


# --------------------------------------------------------------------------- errors


class TurboQuantError(ValueError):
    """A crate error (``TurboQuantError`` in Rust).

    ``str(err)`` is ``"<argument>: <crate message>"``; ``err.crate_message`` is the crate's
    Display text verbatim and ``err.kind`` the Rust variant name.
    """

    def __init__(self, kind: str, argument: str, crate_message: str):
        super().__init__(f"{argument}: {crate_message}")
        self.kind = kind
        self.argument = argument
        self.crate_message = crate_message


def _unsupported_bits(bits, argument: str = "bits") -> TurboQuantError:
    return TurboQuantError(
        "UnsupportedBits", argument, f"unsupported bit width {bits}, expected 2, 3, or 4"
    )


def _dimension_mismatch(expected: int, actual: int, argument: str) -> TurboQuantError:
    return TurboQuantError(
        "DimensionMismatch", argument, f"expected vector of length {expected}, got {actual}"
    )


def _check_bits(bits, allowed=SUPPORTED_BITS, argument: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in allowed:
        raise _unsupported_bits(bits, argument)
    return int(bits)


def _check_seed(seed, argument: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _MASK64:
        raise ValueError(f"{argument}: expected an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _as_vectors(x, dim: int, argument: str) -> np.ndarray:
    """float32 array (..., dim); a wrong last-axis length raises DimensionMismatch."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{argument}: expected a real-valued array, got dtype {arr.dtype}")
    arr = arr.astype(_F32, copy=False)
    if arr.ndim == 0:
        raise ValueError(f"{argument}: expected a vector of length {dim}, got a scalar")
    if arr.shape[-1] != dim:
        raise _dimension_mismatch(dim, arr.shape[-1], argument)
    return arr


# --------------------------------------------------------------------------- float32 folds


def _fold(terms: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sequential float32 left fold starting at −0.0 (``iter().sum::<f32>()``) over ``axis``."""
    terms = np.moveaxis(np.asarray(terms, dtype=_F32), axis, -1)
    start = np.full(terms.shape[:-1] + (1,), -0.0, dtype=_F32)
    return np.add.accumulate(np.concatenate((start, terms), axis=-1), axis=-1, dtype=_F32)[..., -1]


def l2_norm(x) -> np.ndarray:
    """``sqrt`` of the sequential float32 fold of ``x*x`` over the last axis (no overflow guard)."""
    x = np.asarray(x, dtype=_F32)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(_fold(x * x))


# --------------------------------------------------------------------------- rotation


def _u64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64)


def generate_sign_pattern(dim: int, seed: int) -> np.ndarray:
    """The crate's sign pattern: s[i] = +1 iff the low bit of ``(seed+i)·GOLDEN`` is 0.

    The golden constant is odd, so s[i] = +1 iff (seed + i) is even: only two patterns exist
    (bug B1). Returns float32 (dim,).
    """
    seed = _check_seed(seed, "seed")
    idx = np.arange(int(dim), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (_u64([seed]) + idx) * _u64([GOLDEN_RATIO])
    low = (h & np.uint64(1)).astype(_F32)
    return _F32(1.0) - _F32(2.0) * low


def _check_dim(dim, argument: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not is_power_of_two(int(dim)):
        raise TurboQuantError("InvalidDimension", argument, f"dimension {dim} is not a power of two")
    return int(dim)


def wht(x) -> np.ndarray:
    """``wht_inplace``: normalised natural-order Walsh–Hadamard over the last axis (float32)."""
    x = np.asarray(x, dtype=_F32)
    _check_dim(x.shape[-1] if x.ndim else 0, "x")
    return fwht(x)


def rotate(x, signs, inverse: bool = False) -> np.ndarray:
    """``rotate(data, signs, order)``: forward = ·signs then WHT; inverse = WHT then ·signs."""
    x = np.asarray(x, dtype=_F32)
    signs = np.asarray(signs, dtype=_F32)
    n = x.shape[-1] if x.ndim else 0
    _check_dim(n, "x")
    if signs.shape != (n,):
        raise _dimension_mismatch(n, signs.shape[-1] if signs.ndim else 0, "signs")
    if inverse:
        return fwht(x) * signs
    return fwht(x * signs)


# --------------------------------------------------------------------------- codebooks

_LANCZOS = (
    0.9999999999998099,
    676.5203681218851,
    -1259.1392167224028,
    771.3234287776531,
    -176.6150291621406,
    12.507343278686905,
    -0.13857109526572012,
    9.984369578019572e-6,
    1.5056327351493116e-7,
)


def ln_gamma(z: float) -> float:
    """The crate's lnΓ: Lanczos g = 7, n = 9, reflection below 0.5 (scalar ``math`` calls)."""
    z = float(z)
    if z < 0.5:
        return math.log(math.pi) - math.log(abs(math.sin(math.pi * z))) - ln_gamma(1.0 - z)
    zm = z - 1.0
    acc = _LANCZOS[0]
    for i in range(1, 9):
        acc += _LANCZOS[i] / (zm + i)
    t = zm + 7.5
    return ((0.5 * math.log(2.0 * math.pi) + math.log(t) * (z - 0.5)) - t) + math.log(acc)


def _beta_log_norm(dim: int) -> float:
    return ln_gamma(dim / 2.0) - 0.5 * math.log(math.pi) - ln_gamma((dim - 1) / 2.0)


_POW = np.frompyfunc(math.pow, 2, 1)


def _beta_pdf_array(x: np.ndarray, dim: int, norm_const: float) -> np.ndarray:
    """Vectorised :func:`beta_pdf` with glibc ``pow`` (via ``math.pow``) per element."""
    one_minus = 1.0 - x * x
    zero = one_minus <= 0.0  # the crate's test: NaN is not <= 0, so NaN propagates like in Rust
    k = np.asarray(_POW(np.where(zero, 1.0, one_minus), (dim - 3) * 0.5), dtype=np.float64)
    return np.where(zero, 0.0, norm_const * k)


def beta_pdf(x, dim: int):
    """f(x; d) = exp(lnΓ(d/2) − ½ln π − lnΓ((d−1)/2)) · (1 − x²)^((d−3)/2); 0 if d < 3 or |x| ≥ 1.

    Scalar in, float out; an array in gives a float64 array. Uses ``math`` (glibc), not
    NumPy's ufuncs, whose exp/pow can differ from glibc by an ulp.
    """
    dim = int(dim)
    arr = np.asarray(x, dtype=np.float64)
    if dim < 3:
        out = np.zeros_like(arr)
    else:
        out = _beta_pdf_array(arr, dim, math.exp(_beta_log_norm(dim)))
    return float(out) if out.ndim == 0 else out


@dataclasses.dataclass(frozen=True, eq=False)
class Codebook:
    """``Codebook { centroids: Vec<f64>, boundaries: Vec<f64> }`` (float64, read-only)."""

    bits: int
    dim: int
    centroids: np.ndarray
    boundaries: np.ndarray

    @property
    def centroids_f32(self) -> np.ndarray:
        """``centroids[i] as f32``: the values dequantization uses."""
        return self.centroids.astype(_F32)


_SIMPSON_PANELS = 1024
_SIMPSON_W = np.where(np.arange(1, _SIMPSON_PANELS) % 2 == 1, 4.0, 2.0)
_LLOYD_MAX_ITERATIONS = 200


def _simpson(values: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Composite Simpson per row of ``values`` (k, 1025): f(a) + f(b) + Σ w_i f_i, in order."""
    terms = np.concatenate((values[:, :1], values[:, -1:], _SIMPSON_W * values[:, 1:-1]), axis=1)
    return np.add.accumulate(terms, axis=1)[:, -1] * h / 3.0


def _freeze(values) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=64)
def _generate(bits: int, dim: int) -> Codebook:
    k = 1 << bits
    centroids = np.array([-1.0 + 2.0 * (i + 0.5) / k for i in range(k)])
    norm_const = math.exp(_beta_log_norm(dim)) if dim >= 3 else 0.0
    grid = np.arange(_SIMPSON_PANELS + 1, dtype=np.float64)
    prev = np.finfo(np.float64).max
    for _ in range(_LLOYD_MAX_ITERATIONS):  # the crate's iteration order; vectorised over bins
        mids = (centroids[:-1] + centroids[1:]) * 0.5
        lo = np.concatenate(([-1.0], mids))
        hi = np.concatenate((mids, [1.0]))
        h = (hi - lo) / _SIMPSON_PANELS
        x = lo[:, None] + grid[None, :] * h[:, None]
        x[:, -1] = hi
        f = _beta_pdf_array(x, dim, norm_const) if dim >= 3 else np.zeros_like(x)
        mass = _simpson(f, h)
        moment = _simpson(x * f, h)
        empty = np.abs(mass) < 1e-30
        centroids = np.where(empty, (lo + hi) * 0.5, moment / np.where(empty, 1.0, mass))
        dev = x - centroids[:, None]
        distortion = 0.0
        for part in _simpson(dev * dev * f, h):  # sequential f64 sum over bins
            distortion += part
        if abs(prev - distortion) < 1e-12 * max(abs(prev), 1e-30):
            break
        prev = distortion
    boundaries = (centroids[:-1] + centroids[1:]) * 0.5
    return Codebook(bits, dim, _freeze(centroids), _freeze(boundaries))


def generate_codebook(bits: int, dim: int) -> Codebook:
    """The crate's Lloyd–Max on the Beta pdf, bit for bit (``codebook/gen.rs``).

    Uniform initial centroids on [−1, 1]; at most 200 iterations of midpoint boundaries,
    conditional means by 1024-panel Simpson (empty bin -> midpoint), stop when the distortion
    changes by < 1e-12 relative. Degenerate for d ≥ 1024 (bug B3). Cached per (bits, dim).
    """
    bits = _check_bits(bits)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 0:
        raise ValueError(f"dim: expected a non-negative integer, got {dim!r}")
    return _generate(bits, int(dim))


@functools.lru_cache(maxsize=1)
def _static_tables() -> dict:
    from ._turboquant_rs_tables import STATIC_TABLES

    return {
        key: Codebook(key[0], key[1], _freeze(c), _freeze(b)) for key, (c, b) in STATIC_TABLES.items()
    }


def get_codebook(bits: int, dim: int) -> Codebook:
    """``get_codebook``: the static table for dim ∈ {32, 64, 128, 256}, else Lloyd–Max now."""
    bits = _check_bits(bits)
    if int(dim) in _STATIC_DIMS:
        return _static_tables()[(bits, int(dim))]
    return generate_codebook(bits, dim)


def nearest_centroid(value, boundaries) -> np.ndarray:
    """Number of boundaries strictly below ``value`` (ties low, NaN -> 0); value as float64.

    ``boundaries`` may be a :class:`Codebook` or a float64 array. Works elementwise.
    """
    if isinstance(boundaries, Codebook):
        boundaries = boundaries.boundaries
    return nearest_index(np.asarray(value, dtype=np.float64), np.asarray(boundaries, dtype=np.float64))


# --------------------------------------------------------------------------- packing


def packed_len(count: int, bits: int) -> int:
    """Bytes of the crate's packers: 2-bit ⌈n/4⌉, 3-bit 3·⌈n/8⌉, 4-bit ⌈n/2⌉."""
    bits = _check_bits(bits)
    if bits == 3:
        return 3 * ((count + 7) // 8)
    return (count * bits + 7) // 8


def _group(bits: int) -> int:
    return 8 if bits == 3 else 1


def pack_indices(indices, bits: int) -> np.ndarray:
    """``pack_indices_{2,3,4}bit``: LSB-first stream; a 3-bit partial group takes 3 bytes.

    Works on (..., n) integer arrays; only the low ``bits`` bits of each index are used.
    Returns uint8 (..., packed_len(n, bits)).
    """
    bits = _check_bits(bits)
    idx = np.asarray(indices)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices: expected an integer array, got dtype {idx.dtype}")
    if idx.ndim == 0:
        raise ValueError("indices: expected an array of indices, got a scalar")
    n = idx.shape[-1]
    pad = (-n) % _group(bits)
    if pad:
        idx = np.concatenate((idx, np.zeros(idx.shape[:-1] + (pad,), idx.dtype)), axis=-1)
    return pack_bits(idx, bits)


def unpack_indices(packed, bits: int, count: int) -> np.ndarray:
    """``unpack_indices_{2,3,4}bit``: decode whole groups and truncate to ``count``.

    Bytes past the last whole group needed are ignored, as in the crate; fewer bytes than
    ``packed_len(count, bits)`` raise ValueError. Returns uint8 (..., count).
    """
    bits = _check_bits(bits)
    buf = np.asarray(bytearray(packed) if isinstance(packed, (bytes, bytearray)) else packed)
    if buf.dtype != np.uint8:
        raise ValueError(f"packed: expected uint8 bytes, got dtype {buf.dtype}")
    need = packed_len(count, bits)
    have = buf.shape[-1] if buf.ndim else 0
    if have < need:
        raise ValueError(
            f"packed: expected at least {need} bytes for {count} indices of {bits} bits, got {have} (truncated)"
        )
    padded = count + (-count) % _group(bits)
    return unpack_bits(buf[..., :need], bits, padded)[..., :count]


# --------------------------------------------------------------------------- blocks


@dataclasses.dataclass(frozen=True)
class TurboQuantConfig:
    """``TurboQuantConfig { bits, dim, rotation_seed }``; ``new(bits, dim)`` sets the seed to 0.

    bits ∈ {2, 3, 4}; dim a power of two ≥ 1 (dim = 1 is accepted, like the crate).
    """

    bits: int
    dim: int
    rotation_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "bits", _check_bits(self.bits))
        object.__setattr__(self, "dim", _check_dim(self.dim))
        object.__setattr__(self, "rotation_seed", _check_seed(self.rotation_seed, "rotation_seed"))

    @classmethod
    def new(cls, bits: int, dim: int) -> "TurboQuantConfig":
        return cls(bits, dim, 0)

    def with_seed(self, seed: int) -> "TurboQuantConfig":
        return TurboQuantConfig(self.bits, self.dim, seed)


def _f16_bits(value) -> int:
    return int(np.asarray(value, dtype=_F16).view(np.uint16))


@dataclasses.dataclass(frozen=True, eq=False)
class PackedBlock:
    """``PackedBlock { bits, scale: f16 (the L2 norm), packed_indices }``.

    Equality compares the stored bytes (the scale by its bit pattern, so NaN scales compare
    equal to themselves, as the crate's byte-level comparisons do).
    """

    bits: int
    scale: np.float16
    packed_indices: bytes

    def _key(self):
        return (int(self.bits), _f16_bits(self.scale), bytes(self.packed_indices))

    def __eq__(self, other):
        return isinstance(other, PackedBlock) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def scale_bits(self) -> int:
        """The f16 scale as its u16 bit pattern (``scale.to_bits()``)."""
        return _f16_bits(self.scale)

    def size_bytes(self) -> int:
        """2 (the f16 scale) + the packed bytes, e.g. 50 for 3-bit d = 128."""
        return 2 + len(self.packed_indices)

    def unpack(self, count: int) -> np.ndarray:
        return unpack_indices(self.packed_indices, self.bits, count)

    @classmethod
    def from_raw(cls, bits: int, scale, packed_indices) -> "PackedBlock":
        """Adopt pre-packed bytes (``from_raw``); ``scale`` may be an f16 or its u16 bit pattern."""
        if isinstance(scale, (int, np.integer)) and not isinstance(scale, bool):
            scale = np.uint16(scale).view(_F16)
        return cls(int(bits), _F16(scale), bytes(packed_indices))


@dataclasses.dataclass(frozen=True, eq=False)
class QjlBlock:
    """``QjlBlock { polar_block (bits−1), qjl_signs (⌈d/8⌉ bytes), residual_norm: f16 }``."""

    polar_block: PackedBlock
    qjl_signs: bytes
    residual_norm: np.float16

    def _key(self):
        return (self.polar_block._key(), bytes(self.qjl_signs), _f16_bits(self.residual_norm))

    def __eq__(self, other):
        return isinstance(other, QjlBlock) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def size_bytes(self) -> int:
        """2 + packed + ⌈d/8⌉ + 2 bytes, e.g. 52 for TQ3 at d = 128."""
        return self.polar_block.size_bytes() + len(self.qjl_signs) + 2


@dataclasses.dataclass
class _Quantized:
    """Vectorised quantize result for rows (n, d)."""

    norm: np.ndarray  # float32 (n,)
    normalized: np.ndarray  # float32 (n, d)
    rotated: np.ndarray  # float32 (n, d)
    indices: np.ndarray  # uint8 (n, d)
    scale: np.ndarray  # float16 (n,)
    packed: np.ndarray  # uint8 (n, packed_len)


def _quantize_rows(config: TurboQuantConfig, rows: np.ndarray) -> _Quantized:
    """quantize_vec on every row of float32 (n, d), vectorised."""
    cb = get_codebook(config.bits, config.dim)
    signs = generate_sign_pattern(config.dim, config.rotation_seed)
    norm = l2_norm(rows)
    small = norm < MIN_NORM
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = _F32(1.0) / norm
        normalized = np.where(small[:, None], _F32(0.0), rows * inv[:, None]).astype(_F32)
        rotated = fwht(normalized * signs)
        scale = np.where(small, _F32(0.0), norm).astype(_F16)
    indices = nearest_index(rotated.astype(np.float64), cb.boundaries)
    return _Quantized(norm, normalized, rotated, indices, scale, pack_indices(indices, config.bits))


def _dequantize_rows(config: TurboQuantConfig, bits: int, packed: np.ndarray, scales: np.ndarray, *, rotated=False):
    """dequantize_vec / dequantize_rotated for rows: unpack ``bits``, config's codebook."""
    cb = get_codebook(config.bits, config.dim)
    idx = unpack_indices(packed, bits, config.dim)
    if idx.size and int(idx.max()) >= len(cb.centroids):
        raise ValueError(
            f"block: index {int(idx.max())} out of range for the {config.bits}-bit codebook "
            f"(block.bits = {bits}; the crate would panic)"
        )
    y = cb.centroids_f32[idx]
    if not rotated:
        y = fwht(y) * generate_sign_pattern(config.dim, config.rotation_seed)
    with np.errstate(over="ignore", invalid="ignore"):
        return (y * np.asarray(scales, dtype=_F16).astype(_F32)[:, None]).astype(_F32)


def _block_packed(block: PackedBlock, config: TurboQuantConfig, argument: str = "block") -> np.ndarray:
    if not isinstance(block, PackedBlock):
        raise ValueError(f"{argument}: expected a PackedBlock, got {type(block).__name__}")
    need = packed_len(config.dim, block.bits) if block.bits in SUPPORTED_BITS else None
    if need is None:
        raise _unsupported_bits(block.bits, f"{argument}.bits")
    if len(block.packed_indices) < need:
        raise ValueError(
            f"{argument}.packed_indices: expected at least {need} bytes for dim {config.dim} at "
            f"{block.bits} bits, got {len(block.packed_indices)} (truncated)"
        )
    return np.frombuffer(block.packed_indices, dtype=np.uint8)[None, :need]


def quantize_vec(config: TurboQuantConfig, x) -> PackedBlock:
    """``quantize_vec``: L2 norm, ·(1/norm), forward rotation, nearest index, f16 scale, pack."""
    rows = _as_vectors(x, config.dim, "x")
    if rows.ndim != 1:
        raise ValueError(f"x: expected a single vector of shape ({config.dim},), got {rows.shape}")
    q = _quantize_rows(config, rows[None, :])
    return PackedBlock(config.bits, q.scale[0], q.packed[0].tobytes())


def quantize_batch(config: TurboQuantConfig, xs) -> list[PackedBlock]:
    """quantize_vec for every row of (n, dim), vectorised; identical bytes."""
    rows = _as_vectors(xs, config.dim, "xs").reshape(-1, config.dim)
    q = _quantize_rows(config, rows)
    return [PackedBlock(config.bits, s, p.tobytes()) for s, p in zip(q.scale, q.packed)]


@dataclasses.dataclass(frozen=True)
class QuantizeTrace:
    """Every intermediate of ``quantize_vec`` (for porters comparing a port step by step)."""

    l2_norm: np.float32
    normalized: np.ndarray
    rotated: np.ndarray
    indices: np.ndarray
    block: PackedBlock


def trace_quantize_vec(config: TurboQuantConfig, x) -> QuantizeTrace:
    """:func:`quantize_vec` plus its intermediates: norm, x·(1/norm), rotated, indices."""
    rows = _as_vectors(x, config.dim, "x")
    if rows.ndim != 1:
        raise ValueError(f"x: expected a single vector of shape ({config.dim},), got {rows.shape}")
    q = _quantize_rows(config, rows[None, :])
    block = PackedBlock(config.bits, q.scale[0], q.packed[0].tobytes())
    return QuantizeTrace(q.norm[0], q.normalized[0], q.rotated[0], q.indices[0], block)


def dequantize_vec(config: TurboQuantConfig, block: PackedBlock) -> np.ndarray:
    """``dequantize_vec``: f32(centroid) -> inverse rotation -> ·f32(scale). Float32 (dim,).

    Like the crate it does not check ``block.bits == config.bits`` (bug B11): indices are
    unpacked with ``block.bits`` and looked up in the ``config.bits`` codebook.
    """
    packed = _block_packed(block, config)
    return _dequantize_rows(config, block.bits, packed, np.array([block.scale]))[0]


def dequantize_rotated(config: TurboQuantConfig, block: PackedBlock) -> np.ndarray:
    """``dequantize_rotated``: centroid·scale in the rotated domain (no inverse rotation)."""
    packed = _block_packed(block, config)
    return _dequantize_rows(config, block.bits, packed, np.array([block.scale]), rotated=True)[0]


def dequantize_batch(config: TurboQuantConfig, blocks: Sequence[PackedBlock]) -> np.ndarray:
    """dequantize_vec for a sequence of blocks of one bit width: float32 (n, dim)."""
    blocks = list(blocks)
    if not blocks:
        return np.zeros((0, config.dim), _F32)
    bits = {b.bits for b in blocks}
    if len(bits) != 1:
        raise ValueError(f"blocks: expected one bit width, got {sorted(bits)}")
    packed = np.concatenate([_block_packed(b, config, f"blocks[{i}]") for i, b in enumerate(blocks)])
    return _dequantize_rows(config, blocks[0].bits, packed, np.array([b.scale for b in blocks]))


# --------------------------------------------------------------------------- QJL


@functools.lru_cache(maxsize=64)
def _rademacher_positive(dim: int, seed: int) -> np.ndarray:
    rows = np.arange(dim, dtype=np.uint64)[:, None]
    cols = np.arange(dim, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        m = _u64([seed]) * _u64([_QJL_SEED_MUL]) + rows
        row_seed = m ^ (m >> np.uint64(32)) ^ _u64([_QJL_ROW_XOR])
        z = row_seed + rows * _u64([GOLDEN_RATIO]) + cols
        z = (z ^ (z >> np.uint64(30))) * _u64([_MIX1])
        z = (z ^ (z >> np.uint64(27))) * _u64([_MIX2])
        z ^= z >> np.uint64(31)
    positive = (z & np.uint64(1)) == 0
    positive.setflags(write=False)
    return positive


def rademacher_signs(dim: int, seed: int) -> np.ndarray:
    """The ±1 Rademacher matrix S (float32, dim × dim): S[j, c] = +1 iff the hash's low bit is 0."""
    seed = _check_seed(seed, "qjl_seed")
    return np.where(_rademacher_positive(int(dim), seed), _F32(1.0), _F32(-1.0))


def generate_rademacher_row(dim: int, seed: int, row: int) -> np.ndarray:
    """``generate_rademacher_row``: sign(j = row, c)·(1/√dim) for c in 0..dim, float32."""
    if not 0 <= int(row) < int(dim):
        raise ValueError(f"row: expected an integer in [0, {dim}), got {row!r}")
    return rademacher_signs(dim, seed)[int(row)] * inverse_sqrt(int(dim))


def _projections(v: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """p_j = fold_c(sign(j, c)·v_c) · (1/√d) for rows v (n, d): float32 (n, d)."""
    signs = rademacher_signs(dim, seed)
    return _fold(signs[None, :, :] * v[:, None, :]) * inverse_sqrt(dim)


def precompute_query_projections(query, dim: int, qjl_seed: int) -> np.ndarray:
    """``precompute_query_projections``: p_j(query) for j = 0..dim−1, float32 (dim,) or (n, dim)."""
    q = _as_vectors(query, int(dim), "query")
    seed = _check_seed(qjl_seed, "qjl_seed")
    out = _projections(q.reshape(-1, int(dim)), int(dim), seed)
    return out.reshape(q.shape)


def compute_qjl_signs(residual, dim: int, qjl_seed: int) -> np.ndarray:
    """``compute_qjl_signs``: bit j = 1 iff p_j(residual) ≥ 0 (−0.0 counts, NaN does not).

    Bits are packed LSB-first (bit j -> byte j/8, bit j%8): uint8 (..., ⌈dim/8⌉).
    """
    r = _as_vectors(residual, int(dim), "residual")
    seed = _check_seed(qjl_seed, "qjl_seed")
    p = _projections(r.reshape(-1, int(dim)), int(dim), seed)
    bits = (p >= 0).astype(np.uint8)
    return pack_bits(bits, 1).reshape(r.shape[:-1] + (-1,))


def qjl_scaling_constant(residual_norm, dim: int) -> np.ndarray:
    """(γ · f32(√(π/2))) / √d, each step rounded to float32 (core grouping; see bug B9)."""
    gamma = np.asarray(residual_norm, dtype=_F32)
    with np.errstate(over="ignore", invalid="ignore"):
        return (gamma * SQRT_PI_OVER_2) / np.sqrt(_F32(dim))


def _polar_config(config: TurboQuantConfig, bits: int) -> TurboQuantConfig:
    return TurboQuantConfig(bits, config.dim, config.rotation_seed)


@dataclasses.dataclass
class _QjlRows:
    polar: _Quantized
    polar_dequantized: np.ndarray
    residual: np.ndarray
    residual_norm: np.ndarray  # float32
    signs: np.ndarray  # uint8 (n, ⌈d/8⌉)


def _quantize_with_qjl_rows(config: TurboQuantConfig, rows: np.ndarray, qjl_seed: int) -> _QjlRows:
    _check_bits(config.bits, QJL_BITS, "config.bits")
    seed = _check_seed(qjl_seed, "qjl_seed")
    pcfg = _polar_config(config, config.bits - 1)
    polar = _quantize_rows(pcfg, rows)
    xhat = _dequantize_rows(pcfg, pcfg.bits, polar.packed, polar.scale)
    with np.errstate(invalid="ignore", over="ignore"):
        residual = rows - xhat
        gamma = l2_norm(residual)
    p = _projections(residual, config.dim, seed)
    signs = pack_bits((p >= 0).astype(np.uint8), 1)
    return _QjlRows(polar, xhat, residual, gamma, signs)


def _qjl_blocks(config: TurboQuantConfig, q: _QjlRows) -> list[QjlBlock]:
    bits = config.bits - 1
    return [
        QjlBlock(PackedBlock(bits, s, p.tobytes()), sg.tobytes(), g)
        for s, p, sg, g in zip(q.polar.scale, q.polar.packed, q.signs, q.residual_norm.astype(_F16))
    ]


def quantize_with_qjl(config: TurboQuantConfig, x, qjl_seed: int) -> QjlBlock:
    """``quantize_with_qjl`` (TurboQuant_prod): (bits−1)-bit polar block + 1-bit QJL of the residual.

    bits ∉ {3, 4} raises UnsupportedBits, whose crate text misleadingly says "expected 2, 3, or 4".
    """
    rows = _as_vectors(x, config.dim, "x")
    if rows.ndim != 1:
        raise ValueError(f"x: expected a single vector of shape ({config.dim},), got {rows.shape}")
    return _qjl_blocks(config, _quantize_with_qjl_rows(config, rows[None, :], qjl_seed))[0]


def quantize_with_qjl_batch(config: TurboQuantConfig, xs, qjl_seed: int) -> list[QjlBlock]:
    """``quantize_with_qjl`` on every row of (n, dim) (the crate's batch path gives the same bytes)."""
    rows = _as_vectors(xs, config.dim, "xs").reshape(-1, config.dim)
    return _qjl_blocks(config, _quantize_with_qjl_rows(config, rows, qjl_seed))


@dataclasses.dataclass(frozen=True)
class QjlTrace:
    """Every intermediate of ``quantize_with_qjl``."""

    polar: QuantizeTrace
    polar_dequantized: np.ndarray
    residual: np.ndarray
    residual_norm: np.float32
    block: QjlBlock


def trace_quantize_with_qjl(config: TurboQuantConfig, x, qjl_seed: int) -> QjlTrace:
    """:func:`quantize_with_qjl` plus the polar trace, x̂, the residual and its f32 norm."""
    rows = _as_vectors(x, config.dim, "x")
    if rows.ndim != 1:
        raise ValueError(f"x: expected a single vector of shape ({config.dim},), got {rows.shape}")
    q = _quantize_with_qjl_rows(config, rows[None, :], qjl_seed)
    block = _qjl_blocks(config, q)[0]
    p = q.polar
    polar = QuantizeTrace(p.norm[0], p.normalized[0], p.rotated[0], p.indices[0], block.polar_block)
    return QjlTrace(polar, q.polar_dequantized[0], q.residual[0], q.residual_norm[0], block)


def _estimate_rows(
    query: np.ndarray, rq: np.ndarray, blocks: Sequence[QjlBlock], config: TurboQuantConfig, polar_bits=None
):
    """Estimates for one query (d,) against blocks; polar bits from ``polar_bits`` or each block."""
    bits = polar_bits if polar_bits is not None else blocks[0].polar_block.bits
    pcfg = _polar_config(config, bits)
    packed = np.concatenate(
        [_block_packed(b.polar_block, pcfg, f"blocks[{i}].polar_block") for i, b in enumerate(blocks)]
    )
    xhat = _dequantize_rows(pcfg, bits, packed, np.array([b.polar_block.scale for b in blocks]))
    nsign = (config.dim + 7) // 8
    sign_bytes = []
    for i, b in enumerate(blocks):
        if len(b.qjl_signs) < nsign:
            raise ValueError(f"blocks[{i}].qjl_signs: expected {nsign} bytes, got {len(b.qjl_signs)} (truncated)")
        sign_bytes.append(np.frombuffer(b.qjl_signs, np.uint8)[:nsign])
    bits_set = unpack_bits(np.stack(sign_bytes), 1, config.dim)
    pm = np.where(bits_set == 1, _F32(1.0), _F32(-1.0))
    with np.errstate(over="ignore", invalid="ignore"):
        base = _fold(query[None, :] * xhat)
        corr = _fold(rq[None, :] * pm)
        c = qjl_scaling_constant(np.array([b.residual_norm for b in blocks], dtype=_F16).astype(_F32), config.dim)
        return (base + c * corr).astype(_F32)


def estimate_inner_product_with_projections(
    query, projections, block: QjlBlock, config: TurboQuantConfig
) -> np.float32:
    """``estimate_inner_product(q, rq, block, config)``: ⟨q, x̂⟩ + (γ·√(π/2)/√d)·Σ_j rq_j·sign_j.

    x̂ is rebuilt with ``block.polar_block.bits`` and ``config.rotation_seed``.
    """
    q = _as_vectors(query, config.dim, "query")
    rq = _as_vectors(projections, config.dim, "projections")
    if not isinstance(block, QjlBlock):
        raise ValueError(f"block: expected a QjlBlock, got {type(block).__name__}")
    return _estimate_rows(q, rq, [block], config)[0]


def estimate_inner_product(query, block: QjlBlock, config: TurboQuantConfig, qjl_seed: int) -> np.float32:
    """``estimate_inner_product_single``: computes the query projections itself (same bits)."""
    rq = precompute_query_projections(query, config.dim, qjl_seed)
    return estimate_inner_product_with_projections(query, rq, block, config)


# --------------------------------------------------------------------------- QuantizedKVCache


class QuantizedKVCache:
    """``QuantizedKVCache`` (core ``attention.rs``): per layer, keys and values as QjlBlocks.

    ``push`` quantizes both key and value with :func:`quantize_with_qjl` (values' QJL parts
    are stored and counted in ``memory_usage`` but never used: bug B8).
    """

    def __init__(self, config: TurboQuantConfig, num_layers: int, qjl_seed: int):
        if not isinstance(config, TurboQuantConfig):
            raise ValueError(f"config: expected a TurboQuantConfig, got {type(config).__name__}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 0:
            raise ValueError(f"num_layers: expected a non-negative integer, got {num_layers!r}")
        self.config = config
        self.qjl_seed = _check_seed(qjl_seed, "qjl_seed")
        self._keys: list[list[QjlBlock]] = [[] for _ in range(int(num_layers))]
        self._values: list[list[QjlBlock]] = [[] for _ in range(int(num_layers))]

    # -- helpers
    def num_layers(self) -> int:
        return len(self._keys)

    def _check_layer(self, layer) -> int:
        n = self.num_layers()
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < n:
            raise TurboQuantError(
                "LayerOutOfRange", "layer", f"layer index {layer} out of range (num_layers = {n})"
            )
        return int(layer)

    def _check_range(self, start: int, end: int, count: int) -> None:
        if not (0 <= start <= end <= count):
            raise TurboQuantError(
                "RangeOutOfBounds", "range", f"range [{start}..{end}) out of bounds for entry_count = {count}"
            )

    # -- writes
    def push(self, layer: int, key, value) -> None:
        """Quantize and append one (key, value) pair (crate order of checks: layer, key, value)."""
        layer = self._check_layer(layer)
        k = _as_vectors(key, self.config.dim, "key")
        v = _as_vectors(value, self.config.dim, "value")
        if k.ndim != 1 or v.ndim != 1:
            raise ValueError(f"key, value: expected vectors of shape ({self.config.dim},)")
        self._append(layer, k[None, :], v[None, :])

    def push_batch(self, layer: int, keys, values) -> None:
        """``push_batch``: same bytes as repeated ``push``. keys, values: (n, dim)."""
        layer = self._check_layer(layer)
        ks = np.asarray(keys)
        vs = np.asarray(values)
        if len(ks) != len(vs):
            raise _dimension_mismatch(len(vs), len(ks), "keys")
        ks = _as_vectors(ks, self.config.dim, "keys").reshape(-1, self.config.dim)
        vs = _as_vectors(vs, self.config.dim, "values").reshape(-1, self.config.dim)
        self._append(layer, ks, vs)

    def _append(self, layer: int, ks: np.ndarray, vs: np.ndarray) -> None:
        both = _quantize_with_qjl_rows(self.config, np.concatenate((ks, vs)), self.qjl_seed)
        blocks = _qjl_blocks(self.config, both)
        n = len(ks)
        self._keys[layer].extend(blocks[:n])
        self._values[layer].extend(blocks[n:])

    def import_packed_range(
        self,
        layer: int,
        polar_bits: int,
        packed_bytes: bytes,
        scales,
        qjl_signs_flat: bytes,
        residual_norms,
        bytes_per_block: int,
        signs_per_block: int,
        is_keys: bool,
    ) -> None:
        """``import_packed_range(PackedImport{..})``: rebuild QjlBlocks from flat buffers."""
        layer = self._check_layer(layer)
        scales = np.asarray(scales, dtype=np.uint16)
        norms = np.asarray(residual_norms, dtype=np.uint16)
        count = len(scales)
        short = (
            len(packed_bytes) < count * bytes_per_block
            or len(qjl_signs_flat) < count * signs_per_block
            or len(norms) < count
        )
        if short:
            raise ValueError(f"import: buffers are shorter than {count} blocks (truncated)")
        target = self._keys[layer] if is_keys else self._values[layer]
        for i in range(count):
            pb_bytes = packed_bytes[i * bytes_per_block : (i + 1) * bytes_per_block]
            signs = bytes(qjl_signs_flat[i * signs_per_block : (i + 1) * signs_per_block])
            target.append(QjlBlock(PackedBlock.from_raw(polar_bits, scales[i], pb_bytes), signs, norms[i].view(_F16)))

    # -- reads
    def entry_count(self, layer: int) -> int:
        return len(self._keys[self._check_layer(layer)])

    def key_block(self, layer: int, index: int):
        """The key QjlBlock at (layer, index), or None when either is out of range."""
        if not (0 <= int(layer) < self.num_layers() and 0 <= int(index) < len(self._keys[int(layer)])):
            return None
        return self._keys[int(layer)][int(index)]

    def attention_scores(self, layer: int, query) -> np.ndarray:
        """Estimated ⟨q, k⟩ for every key, in order; polar bits taken from the first key."""
        layer = self._check_layer(layer)
        rq = precompute_query_projections(query, self.config.dim, self.qjl_seed)
        keys = self._keys[layer]
        if not keys:
            return np.zeros(0, _F32)
        q = _as_vectors(query, self.config.dim, "query")
        return _estimate_rows(q, rq, keys, self.config, keys[0].polar_block.bits)

    def weighted_values(self, layer: int, weights) -> np.ndarray:
        """acc = +0.0; for each entry in order acc += x̂_v·w (polar part only, float32)."""
        layer = self._check_layer(layer)
        w = np.asarray(weights, dtype=_F32).reshape(-1)
        count = len(self._keys[layer])
        if len(w) != count:
            raise _dimension_mismatch(count, len(w), "weights")
        values = self._values[layer]
        if not values:
            return np.zeros(self.config.dim, _F32)
        xhat = self._dequantize(values)
        with np.errstate(over="ignore", invalid="ignore"):
            terms = np.concatenate((np.zeros((1, self.config.dim), _F32), xhat * w[:, None]))
            return np.add.accumulate(terms, axis=0, dtype=_F32)[-1]

    def _dequantize(self, blocks: Sequence[QjlBlock]) -> np.ndarray:
        bits = blocks[0].polar_block.bits
        pcfg = _polar_config(self.config, bits)
        packed = np.concatenate([_block_packed(b.polar_block, pcfg) for b in blocks])
        return _dequantize_rows(pcfg, bits, packed, np.array([b.polar_block.scale for b in blocks]))

    def dequantize_all_keys(self, layer: int) -> np.ndarray:
        layer = self._check_layer(layer)
        return self._dequantize(self._keys[layer]) if self._keys[layer] else np.zeros((0, self.config.dim), _F32)

    def dequantize_all_values(self, layer: int) -> np.ndarray:
        layer = self._check_layer(layer)
        return self._dequantize(self._values[layer]) if self._values[layer] else np.zeros((0, self.config.dim), _F32)

    def dequantize_keys_range(self, layer: int, start: int, end: int) -> np.ndarray:
        layer = self._check_layer(layer)
        self._check_range(start, end, len(self._keys[layer]))
        blocks = self._keys[layer][start:end]
        return self._dequantize(blocks) if blocks else np.zeros((0, self.config.dim), _F32)

    def dequantize_values_range(self, layer: int, start: int, end: int) -> np.ndarray:
        layer = self._check_layer(layer)
        self._check_range(start, end, len(self._values[layer]))
        blocks = self._values[layer][start:end]
        return self._dequantize(blocks) if blocks else np.zeros((0, self.config.dim), _F32)

    def export_packed_range(self, layer: int, start: int, end: int, is_keys: bool) -> tuple[bytes, np.ndarray]:
        """(concatenated polar packed bytes, the f16 scales as uint16 bit patterns)."""
        layer = self._check_layer(layer)
        blocks = (self._keys if is_keys else self._values)[layer]
        self._check_range(start, end, len(blocks))
        sel = blocks[start:end]
        packed = b"".join(b.polar_block.packed_indices for b in sel)
        scales = np.array([b.polar_block.scale for b in sel], dtype=_F16).view(np.uint16)
        return packed, scales

    def memory_usage(self) -> int:
        """Σ over every key **and value** block of (2 + packed + signs + 2) bytes (bug B8)."""
        return sum(b.size_bytes() for layer in self._keys + self._values for b in layer)

    def fp16_equivalent_memory(self) -> int:
        """entries · dim · 2 bytes · 2 (key and value)."""
        return sum(len(layer) for layer in self._keys) * self.config.dim * 2 * 2
