"""The numba quantize kernels read float16, float64 and strided rows directly (converted tile
by tile): the codes are bit-identical to those of the same values as C-contiguous float32."""

from __future__ import annotations

import numpy as np
import pytest

import tqref
from tqref.backends.numba_cpu import NumbaBackend

from _numba_support import mse_plan, prod_plan

NB = NumbaBackend()


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["mse", "prod"])
def test_every_float16_value(kind):
    """All 63,488 finite float16 bit patterns (subnormals, ±0 and extremes included), and
    ±inf and NaN rows, convert exactly as numpy's float16 -> float32 cast."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    finite = values[np.isfinite(values)]
    rows = np.resize(finite, (len(finite) // 16 + 1) * 16).reshape(-1, 16)
    rows = np.concatenate([rows, np.full((1, 16), np.inf, np.float16), np.full((1, 16), np.nan, np.float16)])
    plan = prod_plan(16, 3, 7) if kind == "prod" else mse_plan(16, 3, 7)
    fn = NB.prod_quantize if kind == "prod" else NB.mse_quantize
    got, want = fn(rows, plan), fn(rows.astype(np.float32), plan)
    _same([g[:-2] for g in got], [w[:-2] for w in want])
    assert np.isinf(got[1][-2]) and np.isnan(got[1][-1])  # reported by the callers from the norms


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["mse", "prod"])
def test_float64_and_strided_rows(dtype, kind):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((70, 2 * 40)) * 3).astype(dtype)[:, ::2]  # strided rows, 2.5+ tiles
    plan = prod_plan(40, 4, 2) if kind == "prod" else mse_plan(40, 2, 2)
    fn = NB.prod_quantize if kind == "prod" else NB.mse_quantize
    _same(fn(x, plan), fn(np.ascontiguousarray(x, dtype=np.float32), plan))


def test_public_quantizer_any_dtype_matches_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 33, 64))
    q = tqref.TurboQuantMSE(64, 3, backend="numba")
    want = q.quantize(x.astype(np.float32))
    for xx in (x, x.astype(np.float16).astype(np.float64), np.asfortranarray(x)):
        got = q.quantize(xx)
        ref = q.quantize(np.ascontiguousarray(xx, dtype=np.float32))
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_array_equal(got.norms, ref.norms)
    np.testing.assert_array_equal(q.quantize(x).indices, want.indices)
    with pytest.raises(ValueError, match=r"x: expected values within float32 range, got an overflow in row \(1, 2\)"):
        bad = x.copy()
        bad[1, 2, 5] = 1e300
        q.quantize(bad)
