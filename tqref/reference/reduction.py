"""Written-order float32 reductions (docs/compatibility.md "Reductions").

Every sum whose result feeds a quantization decision (a vector norm, a residual norm, a QJL
projection, a Haar rotation) is computed in this one order, so that NumPy, Numba, CUDA and
any port produce the same float32 bits:

1. **Lanes.** 32 lanes; lane ``l`` sums the products ``p_j`` for ``j = l, l+32, l+64, ...``
   in increasing ``j``, starting from the first term (missing terms past the end count as
   ``+0.0``). Each product ``a_j * b_j`` is rounded to float32 before it is added (no FMA).
2. **Butterfly.** ``s[l] += s[l + 16]`` for ``l < 16``, then offsets 8, 4, 2, 1; the result
   is ``s[0]``. This is a warp shuffle-down tree on a GPU.

NumPy realisation: pad the last axis to a multiple of 32 with zeros, reshape to
(..., d/32, 32), take a *sequential* running sum over the chunk axis (``np.add.accumulate``,
which is defined as a left fold), then halve the lane axis five times.

Worked example (d = 3, lanes 3..31 are zero)::

    a = [1, 2, 3]  ->  lanes s = [1, 2, 3, 0, ...]
    offset 16: unchanged; 8: unchanged; 4: unchanged; 2: s0 = 1 + 3 = 4; 1: s0 = 4 + 2 = 6
"""

from __future__ import annotations

import numpy as np

LANES = 32
_F32 = np.float32


def _lane_sums(products: np.ndarray) -> np.ndarray:
    """Per-lane sums (..., 32) of float32 ``products`` (..., d) in the written order."""
    d = products.shape[-1]
    pad = (-d) % LANES
    if pad:
        widths = [(0, 0)] * (products.ndim - 1) + [(0, pad)]
        products = np.pad(products, widths)
    chunks = products.reshape(products.shape[:-1] + ((d + pad) // LANES, LANES))
    if chunks.shape[-2] == 1:
        return chunks[..., 0, :]
    return np.add.accumulate(chunks, axis=-2, dtype=_F32)[..., -1, :]


def _butterfly(lanes: np.ndarray) -> np.ndarray:
    """Fold 32 lane sums (..., 32) to one (...,) with offsets 16, 8, 4, 2, 1."""
    width = LANES
    while width > 1:
        width //= 2
        lanes = lanes[..., :width] + lanes[..., width : 2 * width]
    return lanes[..., 0]


def ordered_sum(values: np.ndarray) -> np.ndarray:
    """Sum float32 ``values`` (..., d) over the last axis in the written order -> (...,)."""
    return _butterfly(_lane_sums(np.asarray(values, dtype=_F32)))


def ordered_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product over the last axis (broadcasting), float32, written order -> (...,)."""
    products = np.multiply(a, b, dtype=_F32)
    return ordered_sum(products)


def ordered_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis: ``sqrt(ordered_sum(x * x))`` (float32, rounded once).

    No overflow protection here; see :func:`tqref.reference.mse.split_norm` for the
    scale-safe form used on user input.
    """
    x = np.asarray(x, dtype=_F32)
    return np.sqrt(ordered_dot(x, x))


def ordered_matvec(matrix: np.ndarray, x: np.ndarray, *, block_elements: int = 1 << 20) -> np.ndarray:
    """``y[..., i] = ordered_dot(matrix[i, :], x[..., :])`` for float32 matrix (m, d), x (..., d).

    Returns float32 (..., m). The lanes are accumulated chunk by chunk of 32 columns
    (``acc += M[:, chunk] * x[chunk]`` — the product is rounded, then added, exactly the
    written order) over blocks of vectors sized so the (block, m, 32) accumulator holds
    about ``block_elements`` floats.
    """
    matrix = np.asarray(matrix, dtype=_F32)
    x = np.asarray(x, dtype=_F32)
    m, d = matrix.shape
    lead = x.shape[:-1]
    pad = (-d) % LANES
    chunks = (d + pad) // LANES
    mat = np.pad(matrix, ((0, 0), (0, pad))).reshape(m, chunks, LANES)
    flat = np.pad(x.reshape(-1, d), ((0, 0), (0, pad))).reshape(-1, chunks, LANES)
    out = np.empty((flat.shape[0], m), dtype=_F32)
    block = max(1, block_elements // (m * LANES))
    for start in range(0, flat.shape[0], block):
        xb = flat[start : start + block]
        acc = mat[None, :, 0, :] * xb[:, None, 0, :]
        for c in range(1, chunks):
            acc += mat[None, :, c, :] * xb[:, None, c, :]
        out[start : start + block] = _butterfly(acc)
    return out.reshape(lead + (m,))
