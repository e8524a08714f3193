"""turboquant-rs's candle KV-cache layer (``src/cache/*``, feature ``candle``), CPU path.

This layer quantizes each head vector in independent blocks of 32 (``QUANT_BLOCK_SIZE``)
with a fixed 32-point rotation (WHT **then** a hard-coded "llama.cpp" sign pattern, the
opposite order and a different pattern from the core path: bug B2), a per-block norm
(L2Norm: Beta codebooks of dim 32; MaxNorm, the default: llama.cpp-style empirical
codebooks), packs the indices with the core packers, and stores K/V per layer in growing
buffers. ``TqCache`` adds a 1-bit QJL sketch of each key residual and returns a logit bias;
``PqoCache`` does not. Modes (``CacheConfig``): PQO (``outlier_blocks >= num_blocks``),
TQ (``TqCache`` with ``outlier_blocks == 0``), PQ (``PqoCache`` with 0), mixed (broken, B6).

Exactness. The crate evaluates this layer with candle tensor ops. Every elementwise step
here is the same IEEE float32 operation candle performs (including candle's habit of turning
``tensor / f64`` into ``tensor * f32(1/x) + 0``). Two kinds of step have an order that
depends on the build, so they are selectable through :class:`NumericOrder`:

* reductions (``sum_keepdim``): candle's ``vec_sum``: with AVX (``-C target-cpu=native``,
  the crate's own build setting) 4×8 lanes over 32-element steps, then a fixed fold (the
  default, ``reduction="avx"``); without SIMD, a sequential fold from 0 (``"sequential"``);
* matmuls (``x · rotation_fwd``, ``q · Rᵀ``, ``r_q · Sᵀ``): candle's CPU matmul calls the
  ``gemm`` crate, whose kernel order was not verified. ``matmul="fma"`` (default) is a
  sequential fused multiply-add over k (what gemm's FMA micro-kernels do per output);
  ``"sequential"`` rounds each product first; ``"float64"`` is the exact-then-rounded
  result. :func:`measure_order_agreement` measures how often these choices change an index
  or a stored scale (docs/runtimes/turboquant-rs.md states the numbers).

The GPU paths (cuBLAS matmul, the CUDA quantize/dequantize kernels, the fused attention
kernel) are not modelled; the crate itself only asks them to match the CPU within tolerance.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import numpy as np

from tqref.reference.codebook import nearest_index
from tqref.reference.packing import unpack_bits
from tqref.reference.rotation import fwht, inverse_sqrt

from . import turboquant_rs as core
from ._fp import fma_f32

__all__ = [
    "BITS_PER_BYTE",
    "DEFAULT_QJL_SEED",
    "DEFAULT_ROTATION_SEED",
    "LLAMA_SIGNS_32",
    "QUANT_BLOCK_SIZE",
    "USIZE_MAX",
    "CacheConfig",
    "DecodeOutput",
    "DequantResult",
    "GpuPrecomputed",
    "LayerStorage",
    "NumericOrder",
    "PqoCache",
    "QuantConfig",
    "QuantNormMode",
    "StorageMetadata",
    "TqCache",
    "fused_decode_schedule",
    "measure_order_agreement",
    "polar_dequantize",
    "polar_quantize",
]

_F32 = np.float32
_F16 = np.float16

QUANT_BLOCK_SIZE = 32
BITS_PER_BYTE = 8
#: Used only when the block size is not 32, i.e. never.
DEFAULT_ROTATION_SEED = 42
DEFAULT_QJL_SEED = core.DEFAULT_QJL_SEED
#: ``usize::MAX``: the conventional ``outlier_blocks`` value for PQO mode.
USIZE_MAX = (1 << 64) - 1
#: The hard-coded 32-entry sign pattern of ``precomputed/rotation.rs``.
LLAMA_SIGNS_32 = "+-++--+-++-+-+--+--++-+--+++--+-"
MIN_NORM = _F32(1e-10)  # candle clamp(1e-10_f64) on an f32 tensor
MAXNORM_RANGE = _F32(2.1573)
_GROW_MIN = 128


# --------------------------------------------------------------------------- config


class QuantNormMode(str, enum.Enum):
    """``QuantNormMode``: ``L2Norm`` (Beta codebooks) or ``MaxNorm`` (the default)."""

    L2_NORM = "l2norm"
    MAX_NORM = "maxnorm"

    @classmethod
    def from_str(cls, text: str) -> "QuantNormMode":
        for mode in cls:
            if mode.value == text:
                return mode
        raise ValueError(f"norm_mode: Unknown norm mode `{text}`. Options: maxnorm, l2norm")

    def __str__(self) -> str:
        return self.value


def _check_int(value, argument: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{argument}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """``CacheConfig { bits (3|4, total), head_dim, num_kv_heads, num_layers, norm_mode, outlier_blocks }``.

    ``outlier_blocks``: ``USIZE_MAX`` (or anything ≥ num_blocks) = PQO; 0 = TQ/PQ.
    head_dim must be a multiple of 32 (not necessarily a power of two).
    """

    bits: int
    head_dim: int
    num_kv_heads: int
    num_layers: int
    norm_mode: QuantNormMode = QuantNormMode.MAX_NORM
    outlier_blocks: int = USIZE_MAX

    def __post_init__(self):
        if self.bits not in (3, 4) or isinstance(self.bits, bool):
            raise ValueError(f"bits: unsupported bits={self.bits}, expected 3 or 4")
        hd = _check_int(self.head_dim, "head_dim", 1)
        if hd % QUANT_BLOCK_SIZE:
            raise ValueError(
                f"head_dim: head_dim ({hd}) must be divisible by QUANT_BLOCK_SIZE ({QUANT_BLOCK_SIZE})"
            )
        _check_int(self.num_kv_heads, "num_kv_heads", 1)
        _check_int(self.num_layers, "num_layers", 0)
        _check_int(self.outlier_blocks, "outlier_blocks", 0)
        mode = self.norm_mode
        if not isinstance(mode, QuantNormMode):
            mode = QuantNormMode.from_str(mode)
        object.__setattr__(self, "norm_mode", mode)

    def qjl_enabled(self) -> bool:
        return self.outlier_blocks == 0

    def num_blocks(self) -> int:
        return self.head_dim // QUANT_BLOCK_SIZE

    def packed_dim(self) -> int:
        return self.head_dim * self.bits // BITS_PER_BYTE


@dataclasses.dataclass(frozen=True)
class NumericOrder:
    """Summation orders of the steps whose order candle does not fix (see module docstring)."""

    reduction: str = "avx"
    matmul: str = "fma"

    def __post_init__(self):
        if self.reduction not in ("avx", "sequential"):
            raise ValueError(f"reduction: expected 'avx' or 'sequential', got {self.reduction!r}")
        if self.matmul not in ("fma", "sequential", "float64"):
            raise ValueError(f"matmul: expected 'fma', 'sequential' or 'float64', got {self.matmul!r}")


DEFAULT_ORDER = NumericOrder()


# --------------------------------------------------------------------------- candle arithmetic


def _candle_sum(x: np.ndarray, order: NumericOrder) -> np.ndarray:
    """``sum_keepdim`` over the last axis of a contiguous f32 tensor (candle ``vec_sum``)."""
    k = x.shape[-1]
    lead = x.shape[:-1]
    if order.reduction == "sequential":
        start = np.zeros(lead + (1,), _F32)
        return np.add.accumulate(np.concatenate((start, x), axis=-1), axis=-1, dtype=_F32)[..., -1]
    full = k - k % 32
    steps = x[..., :full].reshape(lead + (full // 32, 4, 8))
    acc = np.zeros(lead + (4, 8), _F32)
    for i in range(steps.shape[-3]):  # 32-element steps in order, 4 registers of 8 lanes
        acc = acc + steps[..., i, :, :]
    a = acc[..., 0, :] + acc[..., 1, :]
    b = acc[..., 2, :] + acc[..., 3, :]
    r = a + b
    t0 = r[..., :4] + r[..., 4:]
    total = (t0[..., 0] + t0[..., 1]) + (t0[..., 2] + t0[..., 3])
    for i in range(full, k):  # leftovers, sequential
        total = total + x[..., i]
    return total.astype(_F32)


def _matmul(a: np.ndarray, b: np.ndarray, order: NumericOrder) -> np.ndarray:
    """a (..., m, k) @ b (..., k, n) in float32 with the order ``order.matmul``."""
    a = np.asarray(a, _F32)
    b = np.asarray(b, _F32)
    if order.matmul == "float64":
        with np.errstate(invalid="ignore", over="ignore"):
            return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(_F32)
    k = a.shape[-1]
    shape = np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1]))
    acc = np.zeros(shape, _F32)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(k):  # loop over the contraction index, vectorised over everything else
            ai = a[..., :, i : i + 1]
            bi = b[..., i : i + 1, :]
            if order.matmul == "fma":
                acc = fma_f32(ai, bi, acc)
            else:
                acc = acc + ai * bi
    return acc


def _affine(x: np.ndarray, mul: float, add: float = 0.0) -> np.ndarray:
    """candle ``affine``: ``x * f32(mul) + f32(add)`` (what ``tensor * f64`` and ``/ f64`` become)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (x * _F32(mul) + _F32(add)).astype(_F32)


# --------------------------------------------------------------------------- precomputed


def _hadamard_32() -> np.ndarray:
    """``build_hadamard_matrix(32)``: Sylvester ±1 doubled to 32, then ·fl(1/√32)."""
    h = np.ones((1, 1), _F32)
    while h.shape[0] < QUANT_BLOCK_SIZE:
        h = np.block([[h, h], [h, -h]]).astype(_F32)
    return h * inverse_sqrt(QUANT_BLOCK_SIZE)


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=_F32)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=4)
def _maxnorm_tables():
    c3 = [-2.1573, -1.3336, -0.7434, -0.2428, 0.2428, 0.7434, 1.3336, 2.1573]
    b3 = [-1.7455, -1.0385, -0.4931, 0.0, 0.4931, 1.0385, 1.7455]
    c2 = [-2.1573, -0.7434, 0.7434, 2.1573]
    b2 = [-1.0385, 0.0, 1.0385]
    full = _F32(2.0) * MAXNORM_RANGE
    step = full / _F32(15)
    c4 = [-MAXNORM_RANGE + _F32(i) * step for i in range(16)]
    b4 = [-MAXNORM_RANGE + (_F32(i) + _F32(0.5)) * step for i in range(15)]
    return {
        2: (_frozen(c2), _frozen(b2)),
        3: (_frozen(c3), _frozen(b3)),
        4: (_frozen(c4), _frozen(b4)),
    }


class GpuPrecomputed:
    """``GpuPrecomputed::new(config)``: rotations, codebooks (f32), scale signs, Rademacher R."""

    def __init__(self, config: CacheConfig):
        if config.bits not in (3, 4):
            raise ValueError(f"bits: unsupported bits={config.bits}, expected 3 or 4")
        signs = _frozen([1.0 if c == "+" else -1.0 for c in LLAMA_SIGNS_32])
        self.signs = signs
        self.rotation_fwd = _frozen(_hadamard_32() * signs[None, :])
        self.rotation_inv = _frozen(self.rotation_fwd.T)
        polar_bits = config.bits - 1
        if config.norm_mode is QuantNormMode.L2_NORM:
            normal = core.get_codebook(polar_bits, QUANT_BLOCK_SIZE)
            outlier = core.get_codebook(polar_bits + 1, QUANT_BLOCK_SIZE)
            self.centroids = _frozen(normal.centroids.astype(_F32))
            self.boundaries = _frozen(normal.boundaries.astype(_F32))
            self.outlier_centroids = _frozen(outlier.centroids.astype(_F32))
            self.outlier_boundaries = _frozen(outlier.boundaries.astype(_F32))
        else:
            tables = _maxnorm_tables()
            self.centroids, self.boundaries = tables[polar_bits]
            self.outlier_centroids, self.outlier_boundaries = tables[min(polar_bits + 1, 4)]
        self.outlier_outer_centroid = float(np.max(self.outlier_centroids))
        nb = config.num_blocks()
        eff = min(config.outlier_blocks, nb)
        self.scale_sign_tensor = _frozen([[-1.0] * eff + [1.0] * (nb - eff)])
        if config.qjl_enabled():  # built for PqoCache too when outlier_blocks == 0 (B8)
            hd = config.head_dim
            self.qjl_rademacher = _frozen(core.rademacher_signs(hd, DEFAULT_QJL_SEED) * inverse_sqrt(hd))
        else:
            self.qjl_rademacher = None


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """``QuantConfig { head_dim, bits (storage), outlier_blocks, pre }``."""

    head_dim: int
    bits: int
    outlier_blocks: int
    pre: GpuPrecomputed

    def num_blocks(self) -> int:
        return self.head_dim // QUANT_BLOCK_SIZE

    def packed_dim(self) -> int:
        return self.head_dim * self.bits // BITS_PER_BYTE


# --------------------------------------------------------------------------- polar quantize


def _rows(x, head_dim: int, argument: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{argument}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != head_dim:
        raise ValueError(f"{argument}: expected shape (N, {head_dim}), got {arr.shape}")
    return arr.astype(_F32, copy=False)


def _normalize_and_rotate(blocked: np.ndarray, mode: QuantNormMode, pre: GpuPrecomputed, order: NumericOrder):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if mode is QuantNormMode.L2_NORM:
            norm = np.sqrt(_candle_sum(blocked * blocked, order))[:, None]
            norm = np.minimum(np.maximum(norm, MIN_NORM), _F32(np.inf))
            rotated = _matmul(blocked / norm, pre.rotation_fwd, order)
            return rotated, norm
        raw = _matmul(blocked, pre.rotation_fwd, order)
        amax = np.max(np.abs(raw), axis=1, keepdims=True)
        scale = np.maximum(_affine(amax, 1.0 / pre.outlier_outer_centroid), MIN_NORM)
        return raw / scale, scale


def polar_quantize(x, norm_mode: QuantNormMode, config: QuantConfig, order: NumericOrder = DEFAULT_ORDER):
    """``polar_quantize``: float32 [N, head_dim] -> (uint8 [N, packed_dim], float16 [N, num_blocks]).

    Rows are cut into [N·nb, 32] blocks (row = token·nb + block). The outlier codebook is
    used for the first N·min(ob, nb) rows of that list (bug B6), and every stored scale is
    multiplied by the scale-sign tensor (negative in PQO mode, so zero blocks store −0.0).
    """
    x = _rows(x, config.head_dim, "input")
    n, nb, pre = x.shape[0], config.num_blocks(), config.pre
    blocked = x.reshape(n * nb, QUANT_BLOCK_SIZE)
    rotated, scale = _normalize_and_rotate(blocked, QuantNormMode(norm_mode), pre, order)
    outlier_rows = n * min(config.outlier_blocks, nb)
    idx = np.empty(rotated.shape, np.uint8)
    rot64 = rotated.astype(np.float64)  # float32 values and boundaries, compared exactly
    idx[:outlier_rows] = nearest_index(rot64[:outlier_rows], pre.outlier_boundaries.astype(np.float64))
    idx[outlier_rows:] = nearest_index(rot64[outlier_rows:], pre.boundaries.astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        scales = (scale.reshape(n, nb) * pre.scale_sign_tensor).astype(_F16)
    packed = core.pack_indices(idx.reshape(-1), config.bits).reshape(n, config.packed_dim())
    return packed, scales


def polar_dequantize(indices, scales, config: QuantConfig) -> np.ndarray:
    """``polar_dequantize`` (CPU path): unpack, centroid lookup, butterfly inverse, ·|scale|.

    The CPU inverse multiplies by rotation_fwd[0][j]·√32 = ±0x3f7fffff (±0.99999994, not ±1;
    bug B11), applies the butterfly and ·fl(1/√32). Returns float32 [N, head_dim].
    """
    pre, nb, hd = config.pre, config.num_blocks(), config.head_dim
    ind = np.asarray(indices)
    if ind.dtype != np.uint8 or ind.ndim != 2 or ind.shape[1] != config.packed_dim():
        raise ValueError(f"indices: expected uint8 shape (N, {config.packed_dim()}), got {ind.dtype} {ind.shape}")
    n = ind.shape[0]
    sc = np.asarray(scales)
    if sc.shape != (n, nb):
        raise ValueError(f"scales: expected shape ({n}, {nb}), got {sc.shape}")
    idx = core.unpack_indices(ind.reshape(-1), config.bits, n * hd).reshape(n * nb, QUANT_BLOCK_SIZE)
    scales_blocked = sc.astype(_F16).astype(_F32).reshape(n * nb, 1)
    if config.outlier_blocks >= nb:
        table = pre.outlier_centroids
        _check_table(idx, table, "outlier")
        dequant = table[idx]
    elif config.outlier_blocks == 0:
        _check_table(idx, pre.centroids, "normal")
        dequant = pre.centroids[idx]
    else:  # mixed: a negative scale selects the outlier codebook; normal indices clamped
        _check_table(idx, pre.outlier_centroids, "outlier")
        is_out = (scales_blocked < 0).astype(_F32)
        normal = pre.centroids[np.minimum(idx, len(pre.centroids) - 1)]
        dequant = is_out * pre.outlier_centroids[idx] + (_F32(1.0) - is_out) * normal
    sign_eff = pre.rotation_fwd[0] * np.sqrt(_F32(QUANT_BLOCK_SIZE))
    with np.errstate(over="ignore", invalid="ignore"):
        rec = fwht((dequant * sign_eff).astype(_F32))
        return (rec * np.abs(scales_blocked)).reshape(n, hd).astype(_F32)


def _check_table(idx: np.ndarray, table: np.ndarray, name: str) -> None:
    if idx.size and int(idx.max()) >= len(table):
        raise ValueError(
            f"indices: index {int(idx.max())} out of range for the {name} codebook of {len(table)} entries"
        )


# --------------------------------------------------------------------------- storage


@dataclasses.dataclass(frozen=True)
class StorageMetadata:
    num_kv_heads: int
    head_dim: int
    bits: int

    def packed_dim(self) -> int:
        return self.head_dim * self.bits // BITS_PER_BYTE

    def num_blocks(self) -> int:
        return self.head_dim // QUANT_BLOCK_SIZE


def _grown(needed: int) -> int:
    return needed + max(needed // 4, _GROW_MIN)


def _grow(old, heads: int, new_cap: int, tail: tuple, dtype, used: int):
    new = np.zeros((heads, new_cap) + tail, dtype)
    if old is not None and used:
        new[:, :used] = old[:, :used]
    return new


class LayerStorage:
    """One layer's buffers: k/v indices [H, cap, packed_dim] u8 and scales [H, cap, nb] f16."""

    def __init__(self):
        self.buf_seq_len = 0
        self.k_indices = self.v_indices = self.k_scales = self.v_scales = None

    def seq_len(self) -> int:
        return self.buf_seq_len

    def capacity(self) -> int:
        return 0 if self.k_indices is None else self.k_indices.shape[1]

    def ensure_capacity(self, needed: int, meta: StorageMetadata) -> None:
        """Grow to ``needed + max(needed/4, 128)`` when capacity < needed, copying old rows."""
        if self.capacity() >= needed:
            return
        cap, h, used = _grown(needed), meta.num_kv_heads, self.buf_seq_len
        self.k_indices = _grow(self.k_indices, h, cap, (meta.packed_dim(),), np.uint8, used)
        self.v_indices = _grow(self.v_indices, h, cap, (meta.packed_dim(),), np.uint8, used)
        self.k_scales = _grow(self.k_scales, h, cap, (meta.num_blocks(),), _F16, used)
        self.v_scales = _grow(self.v_scales, h, cap, (meta.num_blocks(),), _F16, used)

    def append(self, offset: int, k_idx, k_sc, v_idx, v_sc, new_seq_len: int) -> None:
        end = offset + new_seq_len
        self.k_indices[:, offset:end] = k_idx
        self.v_indices[:, offset:end] = v_idx
        self.k_scales[:, offset:end] = k_sc
        self.v_scales[:, offset:end] = v_sc
        self.buf_seq_len = end

    def memory_usage(self, meta: StorageMetadata) -> int:
        """2·H·seq·packed_dim + 2·H·seq·nb·2 (used length, not capacity); 0 when empty."""
        seq = self.buf_seq_len
        if seq == 0:
            return 0
        h = meta.num_kv_heads
        return 2 * h * seq * meta.packed_dim() + 2 * h * seq * meta.num_blocks() * 2


# --------------------------------------------------------------------------- caches


@dataclasses.dataclass
class DequantResult:
    """``DequantResult { k, v, logit_bias }``: k, v [1, H, seq, head_dim]; bias [1, A, q_len, kv_len]."""

    k: np.ndarray
    v: np.ndarray
    logit_bias: np.ndarray | None


@dataclasses.dataclass
class DecodeOutput:
    """``DecodeOutput``: ``kind == "dequantized"`` (``result`` set) on CPU. The CUDA-only
    ``Fused`` variant of PqoCache is not modelled."""

    kind: str
    result: DequantResult


_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class _CacheBase:
    def __init__(self, config: CacheConfig, *, order: NumericOrder = DEFAULT_ORDER, tight_tq_packing: bool = False):
        if not isinstance(config, CacheConfig):
            raise ValueError(f"config: expected a CacheConfig, got {type(config).__name__}")
        if not isinstance(order, NumericOrder):
            raise ValueError(f"order: expected a NumericOrder, got {type(order).__name__}")
        self.config = config
        self.order = order
        # 0.3.1 packs every index in `bits`-bit fields (B8). Later upstream commits add
        # `effective_storage_bits` (bits − 1 when outlier_blocks == 0): tight_tq_packing=True.
        storage_bits = config.bits - 1 if (tight_tq_packing and config.outlier_blocks == 0) else config.bits
        self.metadata = StorageMetadata(config.num_kv_heads, config.head_dim, storage_bits)
        self.pre = GpuPrecomputed(config)
        self.qc = QuantConfig(config.head_dim, storage_bits, config.outlier_blocks, self.pre)
        self.layers = [self._new_layer() for _ in range(config.num_layers)]

    def _new_layer(self):
        return LayerStorage()

    def _storage(self, layer_slot) -> LayerStorage:
        return layer_slot

    def _slot(self, layer):
        n = len(self.layers)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < n:
            raise ValueError(f"layer: layer index {layer} out of range (cache has {n} layers)")
        return self.layers[int(layer)]

    def _check_kv(self, k, v):
        h, hd = self.config.num_kv_heads, self.config.head_dim
        out = []
        for name, t in (("k", k), ("v", v)):
            arr = np.asarray(t)
            if arr.dtype not in _DTYPES:
                raise ValueError(f"{name}: expected dtype float32 or float16, got {arr.dtype}")
            if arr.ndim != 4 or arr.shape[0] != 1 or arr.shape[1] != h or arr.shape[3] != hd:
                raise ValueError(f"{name}: expected shape (1, {h}, seq, {hd}), got {arr.shape}")
            out.append(arr)
        if out[0].shape != out[1].shape:
            raise ValueError(f"v: expected the shape of k {out[0].shape}, got {out[1].shape}")
        return out

    def _check_q(self, q):
        arr = np.asarray(q)
        h, hd = self.config.num_kv_heads, self.config.head_dim
        if arr.dtype not in _DTYPES:
            raise ValueError(f"q: expected dtype float32 or float16, got {arr.dtype}")
        if arr.ndim != 4 or arr.shape[0] != 1 or arr.shape[3] != hd or arr.shape[1] % h:
            raise ValueError(f"q: expected shape (1, n_attn_heads (a multiple of {h}), q_len, {hd}), got {arr.shape}")
        return arr

    def _quantize_and_store(self, slot, k: np.ndarray, v: np.ndarray):
        storage = self._storage(slot)
        h, hd = self.config.num_kv_heads, self.config.head_dim
        new = k.shape[2]
        old = storage.seq_len()
        storage.ensure_capacity(old + new, self.metadata)
        k_flat = k[0].astype(_F32).reshape(h * new, hd)
        v_flat = v[0].astype(_F32).reshape(h * new, hd)
        mode = self.config.norm_mode
        k_idx, k_sc = polar_quantize(k_flat, mode, self.qc, self.order)
        v_idx, v_sc = polar_quantize(v_flat, mode, self.qc, self.order)
        pd, nb = self.metadata.packed_dim(), self.metadata.num_blocks()
        storage.append(
            old,
            k_idx.reshape(h, new, pd),
            k_sc.reshape(h, new, nb),
            v_idx.reshape(h, new, pd),
            v_sc.reshape(h, new, nb),
            new,
        )
        return old, k_flat, k_idx, k_sc

    def _dequantize_full(self, slot, dtype) -> tuple[np.ndarray, np.ndarray]:
        storage = self._storage(slot)
        total, h, hd = storage.seq_len(), self.config.num_kv_heads, self.config.head_dim
        pd, nb = self.metadata.packed_dim(), self.metadata.num_blocks()
        out = []
        for ind, sc in ((storage.k_indices, storage.k_scales), (storage.v_indices, storage.v_scales)):
            deq = polar_dequantize(ind[:, :total].reshape(h * total, pd), sc[:, :total].reshape(h * total, nb), self.qc)
            out.append(deq.reshape(1, h, total, hd).astype(dtype))
        return out[0], out[1]

    # public trait methods
    def seq_len(self, layer: int) -> int:
        """Used length of a layer; 0 for an out-of-range layer (like the crate)."""
        valid = isinstance(layer, (int, np.integer)) and not isinstance(layer, bool)
        if not valid or not 0 <= int(layer) < len(self.layers):
            return 0
        return self._storage(self.layers[int(layer)]).seq_len()

    def reset(self) -> None:
        self.layers = [self._new_layer() for _ in range(self.config.num_layers)]

    def stored(self, layer: int) -> dict:
        """The raw buffers of a layer trimmed to the used length (for inspection and tests)."""
        st = self._storage(self._slot(layer))
        n = st.seq_len()
        if n == 0:
            return {}
        return {
            "k_indices": st.k_indices[:, :n].copy(),
            "k_scales": st.k_scales[:, :n].copy(),
            "v_indices": st.v_indices[:, :n].copy(),
            "v_scales": st.v_scales[:, :n].copy(),
        }


class PqoCache(_CacheBase):
    """``PqoCache``: PolarQuant (outlier) cache, no QJL. PQO when outlier_blocks ≥ num_blocks."""

    def prefill(self, layer: int, k, v, q) -> DequantResult:
        """Quantize and append; the first chunk returns the original k, v (unquantised)."""
        slot = self._slot(layer)
        k, v = self._check_kv(k, v)
        old, *_ = self._quantize_and_store(slot, k, v)
        if old == 0:
            return DequantResult(k.copy(), v.copy(), None)
        fk, fv = self._dequantize_full(slot, k.dtype)
        return DequantResult(fk, fv, None)

    def decode(self, layer: int, k, v, q, attend_config=None) -> DecodeOutput:
        """Quantize and append, then return the full dequantised cache (CPU path)."""
        slot = self._slot(layer)
        k, v = self._check_kv(k, v)
        self._check_q(q)
        self._quantize_and_store(slot, k, v)
        fk, fv = self._dequantize_full(slot, k.dtype)
        return DecodeOutput("dequantized", DequantResult(fk, fv, None))

    def memory_usage(self) -> int:
        return sum(self._storage(s).memory_usage(self.metadata) for s in self.layers)


class _TqLayer:
    def __init__(self):
        self.storage = LayerStorage()
        self.qjl_signs = None  # [H, cap, head_dim/8] u8
        self.qjl_norms = None  # [H, cap] f16


class TqCache(_CacheBase):
    """``TqCache``: (bits−1)-bit polar codebook + 1-bit QJL of each key residual.

    ``prefill`` returns the logit bias always, and on the first chunk returns the **raw**
    k, v with it, so the residual is counted twice (bug B7). ``memory_usage`` counts the QJL
    buffers at capacity (bug B8). The bias is in raw dot-product units, not multiplied by
    softmax_scale (bug B9).
    """

    def __init__(self, config: CacheConfig, **kwargs):
        super().__init__(config, **kwargs)
        if config.outlier_blocks != 0:
            # The crate accepts this configuration but then has no Rademacher matrix.
            raise ValueError(
                f"config.outlier_blocks: TqCache needs 0 (QJL enabled), got {config.outlier_blocks} "
                "(the crate accepts it and fails at the first prefill: QJL Rademacher matrix not precomputed)"
            )

    def _new_layer(self):
        return _TqLayer()

    def _storage(self, layer_slot) -> LayerStorage:
        return layer_slot.storage

    def _ensure_qjl_capacity(self, slot: _TqLayer, needed: int) -> None:
        cap = 0 if slot.qjl_signs is None else slot.qjl_signs.shape[1]
        if cap >= needed:
            return
        h, new_cap, used = self.config.num_kv_heads, _grown(needed), slot.storage.seq_len()
        slot.qjl_signs = _grow(slot.qjl_signs, h, new_cap, (self.config.head_dim // BITS_PER_BYTE,), np.uint8, used)
        slot.qjl_norms = _grow(slot.qjl_norms, h, new_cap, (), _F16, used)

    def _quantize_and_store(self, slot: _TqLayer, k, v):
        total = slot.storage.seq_len() + k.shape[2]
        slot.storage.ensure_capacity(total, self.metadata)
        self._ensure_qjl_capacity(slot, total)
        old, k_flat, k_idx, k_sc = super()._quantize_and_store(slot, k, v)
        h, hd, new = self.config.num_kv_heads, self.config.head_dim, k.shape[2]
        k_hat = polar_dequantize(k_idx, k_sc, self.qc)
        with np.errstate(invalid="ignore", over="ignore"):
            residual = k_flat - k_hat
            norms = np.sqrt(_candle_sum(residual * residual, self.order)).astype(_F16)
        signs = core.compute_qjl_signs(residual, hd, DEFAULT_QJL_SEED)
        slot.qjl_signs[:, old : old + new] = signs.reshape(h, new, hd // BITS_PER_BYTE)
        slot.qjl_norms[:, old : old + new] = norms.reshape(h, new)
        return old, k_flat, k_idx, k_sc

    def compute_logit_bias(self, layer: int, q) -> np.ndarray:
        """bias[a, t, t′] = (r_q · S_hᵀ)[t, t′] · (γ_t′ · (f32(√(π/2)) / √head_dim)), in q's dtype.

        r_q = q_a · Rᵀ with R[j][c] = sign(12345, j, c)/√head_dim (rounded products, unlike
        the core projection), and kv head h = a / (n_attn / n_kv).
        """
        slot = self._slot(layer)
        q = self._check_q(q)
        return self._logit_bias(slot, q)

    def _logit_bias(self, slot: _TqLayer, q: np.ndarray) -> np.ndarray:
        hd, h = self.config.head_dim, self.config.num_kv_heads
        total = slot.storage.seq_len()
        n_attn = q.shape[1]
        group = n_attn // h
        sf = _F32(np.sqrt(np.pi / 2.0)) / np.sqrt(_F32(hd))
        bits = unpack_bits(slot.qjl_signs[:, :total], 1, hd)  # [H, kv, hd]
        s = np.where(bits == 1, _F32(1.0), _F32(-1.0))
        c = _affine(slot.qjl_norms[:, :total].astype(_F32), float(sf))  # [H, kv]
        heads = np.arange(n_attn) // group
        rq = _matmul(q[0].astype(_F32), self.pre.qjl_rademacher.T, self.order)  # [A, q_len, hd]
        raw = _matmul(rq, np.swapaxes(s[heads], 1, 2), self.order)  # [A, q_len, kv]
        with np.errstate(invalid="ignore", over="ignore"):
            corr = raw * c[heads][:, None, :]
        return corr[None].astype(q.dtype)

    def prefill(self, layer: int, k, v, q) -> DequantResult:
        slot = self._slot(layer)
        k, v = self._check_kv(k, v)
        q = self._check_q(q)
        old, *_ = self._quantize_and_store(slot, k, v)
        if old == 0:
            fk, fv = k.copy(), v.copy()
        else:
            fk, fv = self._dequantize_full(slot, k.dtype)
        return DequantResult(fk, fv, self._logit_bias(slot, q))

    def decode(self, layer: int, k, v, q, attend_config=None) -> DecodeOutput:
        slot = self._slot(layer)
        k, v = self._check_kv(k, v)
        q = self._check_q(q)
        self._quantize_and_store(slot, k, v)
        fk, fv = self._dequantize_full(slot, k.dtype)
        return DecodeOutput("dequantized", DequantResult(fk, fv, self._logit_bias(slot, q)))

    def memory_usage(self) -> int:
        """Storage at used length + QJL signs and norms at **allocated capacity** (B8)."""
        total = 0
        for slot in self.layers:
            total += slot.storage.memory_usage(self.metadata)
            if slot.qjl_signs is not None:
                total += slot.qjl_signs.size + slot.qjl_norms.size * 2
        return total


# --------------------------------------------------------------------------- CUDA schedule model

FUSED_NUM_WARPS = 8
FUSED_PARTITION = 512


def fused_decode_schedule(head_dim: int, kv_len: int) -> dict:
    """Model of the token loop of the CUDA ``tq_fused_attention_decode`` kernel (bug B5).

    One CTA of 8 warps per (attention head, 512-token partition); warp w serves qblock
    ``w % nq`` of token group ``g = w // nq`` (nq = head_dim/32) and loops over tokens
    ``start + g, start + g + G, …`` with G = 8 // nq token groups, calling ``__syncthreads()``
    inside the loop. Returns, per partition, each warp's trip count (``None`` = the loop
    never advances), and flags: ``divergent_barriers`` (warps of one CTA reach the barrier a
    different number of times: undefined behaviour), ``stray_warps`` (g ≥ G: they index the
    shared arrays out of bounds), ``zero_step`` (G = 0 for head_dim > 256).
    """
    head_dim = _check_int(head_dim, "head_dim", QUANT_BLOCK_SIZE)
    kv_len = _check_int(kv_len, "kv_len", 0)
    nq = head_dim // QUANT_BLOCK_SIZE
    groups = FUSED_NUM_WARPS // nq
    trips = []
    for start in range(0, kv_len, FUSED_PARTITION):
        end = min(start + FUSED_PARTITION, kv_len)
        row = []
        for w in range(FUSED_NUM_WARPS):
            g = w // nq
            first = start + g
            if groups == 0:
                row.append(None if first < end else 0)
            else:
                row.append(len(range(first, end, groups)))
        trips.append(row)
    return {
        "num_qblocks": nq,
        "num_token_groups": groups,
        "trips": trips,
        "divergent_barriers": any(len(set(r)) > 1 for r in trips),
        "stray_warps": [w for w in range(FUSED_NUM_WARPS) if groups and w // nq >= groups],
        "zero_step": groups == 0,
    }


# --------------------------------------------------------------------------- agreement


def measure_order_agreement(
    config: CacheConfig,
    rows: np.ndarray,
    a: NumericOrder = DEFAULT_ORDER,
    b: NumericOrder = NumericOrder(matmul="float64"),
) -> dict:
    """Quantize ``rows`` [N, head_dim] under two orders; report how much the stored data differ.

    Returns counts: ``indices`` (coordinates whose index differs / total), ``scales`` (stored
    f16 scales that differ / total) and ``max_scale_ulps`` (largest f16 ulp distance).
    """
    pre = GpuPrecomputed(config)
    qc = QuantConfig(config.head_dim, config.bits, config.outlier_blocks, pre)
    pa, sa = polar_quantize(rows, config.norm_mode, qc, a)
    pb, sb = polar_quantize(rows, config.norm_mode, qc, b)
    n = rows.shape[0] * config.head_dim
    ia = core.unpack_indices(pa.reshape(-1), config.bits, n)
    ib = core.unpack_indices(pb.reshape(-1), config.bits, n)
    ua = sa.view(np.uint16).astype(np.int64)
    ub = sb.view(np.uint16).astype(np.int64)
    return {
        "indices": (int(np.sum(ia != ib)), n),
        "scales": (int(np.sum(ua != ub)), sa.size),
        "max_scale_ulps": int(np.max(np.abs((ua & 0x7FFF) - (ub & 0x7FFF)))) if sa.size else 0,
    }
