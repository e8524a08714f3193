"""Bit-exact profile of llama.cpp forks' TurboQuant KV block formats (CPU C reference).

Kinds:

* ``turbo2_0``, ``turbo3_0``, ``turbo4_0`` — TheTom/llama-cpp-turboquant. ``version="v3"``
  (after PR #197, the current format; turbo4 = 66 B) or ``"v1"`` (commit 69d8e4be and its
  forks; turbo4 = 68 B with a dead ``rnorm`` field). 128-value blocks, randomized WHT with
  two sign vectors, Gaussian Lloyd–Max tables, "norm correction".
* ``tq3_0`` — Aaryan-Kapoor/llama.cpp e23fd448: 32-value blocks of 14 B, one sign vector,
  N(0,1) centroids on an RMS-normalised block, norm correction in the original domain.
  ``version`` is ignored for tq3_0.

Byte layouts, tables and the CPU/GPU differences are in docs/runtimes/llamacpp.md. The
profile composes tqref reference parts: :func:`~tqref.reference.rotation.fwht` (butterfly +
``inverse_sqrt``), :func:`~tqref.reference.packing.pack_bits` (every field here is an
LSB-first bit stream) and :func:`~tqref.reference.codebook.nearest_index`.

Threshold comparisons. ``nearest_index`` counts thresholds strictly below a value (ties to
the lower bin, NaN -> 0), which is tq3_0's rule exactly (float32 thresholds promoted to
float64 are exact, and so is the comparison). TheTom's rule is the mirror image: the index is
the number of thresholds ``t <= r`` (ties to the upper bin, NaN -> top). With ``T`` sorted,
``#{t <= r} = (K − 1) − #{t > r} = (K − 1) − #{−t < −r}``, so the profile calls
``nearest_index(−r, −T[::-1])`` and subtracts from K − 1; NaN gives 0 there, hence K − 1.

Sums are sequential float32 left folds from +0.0 (the C loops); the CUDA kernels reduce in a
warp tree instead (``backend="cuda"`` models that order, see :func:`quantize_row`).
"""

from __future__ import annotations

import numpy as np

from tqref.reference.codebook import nearest_index
from tqref.reference.packing import pack_bits, unpack_bits
from tqref.reference.rotation import fwht

from ._fp import fma_f32

__all__ = [
    "BLOCK_BYTES",
    "GROUP_SIZE",
    "KINDS",
    "TQ3_BLOCK_SIZE",
    "VERSIONS",
    "block_bytes",
    "centroids",
    "dequantize_row",
    "quantize_row",
    "rotate_forward",
    "rotate_inverse",
    "row_bytes",
    "thresholds",
    "tq3_rotate_forward",
    "tq3_rotate_inverse",
]

_F32 = np.float32
_F16 = np.float16

KINDS = ("turbo2_0", "turbo3_0", "turbo4_0", "tq3_0")
VERSIONS = ("v3", "v1")
BACKENDS = ("cpu", "cuda", "cpu_fma")
GROUP_SIZE = 128  # TheTom: block = rotation group = 128 values
TQ3_BLOCK_SIZE = 32

#: Block sizes in bytes, per (kind, version).
BLOCK_BYTES = {
    ("turbo2_0", "v1"): 34,
    ("turbo2_0", "v3"): 34,
    ("turbo3_0", "v1"): 50,
    ("turbo3_0", "v3"): 50,
    ("turbo4_0", "v1"): 68,
    ("turbo4_0", "v3"): 66,
    ("tq3_0", "v1"): 14,
    ("tq3_0", "v3"): 14,
}

# WHT sign vectors of TheTom's forks (numpy default_rng(42).choice([-1, 1], 128) twice).
_S1 = (
    "-++--+-+--+++++++-+-+--+++-++----++-++-+-++--+-++++-----+-++++-+--+---+---+---+++--+++--++-++-+--++"
    "-+-+-++++-+-++-++-----++-++-+"
)
_S2 = (
    "++++-++-+---+---++--+-+-+--+-+++++---+------+++-+-+++--+------+++-+----+-+-+--++-+-++-+----+--+-+-"
    "+++--+-+-++--+-+-++-+-+-----+-"
)
TURBO_SIGNS1 = np.array([1.0 if c == "+" else -1.0 for c in _S1], dtype=_F32)
TURBO_SIGNS2 = np.array([1.0 if c == "+" else -1.0 for c in _S2], dtype=_F32)
TURBO_SIGNS1.setflags(write=False)
TURBO_SIGNS2.setflags(write=False)


def _tq3_signs() -> np.ndarray:
    """σ[i] = −1 iff bit 31 of the uint32 product i·0x9E3779B9 is set."""
    prod = (np.arange(TQ3_BLOCK_SIZE, dtype=np.uint64) * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
    signs = np.where((prod >> np.uint64(31)) & np.uint64(1), _F32(-1.0), _F32(1.0)).astype(_F32)
    signs.setflags(write=False)
    return signs


TQ3_SIGNS = _tq3_signs()


def _f32_table(values) -> np.ndarray:
    """C float literals: each decimal rounded to float32 once (never recomputed midpoints)."""
    arr = np.array([_F32(v) for v in values], dtype=_F32)
    arr.setflags(write=False)
    return arr


def _mirror(neg_half):
    """Full symmetric table from its negative half (centroids) or half + 0.0 (thresholds)."""
    return list(neg_half) + [-v for v in reversed(neg_half)]


_TABLES = {
    # turbo2: identical in v1 and v3
    ("turbo2_0", "v1"): (
        _f32_table([-0.133462, -0.039994, 0.039994, 0.133462]),
        _f32_table([-0.086728, 0.0, 0.086728]),
    ),
    ("turbo3_0", "v1"): (
        _f32_table(_mirror([-0.190685, -0.117832, -0.065717, -0.021460])),
        _f32_table([-0.154259, -0.091775, -0.043589, 0.0, 0.043589, 0.091775, 0.154259]),
    ),
    ("turbo3_0", "v3"): (
        _f32_table(_mirror([-0.190207, -0.118786, -0.066822, -0.021663])),
        _f32_table([-0.154496, -0.092804, -0.044243, 0.0, 0.044243, 0.092804, 0.154496]),
    ),
    ("turbo4_0", "v1"): (
        _f32_table(_mirror([-0.173926, -0.117195, -0.089527, -0.068756, -0.051262, -0.035597, -0.020989, -0.006938])),
        _f32_table(
            [-0.145560, -0.103361, -0.079142, -0.060009, -0.043430, -0.028293, -0.013963, 0.0]
            + [0.013963, 0.028293, 0.043430, 0.060009, 0.079142, 0.103361, 0.145560]
        ),
    ),
    ("turbo4_0", "v3"): (
        _f32_table(_mirror([-0.241529, -0.182877, -0.143016, -0.111036, -0.083292, -0.058050, -0.034299, -0.011349])),
        _f32_table(
            [-0.212203, -0.162947, -0.127026, -0.097164, -0.070671, -0.046174, -0.022824, 0.0]
            + [0.022824, 0.046174, 0.070671, 0.097164, 0.127026, 0.162947, 0.212203]
        ),
    ),
    ("tq3_0", "v1"): (
        _f32_table([-2.1519, -1.3439, -0.7560, -0.2451, 0.2451, 0.7560, 1.3439, 2.1519]),
        _f32_table([-1.7479, -1.0500, -0.5005, 0.0, 0.5005, 1.0500, 1.7479]),
    ),
}
_TABLES[("turbo2_0", "v3")] = _TABLES[("turbo2_0", "v1")]
_TABLES[("tq3_0", "v3")] = _TABLES[("tq3_0", "v1")]
#: v1 CUDA set_rows uses two different turbo4 threshold literals (±0.145561, ±0.013964).
_TURBO4_V1_CUDA_THRESHOLDS = _f32_table(
    [-0.145561, -0.103361, -0.079142, -0.060009, -0.043430, -0.028293, -0.013964, 0.0]
    + [0.013964, 0.028293, 0.043430, 0.060009, 0.079142, 0.103361, 0.145561]
)


# --------------------------------------------------------------------------- validation


def _check_kind(kind, version, backend="cpu") -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return kind, version


def block_bytes(kind: str, version: str = "v3") -> int:
    """Bytes of one block: 34 / 50 / 66 (v3) or 68 (v1) / 14 (tq3_0)."""
    return BLOCK_BYTES[_check_kind(kind, version)]


def _values_per_block(kind: str) -> int:
    return TQ3_BLOCK_SIZE if kind == "tq3_0" else GROUP_SIZE


def row_bytes(row_length: int, kind: str, version: str = "v3") -> int:
    """Bytes of a quantized row of ``row_length`` values."""
    _check_kind(kind, version)
    _check_row_length(row_length, kind, "row_length")
    return row_length // _values_per_block(kind) * BLOCK_BYTES[(kind, version)]


def centroids(kind: str, version: str = "v3") -> np.ndarray:
    """The kind's centroid table (float32, read-only)."""
    return _TABLES[_check_kind(kind, version)][0]


def thresholds(kind: str, version: str = "v3", backend: str = "cpu") -> np.ndarray:
    """The kind's threshold table (float32, read-only); v1 turbo4 differs on CUDA."""
    _check_kind(kind, version, backend)
    if backend == "cuda" and (kind, version) == ("turbo4_0", "v1"):
        return _TURBO4_V1_CUDA_THRESHOLDS
    return _TABLES[(kind, version)][1]


def _check_row_length(n: int, kind: str, argument: str, what: str | None = None) -> None:
    per = _values_per_block(kind)
    if n <= 0 or n % per:
        raise ValueError(
            f"{argument}: expected a row length that is a positive multiple of {per} for {what or kind}, got {n}"
        )


def _as_rows(x, kind: str, argument: str = "x", what: str | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{argument}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{argument}: expected an array of shape (..., n), got a scalar")
    _check_row_length(arr.shape[-1], kind, f"{argument} row length", what)
    return arr.astype(_F32, copy=False)


# --------------------------------------------------------------------------- sums


def _seq_sum(terms: np.ndarray) -> np.ndarray:
    """The C loop ``float s = 0.0f; for (...) s += t;`` over the last axis."""
    start = np.zeros(terms.shape[:-1] + (1,), _F32)
    return np.add.accumulate(np.concatenate((start, terms), axis=-1), axis=-1, dtype=_F32)[..., -1]


def _fma_sum_squares(v: np.ndarray) -> np.ndarray:
    """``s = fma(v, v, s)`` from 0.0f: the C loop compiled with FMA contraction (Apple clang on
    arm64 contracts ``s += v*v`` by default)."""
    acc = np.zeros(v.shape[:-1], _F32)
    for i in range(v.shape[-1]):  # sequential over the group, vectorised over groups
        acc = fma_f32(v[..., i], v[..., i], acc)
    return acc


def _sum_squares(v: np.ndarray, backend: str) -> np.ndarray:
    """Σ v² over the last axis in the backend's order (all float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if backend == "cpu_fma":
            return _fma_sum_squares(v)
        if backend == "cuda":
            return _warp_tree_sum(v * v)
        return _seq_sum(v * v)


def _warp_tree_sum(terms: np.ndarray) -> np.ndarray:
    """CUDA set_rows: per 32-lane warp an xor-shuffle tree (offsets 16..1), then the warp
    partials added in order from 0.0f by one thread (a model: fast-math not included)."""
    n = terms.shape[-1]
    w = terms.reshape(terms.shape[:-1] + (n // 32, 32))
    width = 32
    while width > 1:
        width //= 2
        w = w[..., :width] + w[..., width : 2 * width]
    return _seq_sum(w[..., 0])


# --------------------------------------------------------------------------- rotations


def _grouped(x: np.ndarray, size: int) -> np.ndarray:
    return x.reshape(x.shape[:-1] + (x.shape[-1] // size, size))


def rotate_forward(x) -> np.ndarray:
    """TheTom's forward randomized WHT per 128-group: y = D(s2)·H·D(s1)·x/√128.

    What the graph applies to Q (``ggml_turbo_wht(q, dir=0)``) and what quantization applies
    to the normalised group. Float32 (..., n), n a multiple of 128.
    """
    arr = _as_rows(x, "turbo3_0", what="the 128-point turbo rotation")
    g = _grouped(arr, GROUP_SIZE)
    with np.errstate(invalid="ignore", over="ignore"):
        return (fwht(g * TURBO_SIGNS1) * TURBO_SIGNS2).reshape(arr.shape)


def rotate_inverse(x) -> np.ndarray:
    """Inverse of :func:`rotate_forward` per 128-group (s2, butterfly, ·inv_sqrt·s1): what the
    graph applies to the attention output when V is a turbo type."""
    arr = _as_rows(x, "turbo3_0", what="the 128-point turbo rotation")
    g = _grouped(arr, GROUP_SIZE)
    with np.errstate(invalid="ignore", over="ignore"):
        return (fwht(g * TURBO_SIGNS2) * TURBO_SIGNS1).reshape(arr.shape)


def tq3_rotate_forward(x) -> np.ndarray:
    """tq3_0's 32-point randomized Hadamard: ·σ, butterfly, ·(1/√32)."""
    arr = _as_rows(x, "tq3_0", what="the 32-point tq3_0 rotation")
    with np.errstate(invalid="ignore", over="ignore"):
        return fwht(_grouped(arr, TQ3_BLOCK_SIZE) * TQ3_SIGNS).reshape(arr.shape)


def tq3_rotate_inverse(x) -> np.ndarray:
    """Inverse of :func:`tq3_rotate_forward`: butterfly, then ·((1/√32)·σ)."""
    arr = _as_rows(x, "tq3_0", what="the 32-point tq3_0 rotation")
    with np.errstate(invalid="ignore", over="ignore"):
        return (fwht(_grouped(arr, TQ3_BLOCK_SIZE)) * TQ3_SIGNS).reshape(arr.shape)


# --------------------------------------------------------------------------- index rules


def _index_ties_up(r: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """#{t : t <= r} (TheTom's ``r < T[k]`` chain; NaN -> top). See the module docstring."""
    neg = -thr[::-1].astype(np.float64)
    return (len(thr) - nearest_index(-r.astype(np.float64), neg)).astype(np.uint8)


def _index_ties_down(r: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """#{b : r > b} (tq3_0's rule; NaN -> 0)."""
    return nearest_index(r.astype(np.float64), thr.astype(np.float64)).astype(np.uint8)


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        half = np.asarray(values, dtype=_F32).astype(_F16)
    return half.astype("<f2").view(np.uint8).reshape(half.shape + (2,))


# --------------------------------------------------------------------------- TheTom turbo


def _turbo_indices(groups: np.ndarray, kind: str, version: str, backend: str):
    """Normalise, rotate and index each 128-group. Returns (indices uint8, norm float32)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        norm = np.sqrt(_sum_squares(groups, backend))
        ok = norm > _F32(1e-10)
        inv = np.where(ok, _F32(1.0) / norm, _F32(0.0)).astype(_F32)
        if kind == "turbo4_0":  # the zero case is a memset: NaN/inf inputs become zeros
            u = np.where(ok[..., None], groups * inv[..., None], _F32(0.0)).astype(_F32)
        else:
            u = groups * inv[..., None]
        r = fwht(u * TURBO_SIGNS1) * TURBO_SIGNS2
    idx = _index_ties_up(r, thresholds(kind, version, backend))
    return idx, norm


def _turbo_quantize(x: np.ndarray, kind: str, version: str, backend: str) -> np.ndarray:
    groups = _grouped(x, GROUP_SIZE)
    idx, norm = _turbo_indices(groups, kind, version, backend)
    c = centroids(kind, version)[idx]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        recon = np.sqrt(_sum_squares(c, backend))
        stored = np.where(recon > _F32(1e-10), norm / recon, norm).astype(_F32)
    fields = [_f16_bytes(stored)]
    if kind == "turbo4_0" and version == "v1":
        fields.append(np.zeros(stored.shape + (2,), np.uint8))  # rnorm: reserved, always 0
    if kind == "turbo2_0":
        fields.append(pack_bits(idx, 2))
    elif kind == "turbo3_0":
        fields += [pack_bits(idx & 3, 2), pack_bits(idx >> 2, 1)]
    else:
        fields.append(pack_bits(idx, 4))
    blocks = np.concatenate(fields, axis=-1)
    return blocks.reshape(x.shape[:-1] + (-1,))


def _turbo_unpack(blocks: np.ndarray, kind: str, version: str):
    norm = blocks[..., 0:2].copy().view("<f2")[..., 0].astype(_F32)
    if kind == "turbo2_0":
        idx = unpack_bits(blocks[..., 2:34], 2, GROUP_SIZE)
    elif kind == "turbo3_0":
        idx = unpack_bits(blocks[..., 2:34], 2, GROUP_SIZE) | (unpack_bits(blocks[..., 34:50], 1, GROUP_SIZE) << 2)
    else:
        start = 4 if version == "v1" else 2
        idx = unpack_bits(blocks[..., start:], 4, GROUP_SIZE)
    return idx, norm


# --------------------------------------------------------------------------- tq3_0


def _tq3_quantize(x: np.ndarray, backend: str) -> np.ndarray:
    cents, bounds = _TABLES[("tq3_0", "v1")]
    blocks = _grouped(x, TQ3_BLOCK_SIZE)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ss = _sum_squares(blocks, backend)
        zero = ss < _F32(1e-20)
        n = np.sqrt(ss)
        rms = n / np.sqrt(_F32(TQ3_BLOCK_SIZE))
        inv = _F32(1.0) / rms
        v = fwht(blocks * inv[..., None] * TQ3_SIGNS)
        idx = _index_ties_down(v, bounds)
        recon_vec = fwht(cents[idx]) * TQ3_SIGNS
        recon = np.sqrt(_sum_squares(recon_vec, backend))
        d = np.where(recon > _F32(1e-10), n / recon, _F32(0.0)).astype(_F32)
    idx = np.where(zero[..., None], np.uint8(0), idx).astype(np.uint8)
    d = np.where(zero, _F32(0.0), d)
    out = np.concatenate((_f16_bytes(d), pack_bits(idx, 3)), axis=-1)
    return out.reshape(x.shape[:-1] + (-1,))


# --------------------------------------------------------------------------- public API


def quantize_row(x, kind: str, *, version: str = "v3", backend: str = "cpu") -> np.ndarray:
    """Quantize rows (..., n) -> uint8 (..., n/block_values·block_bytes), the C ``quantize_row_*_ref``.

    ``backend="cpu"`` (default) is the C reference, verified byte for byte against the golden
    vectors (Metal's set_rows uses the same order). Two models of other builds, not verified
    against their output:

    * ``"cuda"``: TheTom's CUDA set_rows kernels: warp-tree sums of squares and, for v1
      turbo4, the CUDA threshold literals. The kernels are built with ``-use_fast_math``
      (approximate sqrt and division, flush-to-zero), which is not emulated. Not for tq3_0.
    * ``"cpu_fma"``: the C reference compiled with FMA contraction (Apple clang's default
      on arm64): each ``s += v*v`` becomes one fused multiply-add.
    """
    kind, version = _check_kind(kind, version, backend)
    arr = _as_rows(x, kind)
    if kind == "tq3_0":
        if backend == "cuda":
            raise ValueError("backend: tq3_0 has no CUDA model; expected 'cpu' or 'cpu_fma', got 'cuda'")
        return _tq3_quantize(arr, backend)
    return _turbo_quantize(arr, kind, version, backend)


def _as_blocks(blocks, kind: str, version: str) -> tuple[np.ndarray, int]:
    arr = np.asarray(bytearray(blocks) if isinstance(blocks, (bytes, bytearray)) else blocks)
    if arr.dtype != np.uint8:
        raise ValueError(f"blocks: expected uint8 bytes, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("blocks: expected an array of shape (..., nbytes), got a scalar")
    size = BLOCK_BYTES[(kind, version)]
    n = arr.shape[-1]
    if n == 0 or n % size:
        raise ValueError(
            f"blocks: expected a positive multiple of {size} bytes per row for {kind} {version}, "
            f"got {n} (truncated or wrong kind/version)"
        )
    return arr.reshape(arr.shape[:-1] + (n // size, size)), n // size


def dequantize_row(blocks, kind: str, *, version: str = "v3") -> np.ndarray:
    """Dequantize rows of blocks -> float32 (..., n), the C ``dequantize_row_*``.

    turbo kinds return **rotated-domain** values ``C[idx]·fp32(norm)`` (apply
    :func:`rotate_inverse` for the original domain); tq3_0 returns the original domain.
    """
    kind, version = _check_kind(kind, version)
    arr, nblocks = _as_blocks(blocks, kind, version)
    cents = centroids(kind, version)
    if kind == "tq3_0":
        d = arr[..., 0:2].copy().view("<f2")[..., 0].astype(_F32)
        idx = unpack_bits(arr[..., 2:14], 3, TQ3_BLOCK_SIZE)
        with np.errstate(over="ignore", invalid="ignore"):
            y = (fwht(cents[idx]) * TQ3_SIGNS) * d[..., None]
        return y.reshape(arr.shape[:-2] + (nblocks * TQ3_BLOCK_SIZE,)).astype(_F32)
    idx, norm = _turbo_unpack(arr, kind, version)
    with np.errstate(over="ignore", invalid="ignore"):
        y = cents[idx] * norm[..., None]
    return y.reshape(arr.shape[:-2] + (nblocks * GROUP_SIZE,)).astype(_F32)


def quantize_indices(x, kind: str, *, version: str = "v3", backend: str = "cpu") -> np.ndarray:
    """The unpacked indices :func:`quantize_row` stores, uint8 (..., n) (for tests and tools)."""
    kind, version = _check_kind(kind, version, backend)
    arr = _as_rows(x, kind)
    blocks = quantize_row(arr, kind, version=version, backend=backend)
    b, _ = _as_blocks(blocks, kind, version)
    if kind == "tq3_0":
        idx = unpack_bits(b[..., 2:14], 3, TQ3_BLOCK_SIZE)
    else:
        idx, _ = _turbo_unpack(b, kind, version)
    return idx.reshape(arr.shape)


def block_norms(blocks, kind: str, *, version: str = "v3") -> np.ndarray:
    """The stored fp16 norm / d of every block, as float16 (..., nblocks)."""
    kind, version = _check_kind(kind, version)
    arr, _ = _as_blocks(blocks, kind, version)
    return arr[..., 0:2].copy().view("<f2")[..., 0]
